"""The capture of one cell's outputs in the sandboxed worker (the shell is `kernel.py`).

Every cell gets a fresh `CellCapture` that collects nbformat v4 outputs in order: stream text
(capped, keeping head and tail), display data, the execute_result and the error; the
display publisher and display hook the shell is built with send to it through `SINK`.
Nothing here talks to the parent.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections import deque
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher

from lambdas.executor import protocol
from lambdas.executor.sandbox import mime

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    return _ANSI_ESCAPE.sub("", text)


def collapse_repeats(entries: list[str], keep: int = 3) -> list[str]:
    """Runs of identical traceback entries (deep recursion) shortened to `keep` plus a note."""
    collapsed: list[str] = []
    index = 0
    while index < len(entries):
        end = index
        while end < len(entries) and entries[end] == entries[index]:
            end += 1
        run = end - index
        collapsed.extend(entries[index : index + min(run, keep)])
        if run > keep:
            collapsed.append(f"[... the previous entry repeated {run - keep} more times]")
        index = end
    return collapsed


# What an output costs in the answer beyond its data (the JSON of the output dict): counted so
# that a loop of a million tiny display() calls runs out of room, not the answer's frame.
OUTPUT_OVERHEAD_BYTES = 100
MAX_CELL_WARNINGS = 50  # distinct warnings of one cell; a loop repeats the same one


def mime_bundle_size(data: dict[str, Any]) -> int:
    return sum(
        len(value) if isinstance(value, str) else len(repr(value)) for value in data.values()
    )


# Tail text is kept in groups of about this many bytes: whole groups leave the tail as newer
# text arrives, so a flood of tiny writes costs an append each, never a copy of the tail.
TAIL_GROUP_BYTES = 4096


class CellCapture:
    """Outputs of one cell, in order, with per-stream byte caps and an overall size budget.

    A stream over its cap keeps its head and its tail (protocol.head_and_tail_bytes): the first
    bytes are kept as they come, later ones pass through a bounded tail (whole groups of writes
    leave it as newer ones arrive), and the stream reads head + omission marker + tail. The
    outputs follow the same rule over the concatenation of that stream's text: the marker
    sits where the head ends, stream text that fell in the omitted middle is gone (a stream
    output left empty with it), displays keep their place. So `stdout` is the concatenation of
    the stdout outputs, as long as no clear_output() intervened."""

    def __init__(self, stream_bytes: int, result_bytes: int) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.stream_parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        head_bytes, self._tail_cap = protocol.head_and_tail_bytes(stream_bytes)
        self.stream_room = {"stdout": head_bytes, "stderr": head_bytes}
        self.truncated = {"stdout": False, "stderr": False}
        self.display_room = result_bytes - 2 * stream_bytes
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.memory_error = False
        self.warnings: list[str] = []
        self._open_stream: dict[str, Any] | None = None
        # Past the head: per stream, the outputs owning each tail group (oldest first), the
        # tail's bytes, the bytes dropped from it, and the output where the head ended.
        self._tail_owners: dict[str, deque[dict[str, Any]]] = {"stdout": deque(), "stderr": deque()}
        self._tail_bytes = {"stdout": 0, "stderr": 0}
        self._omitted = {"stdout": 0, "stderr": 0}
        self._head_end: dict[str, dict[str, Any] | None] = {"stdout": None, "stderr": None}
        self._last_head: dict[str, dict[str, Any] | None] = {"stdout": None, "stderr": None}
        self._emptied = 0  # tail-only stream outputs whose text all left the tail
        # protocol.OutputMirror of the worker: kept stream text (and displays) also land where
        # the parent can read them while the cell runs, or if the worker dies before answering.
        self.mirror: Any = None

    def add_stream(self, name: str, text: str) -> None:
        if not text:
            return
        room = self.stream_room[name]
        size = protocol.utf8_size(text)
        if size > room:
            self._add_past_head(name, text, room)
            return
        self.stream_room[name] = room - size
        self._add_head(name, text)

    def _add_head(self, name: str, text: str) -> None:
        if self.mirror is not None:
            self.mirror.append(name, text)
        self.stream_parts[name].append(text)
        output = self._last_head[name] = self._stream_output(name)
        output["text"].append(text)

    def _stream_output(self, name: str) -> dict[str, Any]:
        current = self._open_stream
        if current is None or current["name"] != name:
            current = {"output_type": "stream", "name": name, "text": []}
            self.outputs.append(current)
            self._open_stream = current
        return current

    def _add_past_head(self, name: str, text: str, room: int) -> None:
        """Text that does not fit in the head: what does goes there, the rest to the tail."""
        if room > 0:
            head = protocol.utf8_prefix(text, room)
            self.stream_room[name] = 0
            if head:
                self._add_head(name, head)
                text = text[len(head) :]
        if self._head_end[name] is None:
            self._head_end[name] = self._last_head[name]
        if self._tail_cap <= 0:
            self.truncated[name] = True
            return
        if self.mirror is not None:
            self.mirror.append(name, text)  # it stops by itself when full
        output = self._stream_output(name)
        groups = output.get("_tail")
        if groups is None:
            groups = output["_tail"] = deque()
        size = protocol.utf8_size(text)
        if groups and groups[-1][1] < TAIL_GROUP_BYTES:
            groups[-1][0].append(text)
            groups[-1][1] += size
        else:
            groups.append([[text], size])
            self._tail_owners[name].append(output)
        self._tail_bytes[name] += size
        self._shed_tail(name)

    def _shed_tail(self, name: str) -> None:
        """Whole groups leave the tail while what stays still fills it (bounded memory)."""
        owners = self._tail_owners[name]
        while owners:
            owner = owners[0]
            groups = owner["_tail"]
            size = groups[0][1]
            if self._tail_bytes[name] - size < self._tail_cap:
                return
            owners.popleft()
            groups.popleft()
            self._tail_bytes[name] -= size
            self._omitted[name] += size
            self.truncated[name] = True
            if not groups and not owner["text"] and owner is not self._open_stream:
                owner["_emptied"] = True
                self._emptied += 1
        if self._emptied > 64 and 2 * self._emptied > len(self.outputs):
            self.outputs[:] = [o for o in self.outputs if not o.get("_emptied")]
            self._emptied = 0

    def _trim_tail(self, name: str) -> None:
        """The tail to exactly its cap: the oldest group loses its first bytes."""
        excess = self._tail_bytes[name] - self._tail_cap
        owners = self._tail_owners[name]
        if excess <= 0 or not owners:
            return
        groups = owners[0]["_tail"]
        pieces, size = groups[0]
        kept = protocol.utf8_suffix("".join(pieces), size - excess)
        kept_size = protocol.utf8_size(kept)
        groups[0] = [[kept], kept_size]
        self._tail_bytes[name] -= size - kept_size
        self._omitted[name] += size - kept_size
        self.truncated[name] = True

    def warn(self, text: str) -> None:
        if text not in self.warnings and len(self.warnings) < MAX_CELL_WARNINGS:
            self.warnings.append(text)

    def _fits(self, data: dict[str, Any]) -> bool:
        size = mime_bundle_size(data) + OUTPUT_OVERHEAD_BYTES
        if size > self.display_room:
            self.warn("outputs were dropped: the result size limit was reached")
            return False
        self.display_room -= size
        return True

    def add_display(self, data: dict[str, Any], metadata: dict[str, Any] | None) -> None:
        data = mime.clean_bundle(data)
        if not self._fits(data):
            return
        self._open_stream = None
        output = {
            "output_type": "display_data",
            "data": data,
            "metadata": mime.clean_metadata(metadata),
        }
        self.outputs.append(output)
        if self.mirror is not None:
            self.mirror.append_display(output)

    def set_result(self, data: dict[str, Any], metadata: dict[str, Any], count: int) -> None:
        data = mime.clean_bundle(data)
        if not self._fits(data):
            return
        self._open_stream = None
        self.result = data
        self.outputs.append(
            {
                "output_type": "execute_result",
                "execution_count": count,
                "data": data,
                "metadata": mime.clean_metadata(metadata),
            }
        )

    def set_error(self, name: str, value: str, traceback: list[str]) -> None:
        self._open_stream = None
        traceback = collapse_repeats([strip_ansi(line) for line in traceback])
        self.error = {"name": name, "value": value, "traceback": traceback}
        self.outputs.append(
            {"output_type": "error", "ename": name, "evalue": value, "traceback": traceback}
        )

    def clear(self) -> None:
        self.outputs.clear()
        self._open_stream = None
        self._emptied = 0
        if self.mirror is not None:
            self.mirror.append_clear()

    def current_outputs(self) -> list[dict[str, Any]]:
        """The outputs so far as nbformat v4 (stream text joined), leaving the capture as is."""
        for name in ("stdout", "stderr"):
            self._trim_tail(name)
        shown: list[dict[str, Any]] = []
        for output in self.outputs:
            if output["output_type"] != "stream" or not isinstance(output["text"], list):
                shown.append(output)
                continue
            name = output["name"]
            text = "".join(output["text"])
            if output is self._head_end[name] and self._omitted[name]:
                text += protocol.omission_marker(self._omitted[name])
            for pieces, _size in output.get("_tail", ()):
                text += "".join(pieces)
            if text:
                shown.append({"output_type": "stream", "name": name, "text": text})
        return shown

    def finished_outputs(self) -> list[dict[str, Any]]:
        return self.current_outputs()

    def stream_text(self, name: str) -> str:
        self._trim_tail(name)
        head = "".join(self.stream_parts[name])
        if not self._tail_bytes[name]:
            return head
        tail = "".join(
            "".join(group[0]) for owner in self._unique_owners(name) for group in owner["_tail"]
        )
        if self._omitted[name]:
            return head + protocol.omission_marker(self._omitted[name]) + tail
        return head + tail

    def _unique_owners(self, name: str) -> list[dict[str, Any]]:
        """The outputs owning tail groups, in order, each once (an output owns a run of them)."""
        owners: list[dict[str, Any]] = []
        for owner in self._tail_owners[name]:
            if not owners or owners[-1] is not owner:
                owners.append(owner)
        return owners


class _Sink:
    """Where the shell's hooks write; the worker swaps `capture` for every cell. In a process
    user code forked from the worker, `to_fds` sends stream text straight to the fds instead
    (the parent reads them as the run's output; the child's capture would be lost)."""

    capture: CellCapture = CellCapture(0, 0)
    to_fds: bool = False


SINK = _Sink()


class CapturedStream(io.TextIOBase):
    """sys.stdout / sys.stderr replacement feeding the current cell's capture."""

    def __init__(self, name: str, fd: int) -> None:
        self._name = name
        self._fd = fd

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # C-level and subprocess writes go to the real fd, a pipe the parent drains (capped).
        return self._fd

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if SINK.to_fds:
            with contextlib.suppress(OSError):
                os.write(self._fd, text.encode("utf-8", "backslashreplace"))
            return len(text)
        SINK.capture.add_stream(self._name, text)
        return len(text)

    def flush(self) -> None:
        return None


class CapturingDisplayPublisher(DisplayPublisher):
    def publish(  # type: ignore[override]
        self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs
    ) -> None:
        self._validate_data(data, metadata)  # TypeError for the user, as IPython raises
        SINK.capture.add_display(data, metadata)

    def clear_output(self, wait: bool = False) -> None:
        SINK.capture.clear()


class CapturingDisplayHook(DisplayHook):
    def write_output_prompt(self) -> None:
        return None

    def write_format_data(self, format_dict, md_dict=None) -> None:
        SINK.capture.set_result(format_dict, md_dict or {}, self.prompt_count)

    def log_output(self, format_dict) -> None:
        return None  # history is off; keeping bundles would grow forever

    def finish_displayhook(self) -> None:
        self._is_active = False
