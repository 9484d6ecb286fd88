"""Frames between the trusted parent, the zygote and the workers, and the shapes they carry.

Length-prefixed JSON, never pickle: the parent must be able to read whatever a (possibly
hostile) worker sends without executing anything (SPEC invariant 3). Every read is size-capped.
The shapes are plain typed dicts: the worker builds its cells and frames with them, and the
sandbox never imports pydantic (~0.15 s of every new environment's start). The parent
validates what arrives leniently against the same shapes with pydantic (host/frames.py).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import socket
import struct
from enum import StrEnum
from typing import Any, Literal, TypedDict

from lambdas.shared import limits

_HEADER = struct.Struct("!I")
MAX_CONTROL_FRAME_BYTES = 1024 * 1024


class ProtocolError(Exception):
    """The peer closed the channel or sent something that is not a valid frame."""


# ---------------------------------------------------------------------------------------------
# Streams over their cap keep their head and their tail
# ---------------------------------------------------------------------------------------------

# Room kept for the omission marker, so head + marker + tail never exceed the stream cap.
OMISSION_MARKER_RESERVE_BYTES = 64


def omission_marker(omitted_bytes: int) -> str:
    """The one line that stands for the middle of a stream cut to its cap."""
    return f"\n[... {omitted_bytes} bytes omitted ...]\n"


def head_and_tail_bytes(cap: int) -> tuple[int, int]:
    """How a stream over `cap` bytes is kept: its first and its last bytes (the error is
    usually at the end), half the cap each, less the marker's room. A cap too small for a
    marker (only tests use one) keeps the head alone."""
    if cap <= 2 * OMISSION_MARKER_RESERVE_BYTES:
        return max(cap, 0), 0
    head = (cap - OMISSION_MARKER_RESERVE_BYTES) // 2
    return head, cap - OMISSION_MARKER_RESERVE_BYTES - head


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def utf8_prefix(text: str, budget: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `budget` bytes."""
    if budget <= 0:
        return ""
    piece = text[:budget]
    if piece.isascii():
        return piece
    encoded = piece.encode("utf-8", "surrogatepass")
    if len(encoded) <= budget:
        return piece
    fitted = encoded[:budget].decode("utf-8", "ignore")
    return fitted if piece.startswith(fitted) else ""


def utf8_suffix(text: str, budget: int) -> str:
    """The longest suffix of `text` whose UTF-8 encoding fits in `budget` bytes."""
    if budget <= 0:
        return ""
    piece = text[-budget:]
    if piece.isascii():
        return piece
    encoded = piece.encode("utf-8", "surrogatepass")
    if len(encoded) <= budget:
        return piece
    fitted = encoded[-budget:].decode("utf-8", "ignore")
    return fitted if piece.endswith(fitted) else ""


def head_and_tail_cut(text: str, cap: int) -> tuple[int, int, int] | None:
    """Where `text` is cut to fit in `cap` UTF-8 bytes: None if it fits, else the characters
    kept at its start and at its end and the bytes omitted between them."""
    if len(text) <= cap // 4 or utf8_size(text) <= cap:
        return None
    head_bytes, tail_bytes = head_and_tail_bytes(cap)
    head = utf8_prefix(text, head_bytes)
    tail = utf8_suffix(text[len(head) :], tail_bytes)
    omitted = utf8_size(text) - utf8_size(head) - utf8_size(tail)
    return len(head), len(tail), omitted


def keep_head_and_tail(text: str, cap: int) -> tuple[str, bool]:
    """`text` within `cap` UTF-8 bytes: whole if it fits, else its head, the omission marker
    and its tail (`head_and_tail_bytes`; the head alone when the cap leaves no tail). Also
    says whether anything was cut."""
    cut = head_and_tail_cut(text, cap)
    if cut is None:
        return text, False
    head, tail, omitted = cut
    if not tail:
        return text[:head], True
    return text[:head] + omission_marker(omitted) + text[len(text) - tail :], True


