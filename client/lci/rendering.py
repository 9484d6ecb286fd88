"""What `lci` prints: a run's result (streams, last value, errors, files, saved images), the
`lci doctor` report, tables, and the same documents as JSON with `--json`."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any, TextIO

from lci.models import ExecutionResult
from lci.units import seconds_text, seconds_wording

IMAGE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg"}
TIMEOUT_OPTION = "--timeout"
_CHECK_MARKS = {True: "ok", False: "NO", None: "n/a"}
_MS_SUFFIX = "_ms"


def save_images(result: ExecutionResult, folder: Path) -> dict[int, Path]:
    """Write each displayed image to `folder`; {index in result.outputs: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    saved: dict[int, Path] = {}
    count = 0
    for index, output in enumerate(result.outputs):
        data = output.get("data") or {}
        for mime, suffix in IMAGE_SUFFIXES.items():
            encoded = data.get(mime)
            if not isinstance(encoded, str):
                continue
            try:
                raw = base64.b64decode(encoded)
            except (binascii.Error, ValueError):
                continue
            count += 1
            path = folder / f"{result.execution_id or 'image'}-{count}{suffix}"
            path.write_bytes(raw)
            saved[index] = path
            break
    return saved


def print_result(
    result: ExecutionResult,
    out: TextIO,
    err: TextIO,
    saved: dict[int, Path] | None = None,
    streamed: bool = False,
) -> None:
    """Readable rendering: streams where they belong, the last value, errors and files
    (`streamed`: the streams and displays were printed as they came, by `lci.following`)."""
    saved = saved or {}
    if result.stdout and not streamed:
        out.write(result.stdout if result.stdout.endswith("\n") else result.stdout + "\n")
    if result.stderr and not streamed:
        err.write(result.stderr if result.stderr.endswith("\n") else result.stderr + "\n")
    for index, output in enumerate(result.outputs):
        data = output.get("data") or {}
        if index in saved:
            err.write(f"[image saved: {saved[index]}]\n")
        elif output.get("output_type") == "display_data" and not streamed:
            kinds = ", ".join(sorted(k for k in data if k != "text/plain"))
            err.write(f"[display: {kinds or 'text/plain'}]\n")
    if result.text is not None:
        out.write(result.text + "\n")
    for flag, name in ((result.stdout_truncated, "stdout"), (result.stderr_truncated, "stderr")):
        if flag:
            err.write(f"[{name} truncated]\n")
    if result.error is not None:
        trace = result.error.traceback or [f"{result.error.name}: {result.error.value}"]
        err.write(seconds_wording("\n".join(trace), TIMEOUT_OPTION) + "\n")
    elif not result.success:
        err.write(f"[{result.status}]\n")
    for file in result.files:
        err.write(f"[file: {file.path} ({file.size} B)]\n")
    for warning in result.warnings:
        err.write(f"[warning: {warning}]\n")


def emit(as_json: bool, out: TextIO, document: Any, text: str) -> None:
    if as_json:
        print_json(document, out)
    else:
        out.write(text + "\n")


def print_json(document: Any, out: TextIO) -> None:
    out.write(json.dumps(document, indent=2, default=str) + "\n")


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def doctor_text(endpoint: str, report: dict[str, Any]) -> str:
    """`lci doctor`: one line per protection of the executor, then how the API is set up
    (durations in seconds)."""
    lines = [f"endpoint  {endpoint}"]
    executor = report.get("executor")
    if not executor:
        lines.append(f"executor  no report: {report.get('executor_error') or 'unknown error'}")
    else:
        where = "Lambda" if executor.get("on_lambda") else "not Lambda"
        took = executor.get("duration_ms")
        lines.append(
            f"executor  {where}, kernel {executor.get('kernel')}, python {executor.get('python')},"
            f" uid {executor.get('uid')}, checked {executor.get('checked_at')}"
            + (f" in {seconds_text(took)}" if isinstance(took, int | float) else "")
        )
        checks = executor.get("checks") or {}
        for name, check in checks.items():
            mark = _CHECK_MARKS.get(check.get("ok"), "?")
            lines.append(f"  {mark:<4}{name:<22}{check.get('detail', '')}")
        failed = [name for name, check in checks.items() if check.get("ok") is False]
        lines.append(
            f"  {len(failed)} protection(s) did not take effect: {', '.join(failed)}"
            if failed
            else "  every protection that applies here holds"
        )
    for name, value in (report.get("api") or {}).items():
        if name.endswith(_MS_SUFFIX) and isinstance(value, int | float):
            name, value = name.removesuffix(_MS_SUFFIX), seconds_text(value)
        lines.append(f"api       {name} = {value}")
    return "\n".join(lines)
