"""Length-prefixed JSON frames between the trusted parent, the zygote and the workers.

JSON only, never pickle: the parent must be able to read whatever a (possibly hostile) worker
sends without executing anything (SPEC invariant 3). Every read is size-capped.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_CONTROL_FRAME_BYTES = 1024 * 1024


class ProtocolError(Exception):
    """The peer closed the channel or sent something that is not a valid frame."""


def empty_cell() -> dict[str, Any]:
    """The cell part of a worker's result frame, before anything ran."""
    return {
        "status": "error",
        "stdout": "",
        "stderr": "",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "result": None,
        "outputs": [],
        "error": None,
        "warnings": [],
    }


def encode_frame(message: Any) -> bytes:
    try:
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # lone surrogates (user output): escape them instead
        body = json.dumps(message, separators=(",", ":")).encode()
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