# ---------------------------------------------------------------------------------------------
# Shapes: what the worker sends (host/frames.py validates each one field by field)
# ---------------------------------------------------------------------------------------------


class CellStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    MEMORY_EXCEEDED = "memory_exceeded"


class CellError(TypedDict):
    name: str
    value: str
    traceback: list[str]


class Cell(TypedDict):
    """One cell's outcome, as the worker reports it: the streams, the nbformat v4 outputs in
    order, the last expression's mime bundle, the error."""

    status: str  # a CellStatus value
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    result: dict[str, Any] | None
    outputs: list[dict[str, Any]]
    error: CellError | None
    warnings: list[str]


def failed_cell(name: str, message: str) -> Cell:
    """A cell that never ran: one error, shown as its only output."""
    error = CellError(name=name, value=message, traceback=[])
    return Cell(
        status=CellStatus.ERROR.value,
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        result=None,
        outputs=[error_output(error)],
        error=error,
        warnings=[],
    )


def error_output(error: CellError) -> dict[str, Any]:
    """An error as its nbformat v4 output."""
    return {
        "output_type": "error",
        "ename": error["name"],
        "evalue": error["value"],
        "traceback": list(error["traceback"]),
    }


class ReportedFile(TypedDict):
    """A file the cell created or changed, relative to the workspace."""

    path: str
    size: int
    content_type: str


class Variable(TypedDict):
    name: str
    type: str


class StateReport(TypedDict):
    uploaded: bool
    unchanged: bool  # not uploaded: the committed snapshot is this worker's, byte for byte
    size: int
    dropped: list[str]  # not picklable, so not saved
    variables: list[Variable]


def empty_state_report() -> StateReport:
    return StateReport(uploaded=False, unchanged=False, size=0, dropped=[], variables=[])


class RunRequest(TypedDict):
    """Parent -> worker: run one invocation (`inv` is an ExecutorInvocation as JSON)."""

    op: Literal["run"]
    one_shot: bool
    inv: dict[str, Any]
    workspace: str
    package_cache: str
    # The parent gave the transfers before the cell (state, files, packages) a budget of their
    # own: the worker says when the cell starts (a PhaseFrame), so its timeout starts there.
    announce_run: bool
    # Echoed in every frame of this run: a frame of an earlier run (a late answer after a
    # forged one) is never taken for this run's.
    run: str


class PhaseFrame(TypedDict):
    """Worker -> parent, when the RunRequest asked for it: the transfers are done, the cell's
    own timeout starts now."""

    kind: Literal["phase"]
    run: str
    phase: str


class SavingFrame(TypedDict):
    """Worker -> parent: the cell finished; saving state and files (its own budget) follows."""

    kind: Literal["saving"]
    run: str
    cell: Cell


class PartialFrame(TypedDict):
    """Worker -> parent, asked by SIGUSR1 when the time is up: what the cell printed so far."""

    kind: Literal["partial"]
    run: str
    cell: Cell


class ResultFrame(TypedDict):
    """Worker -> parent, last: the cell (None if a SavingFrame carried it), its files, state."""

    kind: Literal["result"]
    run: str
    cell: Cell | None
    late_warnings: list[str]  # the SavingFrame's cell went first
    files: list[ReportedFile]
    state: StateReport
    restored: bool


WorkerFrame = PhaseFrame | SavingFrame | PartialFrame | ResultFrame


# ---------------------------------------------------------------------------------------------
# Transport
# ---------------------------------------------------------------------------------------------


