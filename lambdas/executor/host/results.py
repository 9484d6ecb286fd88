"""Whatever happened to a run, as an `ExecutorResponse` dict (lambdas/shared/models.py).

The worker's cell arrives validated and stream-capped (frames.py); here it meets what the
parent saw itself: the output the worker wrote straight to its fds, a timeout, a death (with
what the output mirror kept), and the result-size cap. It never unpickles.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from pydantic import ValidationError

from lambdas.executor import protocol
from lambdas.executor.host import frames
from lambdas.executor.host.channel import (
    PREPARE_BUDGET_S,
    CappedBuffer,
    Outcome,
    OutcomeKind,
    Phase,
)
from lambdas.shared.models import ExecutorInvocation

# A worker killed by how memory exhaustion kills (the OOM killer's SIGKILL, C++'s abort on a
# failed allocation) with this much of its limit resident ran out of memory; any other death
# is reported by its signal, whatever it had allocated before.
NEAR_MEMORY_LIMIT_FRACTION = 0.75
OUT_OF_MEMORY_SIGNALS = frozenset({signal.SIGKILL, signal.SIGABRT})
# How much larger raw output can get in the response's JSON: a byte can become six (`\u0001`)
# and stream text is there twice (the stream and its output). Output that could outgrow the
# result cap is measured exactly (Lambda refuses a response over 6 MB).
MAX_JSON_GROWTH = 12
DROPPED_OUTPUT = {"text/plain": "<output dropped: the result size limit was reached>"}
WORKER_CRASHED = "WorkerCrashed"
SESSION_COMES_BACK = "the session's variables come back from its last saved state on the next run"
# Contract fields only the API function fills in (links to what it stores whole).
API_FILLED_RESULT_FIELDS: dict[str, Any] = {
    "stdout_url": None,
    "stderr_url": None,
    "outputs_url": None,
}


def respond(
    inv: ExecutorInvocation,
    mirror_fd: int,
    outcome: Outcome,
    started: float,
    cold_start: bool,
) -> dict[str, Any]:
    spec = inv.limits
    final = outcome.final
    cell = (final.cell if final is not None else None) or outcome.cell
    warnings: list[str] = []
    state_report = frames.StateReport()
    files: list[frames.ReportedFile] = []
    restored = False
    if outcome.kind == OutcomeKind.RESULT and final is not None:
        state_report = final.state
        files = final.files
        restored = final.restored
        warnings.extend(final.late_warnings)
    if cell is None and outcome.partial is not None:
        cell = outcome.partial
        outcome.partial = None
        partial = True
    elif cell is None and outcome.kind in (OutcomeKind.CRASHED, OutcomeKind.TIMEOUT):
        # Died (or stuck in C code) before answering: what it printed is in the mirror.
        cell = mirrored_cell(mirror_fd, spec.stream_bytes)
        partial = cell is not None
    else:
        partial = False
    result = (cell or frames.Cell()).model_dump()
    in_session = inv.session_id is not None
    if outcome.kind == OutcomeKind.TIMEOUT:
        if outcome.phase == Phase.PREPARE:
            message = (
                "preparing the run (session state, files, packages) did not finish in time "
                f"(its own budget is {PREPARE_BUDGET_S:.0f} s); the code did not run"
            )
            _fail(result, "timeout", frames.CellError(name="TimeoutError", value=message))
        elif cell is None or partial:
            _fail(
                result,
                "timeout",
                frames.CellError(
                    name="TimeoutError",
                    value=f"execution exceeded the time limit of {inv.timeout_ms} ms",
                ),
            )
        else:
            warnings.append("the session state and files were not saved: saving timed out")
        if in_session:
            warnings.append(f"the session's worker was stopped; {SESSION_COMES_BACK}")
    elif outcome.kind in (OutcomeKind.CRASHED, OutcomeKind.INVALID):
        if cell is None or partial:
            if outcome.kind == OutcomeKind.INVALID:
                detail = f"the worker's answer was not valid ({outcome.detail}); it was stopped"
                if in_session:
                    detail += f"; {SESSION_COMES_BACK}"
            else:
                detail = "the worker exited unexpectedly"  # explain_crash says how
            _fail(result, "error", frames.CellError(name=WORKER_CRASHED, value=detail))
        elif in_session:
            warnings.append("the session state and files were not saved: the worker died")
    merge_fd_output(result, "stdout", outcome.out, spec.stream_bytes)
    merge_fd_output(result, "stderr", outcome.err, spec.stream_bytes)
    result["warnings"] = result["warnings"] + warnings
    fd_bytes = sum(len(buffer.data) for buffer in (outcome.out, outcome.err) if buffer)
    if (outcome.frame_bytes + fd_bytes) * MAX_JSON_GROWTH > spec.result_bytes:
        fit_result(result, spec.result_bytes)
    status = result["status"]
    result.update(
        {
            "execution_id": inv.execution_id,
            "session_id": inv.session_id,
            "success": status == "ok",
            "execution_count": inv.execution_count if inv.session_id is not None else None,
            "files": [item.model_dump() for item in files],
            "duration_ms": int((time.perf_counter() - started) * 1000),
            **API_FILLED_RESULT_FIELDS,
        }
    )
    return {
        "result": result,
        "state": state_report.model_dump(),
        "cold_start": cold_start,
        "worker_restored": restored,
        "diagnostics": None,
    }


def _fail(result: dict[str, Any], status: str, error: frames.CellError) -> None:
    result["status"] = status
    result["error"] = error.model_dump()
    result["outputs"].append(frames.error_output(error))


def mirrored_cell(mirror_fd: int, stream_cap: int) -> frames.Cell | None:
    """The streams a dead worker printed before dying, as a cell (None if it printed nothing),
    capped like anything else the worker produced."""
    if mirror_fd < 0:
        return None
    printed = protocol.OutputMirror.read(mirror_fd)
    if not printed:
        return None
    cell = frames.Cell().model_dump()
    for name, text in printed:
        append_stream(cell, name, text)
    for name in ("stdout", "stderr"):
        keep_stream_within(cell, name, stream_cap)
    return frames.Cell.model_validate(cell, context={frames.STREAM_CAP: stream_cap})


def merge_fd_output(
    result: dict[str, Any], name: str, buffer: CappedBuffer | None, cap: int
) -> None:
    """Append what the worker wrote straight to its fd (C code, subprocesses) to the stream,
    then keep the merged stream within the cap by its head and tail (`keep_stream_within`)."""
    if buffer is None or (not buffer.data and not buffer.truncated):
        return
    text = buffer.text()
    if buffer.truncated:
        result[f"{name}_truncated"] = True
    if text:
        append_stream(result, name, text)
        keep_stream_within(result, name, cap)


def keep_stream_within(cell: dict[str, Any], name: str, cap: int) -> None:
    """A stream over `cap` bytes keeps its head and its tail (protocol.keep_head_and_tail), and
    so do its outputs: the same rule over the concatenation of the `name` stream outputs, the
    marker in the output where the head ends, displays untouched, emptied outputs dropped."""
    text, cut = protocol.keep_head_and_tail(cell[name], cap)
    if not cut:
        return
    cell[name] = text
    cell[f"{name}_truncated"] = True
    keep_outputs_within(cell["outputs"], name, cap)


def keep_outputs_within(outputs: list[dict[str, Any]], name: str, cap: int) -> None:
    streams = [
        output
        for output in outputs
        if output.get("output_type") == "stream" and output.get("name") == name
    ]
    texts = [str(output.get("text", "")) for output in streams]
    whole = "".join(texts)
    cut = protocol.head_and_tail_cut(whole, cap)
    if cut is None:
        return
    head_end, tail_chars, omitted = cut
    tail_start = len(whole) - tail_chars
    start = 0
    marked = not tail_chars  # a cap too small for a marker keeps the head alone
    emptied = []
    for output, text in zip(streams, texts, strict=True):
        end = start + len(text)
        kept = whole[start : min(end, head_end)] if start < head_end else ""
        if not marked and head_end <= end:
            kept += protocol.omission_marker(omitted)
            marked = True
        if tail_chars and end > tail_start:
            kept += whole[max(start, tail_start) : end]
        output["text"] = kept
        if not kept:
            emptied.append(output)
        start = end
    for output in emptied:
        outputs.remove(output)


def append_stream(cell: dict[str, Any], name: str, text: str) -> None:
    """Add stream text to a cell: to its stream and to its last output if that is the same
    stream (as Jupyter merges consecutive writes), else as a new stream output."""
    cell[name] += text
    outputs = cell["outputs"]
    last = outputs[-1] if outputs else None
    if last is not None and last.get("output_type") == "stream" and last.get("name") == name:
        last["text"] = str(last.get("text", "")) + text
    else:
        outputs.append({"output_type": "stream", "name": name, "text": text})


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def fit_result(result: dict[str, Any], cap: int) -> None:
    """Trim a result over the size cap (the sync payload limit): drop the largest rich outputs
    first, then shorten the streams. Says so in `warnings`."""
    size = json_size(result)
    if size <= cap:
        return
    result["warnings"].append("outputs were trimmed: the result size limit was reached")
    bundles = [output for output in result["outputs"] if isinstance(output.get("data"), dict)]
    bundles.sort(key=lambda output: json_size(output["data"]), reverse=True)
    for output in bundles:
        saved = json_size(output["data"]) - json_size(DROPPED_OUTPUT)
        if saved < 1024:  # small outputs cost little: the streams go first
            break
        output["data"] = dict(DROPPED_OUTPUT)
        size -= saved
        if size <= cap:
            break
    if result["result"] is not None and json_size(result["result"]) > 1024:
        size -= json_size(result["result"])
        result["result"] = dict(DROPPED_OUTPUT)
    while size > cap:
        excess = size - cap
        for name in ("stdout", "stderr"):
            text = result[name]
            if text:
                text_bytes = protocol.utf8_size(text)
                budget = max(text_bytes - excess, text_bytes // 4) if len(text) > 64 else 0
                result[name] = protocol.keep_head_and_tail(text, budget)[0]
                result[f"{name}_truncated"] = True
            printed = sum(
                protocol.utf8_size(str(output.get("text", "")))
                for output in result["outputs"]
                if output.get("output_type") == "stream" and output.get("name") == name
            )
            keep_outputs_within(result["outputs"], name, printed // 4)
        new_size = json_size(result)
        if new_size >= size:  # nothing left to trim
            break
        size = new_size


def _death(status: list[Any] | None) -> tuple[str, int | None]:
    """How the worker ended, in words, and the signal that ended it (None: it exited)."""
    if not status:
        return "the worker exited unexpectedly", None
    kind, code = status[0], status[1]
    if kind == "signal" and isinstance(code, int):
        try:
            name = signal.Signals(code).name
        except ValueError:
            name = f"signal {code}"
        if code == signal.SIGXCPU:
            name += " (its CPU time limit)"
        return f"the worker died with {name}", code
    return f"the worker exited with code {code}", None


def explain_crash(
    response: dict[str, Any], status: list[Any] | None, memory_mb: int, hung_up: bool = False
) -> None:
    """Say how the worker died (`status` as the zygote reaped it: how, code, peak resident
    KiB). Only a death the way memory exhaustion kills, near the limit, is `memory_exceeded`
    (a MemoryError the cell raised is reported by the worker itself); anything else is a
    `WorkerCrashed` named by its signal or exit code. `hung_up`: it was alive but had closed
    its channel, so the status is the parent's own kill and says nothing."""
    result = response["result"]
    error = result.get("error")
    if error is None or error.get("name") != WORKER_CRASHED:
        return
    peak_kb = status[2] if status and len(status) > 2 and isinstance(status[2], int) else 0
    near_limit = peak_kb * 1024 >= NEAR_MEMORY_LIMIT_FRACTION * memory_mb * 1024 * 1024
    death, killed_by = _death(status)
    if hung_up:
        message = "the worker closed its channel to the executor without answering; it was stopped"
    elif near_limit and killed_by in OUT_OF_MEMORY_SIGNALS:
        result["status"] = "memory_exceeded"
        error["name"] = "MemoryError"
        message = (
            f"the cell ran out of memory: {death} near its memory limit ({memory_mb} MB "
            f"address space, {peak_kb // 1024} MB resident at the peak)"
        )
    else:
        message = death
        if near_limit:
            message += f" ({peak_kb // 1024} MB resident, near its {memory_mb} MB limit)"
    if result.get("session_id") is not None:
        message += f"; {SESSION_COMES_BACK}"
    error["value"] = message
    for output in result["outputs"]:
        if output.get("output_type") == "error" and output.get("ename") == WORKER_CRASHED:
            output["ename"] = error["name"]
            output["evalue"] = error["value"]


