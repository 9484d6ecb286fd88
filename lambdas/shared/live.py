"""A running execution's output as numbered chunks in S3: what the executor's trusted parent
publishes (lambdas/executor/host/live.py) and the API folds back into `stdout`, `stderr` and
`outputs` for `GET /v1/executions/{id}` (lambdas/api/service/live.py).

Chunks live under the invocation's `LiveChannel.output.key_prefix` (`executions/<id>/out/`).
Their names sort newest first (`chunk_name`), so one short listing finds the newest, and say
whether a chunk is a *base* (all output so far) or a *delta* (records since the chunk before).
Every `LIVE_BASE_EVERY`-th chunk is a base, and so are the last one and the first one after a
failed upload, so a reader needs the newest base and the deltas after it: at most
`LIVE_BASE_EVERY` objects, each written once.

Records, in the order the cell produced them: `["stdout", text]`, `["stderr", text]`,
`["display", nbformat display_data output]`, `["clear"]` (IPython's clear_output). Folding
them follows the finished cell's rules (lambdas/executor/sandbox/kernel.py `CellCapture`):
consecutive writes to one stream merge into one stream output, a display ends that, streams keep
their first `stream_cap` bytes, rich outputs share `display_cap` bytes. Chunks are JSON:

    base:  {"v", "seq", "base": true, "final", "usage", "stdout", "stderr", "stdout_truncated",
            "stderr_truncated", "outputs"}
    delta: {"v", "seq", "base": false, "final", "usage", "records"}

Everything read back is validated leniently: what does not fit the shapes above is skipped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lambdas.shared import limits

CHUNK_VERSION = 1
MAX_SEQUENCE = 9_999_999
STREAMS = ("stdout", "stderr")
_CHUNK_NAME = re.compile(r"^(\d{7})-([bd])\.json$")


def chunk_name(seq: int, base: bool) -> str:
    """The object name (under the channel's prefix) of chunk `seq`: newer chunks sort first."""
    return f"{MAX_SEQUENCE - seq:07d}-{'b' if base else 'd'}.json"


def parse_chunk_name(name: str) -> tuple[int, bool] | None:
    """(seq, is_base) of a chunk name, or None for anything else."""
    match = _CHUNK_NAME.match(name)
    if match is None:
        return None
    return MAX_SEQUENCE - int(match.group(1)), match.group(2) == "b"


def chunks_to_read(names_newest_first: list[str]) -> list[str]:
    """Of a newest-first listing, the names to read: the newest base and every delta after it,
    oldest first; [] when the listing holds no base (nothing can be shown from deltas alone)."""
    wanted: list[str] = []
    for name in names_newest_first:
        parsed = parse_chunk_name(name)
        if parsed is None:
            continue
        wanted.append(name)
        if parsed[1]:
            return list(reversed(wanted))
    return []


def _fit_utf8(text: str, budget: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `budget` bytes."""
    if budget <= 0:
        return ""
    encoded = text[:budget].encode("utf-8", "surrogatepass")
    if len(encoded) <= budget:
        return text[:budget]
    return encoded[:budget].decode("utf-8", "ignore")


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _display_or_none(value: Any) -> dict[str, Any] | None:
    if (
        isinstance(value, dict)
        and value.get("output_type") == "display_data"
        and isinstance(value.get("data"), dict)
    ):
        metadata = value.get("metadata")
        return {
            "output_type": "display_data",
            "data": value["data"],
            "metadata": metadata if isinstance(metadata, dict) else {},
        }
    return None


class LiveOutput:
    """Output records folded into a cell's streams and outputs, with the caps applied."""

    def __init__(self, stream_cap: int, display_cap: int = limits.MAX_LIVE_DISPLAY_BYTES) -> None:
        self._parts: dict[str, list[str]] = {name: [] for name in STREAMS}
        self._room = dict.fromkeys(STREAMS, stream_cap)
        self.truncated = dict.fromkeys(STREAMS, False)
        self._display_room = display_cap
        # Stream outputs keep their text as a list of parts while they may still grow.
        self._outputs: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None

    # -- folding ---------------------------------------------------------------------------------

    def add(self, record: Any) -> list[Any] | None:
        """Fold one record; returns the record as kept (text cut to the cap), None if dropped."""
        if not isinstance(record, list) or not record:
            return None
        kind = record[0]
        if kind in STREAMS and len(record) == 2 and isinstance(record[1], str):
            kept = self.add_stream(kind, record[1])
            return [kind, kept] if kept else None
        if kind == "display" and len(record) == 2:
            output = self.add_display(record[1])
            return ["display", output] if output is not None else None
        if kind == "clear":
            self.clear()
            return ["clear"]
        return None

    def add_stream(self, name: str, text: str) -> str:
        text = self._take(name, text)
        if text:
            self._parts[name].append(text)
            self._add_stream_output(name, text)
        return text

    def _take(self, name: str, text: str) -> str:
        """`text` cut to what is left of the stream's cap, which it then uses up."""
        room = self._room[name]
        if len(text) * 4 > room:  # cheap bound first: at most 4 UTF-8 bytes per character
            fitted = _fit_utf8(text, room)
            if len(fitted) < len(text):
                self.truncated[name] = True
            text = fitted
        if text:
            self._room[name] = room - _utf8_size(text)
        return text

    def _add_stream_output(self, name: str, text: str) -> None:
        current = self._open
        if current is not None and current["name"] == name:
            current["text"].append(text)
        else:
            current = {"output_type": "stream", "name": name, "text": [text]}
            self._outputs.append(current)
            self._open = current

    def add_display(self, value: Any) -> dict[str, Any] | None:
        output = _display_or_none(value)
        if output is None:
            return None
        size = len(json.dumps(output["data"], separators=(",", ":")))
        if size > self._display_room:
            return None
        self._display_room -= size
        self._open = None
        self._outputs.append(output)
        return output

    def clear(self) -> None:
        self._outputs.clear()
        self._open = None

    # -- reading ---------------------------------------------------------------------------------

    def outputs(self) -> list[dict[str, Any]]:
        return [
            dict(output, text="".join(output["text"]))
            if output["output_type"] == "stream"
            else output
            for output in self._outputs
        ]

    def fields(self) -> dict[str, Any]:
        """The ExecutionResult fields this output fills."""
        return {
            "stdout": "".join(self._parts["stdout"]),
            "stderr": "".join(self._parts["stderr"]),
            "stdout_truncated": self.truncated["stdout"],
            "stderr_truncated": self.truncated["stderr"],
            "outputs": self.outputs(),
        }

    @classmethod
    def from_fields(
        cls, data: Any, stream_cap: int, display_cap: int = limits.MAX_LIVE_DISPLAY_BYTES
    ) -> LiveOutput:
        """A base chunk's fields folded again under the caps (the reader trusts no sizes)."""
        live = cls(stream_cap, display_cap)
        if not isinstance(data, dict):
            return live
        for name in STREAMS:
            text = data.get(name)
            if isinstance(text, str):
                live._parts[name].append(live._take(name, text))
            if data.get(f"{name}_truncated") is True:
                live.truncated[name] = True
                live._room[name] = 0  # a truncated stream takes nothing more, as in the cell
        # The outputs show what was printed since the last clear_output: a part of the streams,
        # capped the same way.
        output_room = dict.fromkeys(STREAMS, stream_cap)
        outputs = data.get("outputs")
        for output in outputs if isinstance(outputs, list) else ():
            if not isinstance(output, dict):
                continue
            stream, text = output.get("name"), output.get("text")
            if output.get("output_type") != "stream":
                live.add_display(output)
            elif isinstance(stream, str) and stream in STREAMS and isinstance(text, str):
                shown = _fit_utf8(text, output_room[stream])
                output_room[stream] -= _utf8_size(shown)
                if shown:
                    live._add_stream_output(stream, shown)
        return live


def encode_chunk(document: dict[str, Any]) -> bytes:
    try:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # lone surrogates (user output): escape them instead
        return json.dumps(document, separators=(",", ":")).encode()


def decode_chunk(data: bytes) -> dict[str, Any] | None:
    """A chunk as its JSON document, or None if it is not one of ours."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("v") != CHUNK_VERSION:
        return None
    return document


def fold(
    chunks: list[dict[str, Any]],
    stream_cap: int = limits.MAX_STREAM_BYTES,
    display_cap: int = limits.MAX_LIVE_DISPLAY_BYTES,
) -> tuple[LiveOutput, dict[str, Any] | None]:
    """Chunks (oldest first: a base, then deltas) folded into one output, and the newest chunk's
    usage figures (None if it had none)."""
    live = LiveOutput(stream_cap, display_cap)
    usage: dict[str, Any] | None = None
    for chunk in chunks:
        if chunk.get("base") is True:
            live = LiveOutput.from_fields(chunk, stream_cap, display_cap)
        else:
            records = chunk.get("records")
            for record in records if isinstance(records, list) else ():
                live.add(record)
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
    return live, usage