class OutputMirror:
    """What a cell prints, copied as it is printed into memory the parent can read: a worker
    that dies mid-cell (os._exit, a segfault, the OOM killer) never sends its result, but the
    parent still shows what was printed before, as Jupyter does; and while the cell runs the
    parent publishes it as live output (host/live.py).

    Layout: an 8-byte count of bytes used, then records (1-byte kind: 1 stdout, 2 stderr,
    3 display (an nbformat display_data output as JSON), 4 clear_output; 4-byte length; UTF-8
    text). The count moves only after a record is complete, so a death mid-write leaves a
    readable prefix. The parent treats the contents as untrusted bytes."""

    _USED = struct.Struct("<Q")
    _RECORD = struct.Struct("<BI")
    # Both streams at their largest cap, plus room for record headers and live displays
    # (pages exist only once written, so unused room costs nothing).
    SIZE = 2 * limits.MAX_STREAM_BYTES + 256 * 1024 + limits.MAX_LIVE_DISPLAY_BYTES
    _STREAMS = {"stdout": 1, "stderr": 2}
    _DISPLAY = 3
    _CLEAR = 4

    def __init__(self, memory: mmap.mmap) -> None:
        self._memory = memory
        self._used = 0
        self._display_room = limits.MAX_LIVE_DISPLAY_BYTES

    @classmethod
    def create_fd(cls) -> int:
        """The parent's side: anonymous shared memory (pages exist only once written)."""
        fd = os.memfd_create("lci-output", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, cls.SIZE)
        except OSError:
            os.close(fd)
            raise
        return fd

    @classmethod
    def attach(cls, fd: int) -> OutputMirror:
        """The worker's side: map it (the mapping outlives the fd, which is closed after)."""
        return cls(mmap.mmap(fd, cls.SIZE))

    def reset(self) -> None:
        self._used = 0
        self._display_room = limits.MAX_LIVE_DISPLAY_BYTES
        self._USED.pack_into(self._memory, 0, 0)

    @classmethod
    def clear_fd(cls, fd: int) -> None:
        """The parent's side, between runs: nothing of an earlier run may be read as this one's
        (the worker resets it too, but only once it has read the next request)."""
        with contextlib.suppress(OSError):
            os.pwrite(fd, cls._USED.pack(0), 0)

    def append(self, name: str, text: str) -> None:
        self._append(self._STREAMS[name], text.encode("utf-8", "surrogatepass"))

    def append_display(self, output: dict[str, Any]) -> None:
        """A rich output, for the live view only (a dead worker's cell shows its streams)."""
        try:
            data = json.dumps(output, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            return
        if len(data) > self._display_room:
            return  # the live view's budget for rich outputs is spent; the result has them
        if self._append(self._DISPLAY, data):
            self._display_room -= len(data)

    def append_clear(self) -> None:
        self._append(self._CLEAR, b"")

    def _append(self, kind: int, data: bytes) -> bool:
        start = self._USED.size + self._used
        end = start + self._RECORD.size + len(data)
        if end > self.SIZE:
            return False  # the capture itself caps streams; this copy just stops
        self._memory[start + self._RECORD.size : end] = data
        self._RECORD.pack_into(self._memory, start, kind, len(data))
        self._used = end - self._USED.size
        self._USED.pack_into(self._memory, 0, self._used)
        return True

    @classmethod
    def read(cls, fd: int) -> list[tuple[str, str]]:
        """The parent's side, after the worker died: (stream, text) in the order printed."""
        records, _ = cls.read_records(fd, 0)
        return [(kind, value) for kind, value in records if kind in cls._STREAMS]

    @classmethod
    def read_records(cls, fd: int, offset: int) -> tuple[list[tuple[str, Any]], int]:
        """The parent's side, while the cell runs: the records written after `offset` (a value
        this returned before; 0 for all) as ("stdout" | "stderr", text), ("display", output
        dict) or ("clear", None), and the offset to read from next time."""
        try:
            header = os.pread(fd, cls._USED.size, 0)
            (used,) = cls._USED.unpack(header)
            used = min(used, cls.SIZE - cls._USED.size)
            if used < offset:  # reset since (a new run): read it from the start
                offset = 0
            if used == offset:
                return [], offset
            data = os.pread(fd, used - offset, cls._USED.size + offset)
        except (OSError, struct.error):
            return [], offset
        names = {number: name for name, number in cls._STREAMS.items()}
        found: list[tuple[str, Any]] = []
        position = 0
        while position + cls._RECORD.size <= len(data):
            kind, length = cls._RECORD.unpack_from(data, position)
            body_start = position + cls._RECORD.size
            if body_start + length > len(data):
                break
            body = data[body_start : body_start + length]
            if kind in names:
                found.append((names[kind], body.decode("utf-8", "replace")))
            elif kind == cls._DISPLAY:
                with contextlib.suppress(ValueError):
                    output = json.loads(body)
                    if isinstance(output, dict):
                        found.append(("display", output))
            elif kind == cls._CLEAR:
                found.append(("clear", None))
            else:
                break
            position = body_start + length
        return found, offset + position


# Built once: json.dumps with any argument builds a new encoder on every call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_ASCII_JSON = json.JSONEncoder(separators=(",", ":"))


def encode_frame(message: Any) -> bytes:
    try:
        body = _COMPACT_JSON.encode(message).encode()
    except UnicodeEncodeError:  # lone surrogates (user output): escape them instead
        body = _ASCII_JSON.encode(message).encode()
    return _HEADER.pack(len(body)) + body


def encode_run_request(
    inv_json: str,
    *,
    one_shot: bool,
    workspace: str,
    package_cache: str,
    announce_run: bool,
    run: str,
) -> bytes:
    """A `RunRequest` frame around an invocation the parent already serialized as JSON."""
    fields = {
        "op": "run",
        "one_shot": one_shot,
        "workspace": workspace,
        "package_cache": package_cache,
        "announce_run": announce_run,
        "run": run,
    }
    head = _ASCII_JSON.encode(fields)
    body = f'{head[:-1]},"inv":{inv_json}}}'.encode()
    return _HEADER.pack(len(body)) + body


def send_frame(sock: socket.socket, message: Any, fds: list[int] | None = None) -> None:
    data = encode_frame(message)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise ProtocolError("channel closed")
        chunks += chunk
    return bytes(chunks)


def recv_frame(sock: socket.socket, max_bytes: int = MAX_CONTROL_FRAME_BYTES) -> Any:
    """Blocking read of one frame (used by the zygote and the worker)."""
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if size > max_bytes:
        raise ProtocolError(f"frame of {size} bytes exceeds {max_bytes}")
    return _decode(_recv_exact(sock, size))


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # nesting deeper than the parser's stack
        raise ProtocolError("frame is not JSON") from exc


def recv_frame_with_fds(sock: socket.socket, max_fds: int) -> tuple[Any, list[int]]:
    """Read one frame whose first bytes may carry passed file descriptors (SCM_RIGHTS)."""
    head, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, max_fds)
    try:
        if not head:
            raise ProtocolError("channel closed")
        if len(head) < _HEADER.size:
            head += _recv_exact(sock, _HEADER.size - len(head))
        (size,) = _HEADER.unpack(head)
        if size > MAX_CONTROL_FRAME_BYTES:
            raise ProtocolError(f"frame of {size} bytes exceeds {MAX_CONTROL_FRAME_BYTES}")
        return _decode(_recv_exact(sock, size)), list(fds)
    except ProtocolError:
        for fd in fds:  # a refused frame's descriptors are not kept open
            os.close(fd)
        raise


class FrameReader:
    """Incremental frame assembly for the parent's non-blocking poll loop (every frame a
    worker sends is a JSON object)."""

    __slots__ = ("_buffer", "_max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self._buffer = bytearray()
        self._max_bytes = max_bytes

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def pop(self) -> Any | None:
        """The next complete frame, or None until more bytes arrive."""
        if len(self._buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer)
        if size > self._max_bytes:
            raise ProtocolError(f"frame of {size} bytes exceeds {self._max_bytes}")
        end = _HEADER.size + size
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[_HEADER.size : end])
        del self._buffer[:end]
        frame = _decode(body)
        if not isinstance(frame, dict):  # a `null` frame would read as "no frame yet"
            raise ProtocolError("frame is not a JSON object")
        return frame
