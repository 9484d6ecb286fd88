"""Responses that fit Lambda's 6 MB after API Gateway's proxy encoding (SPEC §3, issue 12).

The API function's proxy result carries the response body as a JSON string inside JSON: each
`"` of user output is 2 bytes in the body and 4 in what Lambda returns, a control character 6
and 7. A response whose final serialized size would pass `limits.API_RESPONSE_BUDGET_BYTES`
keeps the head and tail of its large parts inline and moves the whole of them to S3, linked by
a presigned GET: `stdout_url`, `stderr_url`, `outputs_url` (all outputs, the last expression's
value and the error included) of an ExecutionResult, `metadata.lci.notebook_url` of a notebook.

Pure functions: what to upload is returned, the services upload it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from lambdas.shared.models import ExecutionResult

STREAM_HEAD_CHARS = 16 * 1024
STREAM_TAIL_CHARS = 16 * 1024
# A rich output (image, HTML) larger than this (JSON) stays behind its link.
INLINE_OUTPUT_DATA_BYTES = 64 * 1024
# Once a response is too large, every part larger than this goes behind its link too (so a
# large stdout always reads the same way), then smaller ones until the response fits.
SPILL_PART_MIN_BYTES = 256 * 1024
TRACEBACK_HEAD_LINES = 20
TRACEBACK_TAIL_LINES = 20
TRACEBACK_LINE_CHARS = 2 * 1024  # head and tail of one traceback line, each
STREAMS = ("stdout", "stderr")
OUTPUTS = "outputs"
SPILL_CONTENT_TYPES = {
    "stdout": "text/plain; charset=utf-8",
    "stderr": "text/plain; charset=utf-8",
    OUTPUTS: "application/json",
}


def proxy_response_bytes(document: Any) -> int:
    """Bytes of `document` as the body of a Lambda proxy result, serialized as Lambda does
    (ASCII-escaped JSON, the worst case): the limit applies to this."""
    body = json.dumps(document, separators=(",", ":"))
    return len(json.dumps({"body": body}))


@dataclass(frozen=True)
class Spill:
    """One part of a response that goes to S3 whole: `part` is `stdout`, `stderr` or
    `outputs`; the service stores `data` and links it as `<part>_url`."""

    part: str
    data: bytes

    @property
    def content_type(self) -> str:
        return SPILL_CONTENT_TYPES[self.part]


def fit_result(result: ExecutionResult, budget: int) -> list[Spill]:
    """Shrink `result` in place until its proxy response fits `budget`; return the parts that
    must be stored whole (empty when it fits as it is). Every large part goes (the largest
    first), then smaller ones until it fits."""
    document = result.model_dump(mode="json")
    if proxy_response_bytes(document) <= budget:
        return []
    spills: list[Spill] = []
    sizes = {
        "stdout": proxy_response_bytes(result.stdout),
        "stderr": proxy_response_bytes(result.stderr),
        OUTPUTS: proxy_response_bytes(document[OUTPUTS])
        + proxy_response_bytes(document["result"])
        + proxy_response_bytes(document["error"]),
    }
    fits = False
    for part in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if fits and sizes[part] <= SPILL_PART_MIN_BYTES:
            break
        if part in STREAMS:
            text = getattr(result, part)
            if len(text) <= STREAM_HEAD_CHARS + STREAM_TAIL_CHARS:
                continue  # already as short as its head and tail
            spills.append(Spill(part, text.encode("utf-8", "replace")))
            setattr(result, part, head_and_tail(text, f"{part}_url"))
        else:
            spills.append(Spill(OUTPUTS, json.dumps(document[OUTPUTS]).encode()))
            result.outputs = [trim_output(output) for output in result.outputs]
            if result.result is not None:
                result.result = _trim_bundle(result.result)
            if result.error is not None:
                result.error.value = head_and_tail(result.error.value, "outputs_url")
                result.error.traceback = _trim_lines(result.error.traceback)
        result.warnings.append(
            f"{part} was too large for one response: its head and tail are inline, all of it "
            f"at {part}_url (a link valid for minutes; GET /v1/executions/{{id}} renews it)"
        )
        fits = proxy_response_bytes(result.model_dump(mode="json")) <= budget
    if fits:
        return spills
    # Still too large: a great many small outputs. Keep as many from both ends as fit.
    outputs = result.outputs
    result.outputs = []
    room = budget - proxy_response_bytes(result.model_dump(mode="json")) - 1024
    head, tail = _ends_that_fit([proxy_response_bytes(output) for output in outputs], room)
    marker = {
        "output_type": "stream",
        "name": "stdout",
        "text": f"[... {len(outputs) - head - tail} outputs left out of this response: see "
        "outputs_url ...]\n",
    }
    result.outputs = [*outputs[:head], marker, *outputs[len(outputs) - tail :]]
    return spills


def fit_notebook(notebook: dict[str, Any], budget: int) -> bool:
    """Shrink an nbformat v4 notebook in place to fit `budget`: outputs trimmed like a
    result's, then the cells of its middle left out (head and tail kept, a markdown cell
    saying how many are missing). False when it fits as it is."""
    if proxy_response_bytes(notebook) <= budget:
        return False
    cells = notebook["cells"]
    for cell in cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [trim_output(output) for output in cell.get("outputs", [])]
    if proxy_response_bytes(notebook) <= budget:
        return True
    room = budget - proxy_response_bytes({**notebook, "cells": []}) - 4096
    head, tail = _ends_that_fit([proxy_response_bytes(cell) for cell in cells], room)
    omitted = len(cells) - head - tail
    marker = {
        "cell_type": "markdown",
        "id": "lci-omitted-cells",
        "metadata": {},
        "source": f"*{omitted} cells are not in this response: the whole notebook is at "
        "`metadata.lci.notebook_url`.*",
    }
    notebook["cells"] = [*cells[:head], marker, *cells[len(cells) - tail :]]
    return True


def _ends_that_fit(sizes: list[int], room: int) -> tuple[int, int]:
    """How many items from the head and from the tail fit in `room`, taken alternately."""
    head = tail = 0
    while head + tail < len(sizes):
        index = head if head <= tail else len(sizes) - 1 - tail
        if sizes[index] > room:
            break
        room -= sizes[index]
        if index == head:
            head += 1
        else:
            tail += 1
    return head, tail


def head_and_tail(
    text: str,
    link_field: str,
    head: int = STREAM_HEAD_CHARS,
    tail: int = STREAM_TAIL_CHARS,
) -> str:
    """The head and tail of `text`, joined by a line saying what is left out and where."""
    if len(text) <= head + tail:
        return text
    omitted = len(text) - head - tail
    return (
        f"{text[:head]}\n"
        f"[... {omitted:,} characters left out of this response: all of it is at "
        f"{link_field} ...]\n"
        f"{text[-tail:]}"
    )


def trim_output(output: dict[str, Any]) -> dict[str, Any]:
    """An nbformat output small enough to travel inline (a copy; still valid nbformat)."""
    trimmed = copy.copy(output)
    kind = output.get("output_type")
    if kind == "stream" and isinstance(output.get("text"), str):
        trimmed["text"] = head_and_tail(output["text"], "outputs_url")
    elif kind in ("display_data", "execute_result") and isinstance(output.get("data"), dict):
        trimmed["data"] = _trim_bundle(output["data"])
    elif kind == "error":
        if isinstance(output.get("evalue"), str):
            trimmed["evalue"] = head_and_tail(output["evalue"], "outputs_url")
        if isinstance(output.get("traceback"), list):
            trimmed["traceback"] = _trim_lines(output["traceback"])
    return trimmed


def _trim_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """A mime bundle without its large representations; `text/plain` is kept (shortened)."""
    if proxy_response_bytes(bundle) <= INLINE_OUTPUT_DATA_BYTES:
        return bundle
    text = bundle.get("text/plain")
    plain = head_and_tail(text, "outputs_url") if isinstance(text, str) else ""
    left_out = sorted(mime for mime in bundle if mime != "text/plain")
    note = f"[{', '.join(left_out)} left out of this response: see outputs_url]"
    return {"text/plain": f"{plain}\n{note}" if plain else note}


def _trim_lines(lines: list[Any]) -> list[Any]:
    kept = lines
    if len(lines) > TRACEBACK_HEAD_LINES + TRACEBACK_TAIL_LINES:
        omitted = len(lines) - TRACEBACK_HEAD_LINES - TRACEBACK_TAIL_LINES
        kept = [
            *lines[:TRACEBACK_HEAD_LINES],
            f"[... {omitted} lines left out: see outputs_url ...]",
            *lines[-TRACEBACK_TAIL_LINES:],
        ]
    short = TRACEBACK_LINE_CHARS
    return [
        head_and_tail(line, "outputs_url", short, short) if isinstance(line, str) else line
        for line in kept
    ]
