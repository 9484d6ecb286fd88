"""Frames between the trusted parent, the zygote and the workers, and the shapes they carry.

Length-prefixed JSON, never pickle: the parent must be able to read whatever a (possibly
hostile) worker sends without executing anything (SPEC invariant 3). Every read is size-capped.
The shapes are plain typed dicts: the worker builds its cells and frames with them, and the
sandbox never imports pydantic (~0.15 s of every new environment's start). The parent
validates what arrives leniently against the same shapes with pydantic (host/frames.py).
"""

from __future__ import annotations

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
    size: int
    dropped: list[str]  # not picklable, so not saved
    variables: list[Variable]


def empty_state_report() -> StateReport:
    return StateReport(uploaded=False, size=0, dropped=[], variables=[])


class RunRequest(TypedDict):
    """Parent -> worker: run one invocation (`inv` is an ExecutorInvocation as JSON)."""

    op: Literal["run"]
    one_shot: bool
    inv: dict[str, Any]
    workspace: str
    package_cache: str


class PhaseFrame(TypedDict):
    """Worker -> parent: the transfers are done, the cell's own timeout starts now."""

    kind: Literal["phase"]
    phase: str


class SavingFrame(TypedDict):
    """Worker -> parent: the cell finished; saving state and files (its own budget) follows."""

    kind: Literal["saving"]
    cell: Cell


class PartialFrame(TypedDict):
    """Worker -> parent, asked by SIGUSR1 when the time is up: what the cell printed so far."""

    kind: Literal["partial"]
    cell: Cell


class ResultFrame(TypedDict):
    """Worker -> parent, last: the cell (None if a SavingFrame carried it), its files, state."""

    kind: Literal["result"]
    cell: Cell | None
    late_warnings: list[str]  # the SavingFrame's cell went first
    files: list[ReportedFile]
    state: StateReport
    restored: bool


# ---------------------------------------------------------------------------------------------
# Transport
# ---------------------------------------------------------------------------------------------


class OutputMirror:
    """What a cell prints, copied as it is printed into memory the parent can read: a worker
    that dies mid-cell (os._exit, a segfault, the OOM killer) never sends its result, but the
    parent still shows what was printed before, as Jupyter does.

    Layout: an 8-byte count of bytes used, then records (1-byte stream: 1 stdout, 2 stderr;
    4-byte length; UTF-8 text). The count moves only after a record is complete, so a death
    mid-write leaves a readable prefix. The parent treats the contents as untrusted bytes."""

    _USED = struct.Struct("<Q")
    _RECORD = struct.Struct("<BI")
    # Both streams at their largest cap, plus room for record headers.
    SIZE = 2 * limits.MAX_STREAM_BYTES + 256 * 1024
    _STREAMS = {"stdout": 1, "stderr": 2}

    def __init__(self, memory: mmap.mmap) -> None:
        self._memory = memory
        self._used = 0

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
        self._USED.pack_into(self._memory, 0, 0)

    def append(self, name: str, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        start = self._USED.size + self._used
        end = start + self._RECORD.size + len(data)
        if end > self.SIZE:
            return  # the capture itself caps streams; this copy just stops
        self._memory[start + self._RECORD.size : end] = data
        self._RECORD.pack_into(self._memory, start, self._STREAMS[name], len(data))
        self._used = end - self._USED.size
        self._USED.pack_into(self._memory, 0, self._used)

    @classmethod
    def read(cls, fd: int) -> list[tuple[str, str]]:
        """The parent's side, after the worker died: (stream, text) in the order printed."""
        try:
            header = os.pread(fd, cls._USED.size, 0)
            (used,) = cls._USED.unpack(header)
            data = os.pread(fd, min(used, cls.SIZE - cls._USED.size), cls._USED.size)
        except (OSError, struct.error):
            return []
        names = {number: name for name, number in cls._STREAMS.items()}
        found: list[tuple[str, str]] = []
        offset = 0
        while offset + cls._RECORD.size <= len(data):
            stream, length = cls._RECORD.unpack_from(data, offset)
            offset += cls._RECORD.size
            if stream not in names or offset + length > len(data):
                break
            found.append((names[stream], data[offset : offset + length].decode("utf-8", "replace")))
            offset += length
        return found


def encode_frame(message: Any) -> bytes:
    try:
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # lone surrogates (user output): escape them instead
        body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


def encode_run_request(
    inv_json: str, *, one_shot: bool, workspace: str, package_cache: str
) -> bytes:
    """A `RunRequest` frame around an invocation the parent already serialized as JSON."""
    fields = {
        "op": "run",
        "one_shot": one_shot,
        "workspace": workspace,
        "package_cache": package_cache,
    }
    head = json.dumps(fields, separators=(",", ":"))
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
    try:
        return json.loads(_recv_exact(sock, size))
    except ValueError as exc:
        raise ProtocolError("frame is not JSON") from exc


def recv_frame_with_fds(sock: socket.socket, max_fds: int) -> tuple[Any, list[int]]:
    """Read one frame whose first bytes may carry passed file descriptors (SCM_RIGHTS)."""
    head, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, max_fds)
    if not head:
        raise ProtocolError("channel closed")
    if len(head) < _HEADER.size:
        head += _recv_exact(sock, _HEADER.size - len(head))
    (size,) = _HEADER.unpack(head)
    if size > MAX_CONTROL_FRAME_BYTES:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_CONTROL_FRAME_BYTES}")
    return json.loads(_recv_exact(sock, size)), list(fds)


class FrameReader:
    """Incremental frame assembly for the parent's non-blocking poll loop."""

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
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ProtocolError("frame is not JSON") from exc