def failure_response(
    execution_id: str, session_id: str | None, name: str, message: str, started: float
) -> dict[str, Any]:
    """A response for a run that never reached a worker: one error, nothing saved."""
    cell = frames.Cell.failed(name, message)
    duration_ms = int((time.perf_counter() - started) * 1000)
    return _response_without_run(cell, execution_id, session_id, False, duration_ms, None)


def diagnostics_response(inv: ExecutorInvocation, report: dict[str, Any]) -> dict[str, Any]:
    """The answer to a diagnostics invocation: the protections report, nothing run."""
    return _response_without_run(frames.Cell(), inv.execution_id, inv.session_id, True, 0, report)


def _response_without_run(
    cell: frames.Cell,
    execution_id: str,
    session_id: str | None,
    success: bool,
    duration_ms: int,
    diagnostics: dict[str, Any] | None,
) -> dict[str, Any]:
    result = cell.model_dump()
    result.update(
        {
            "execution_id": execution_id,
            "session_id": session_id,
            "success": success,
            "execution_count": None,
            "files": [],
            "duration_ms": duration_ms,
            **API_FILLED_RESULT_FIELDS,
        }
    )
    return {
        "result": result,
        "state": frames.StateReport().model_dump(),
        "cold_start": False,
        "worker_restored": False,
        "diagnostics": diagnostics,
    }


def invalid_invocation(event: Any, exc: ValidationError, started: float) -> dict[str, Any]:
    execution_id = "unknown"
    session_id = None
    if isinstance(event, dict):
        if isinstance(event.get("execution_id"), str):
            execution_id = event["execution_id"]
        if isinstance(event.get("session_id"), str):
            session_id = event["session_id"]
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'payload'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)[:10]
    )
    return failure_response(
        execution_id,
        session_id,
        "InvalidInvocation",
        f"invalid executor invocation: {problems}",
        started,
    )
