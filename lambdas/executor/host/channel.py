"""The parent's side of one worker: its channel and the exchange of one run over it.

A channel is a socketpair for frames (protocol.py), the worker's stdout and stderr pipes (what
C code and subprocesses write straight to the fds) and its output mirror. `exchange` sends the
run request and waits on the wall clock, draining the pipes into capped buffers, until the
worker answers, dies, or runs out of time; it says which in an `Outcome`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lambdas.executor import protocol
from lambdas.executor.host import frames
from lambdas.shared.models import ExecutorInvocation

# Budgets around the user's timeout: state/file/package transfers before and after the cell.
PREPARE_BUDGET_S = 120.0
SAVE_BUDGET_S = 120.0
PARTIAL_OUTPUT_GRACE_S = 0.2  # a timed-out cell gets this long to send what it printed
# A worker's answer may exceed the result cap (JSON escaping, streams that appear both in
# `stdout` and in `outputs`); the parent reads up to this much, then trims to the cap.
RESULT_FRAME_FACTOR = 4
RESULT_FRAME_SLACK_BYTES = 1024 * 1024
_FD_READ_BYTES = 65536
# Reads of the worker's socket: a 1 MiB buffer cost an mmap, a page fault and an munmap per
# frame (~70 us of CPU on every warm run); large frames simply take more reads.
_SOCKET_READ_BYTES = 65536

# Our ends of a worker's channel: socket, stdout pipe, stderr pipe, output mirror.
ChannelEnds = tuple[socket.socket, int, int, int]


class CappedBuffer:
    """Bytes from a worker fd: kept up to `cap`, counted (and dropped) beyond it."""

    __slots__ = ("cap", "data", "truncated")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data += chunk

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass
class WorkerHandle:
    """A forked worker as the parent holds it: pid and our ends of its channel."""

    pid: int
    sock: socket.socket
    out_fd: int
    err_fd: int
    workspace: str
    session_id: str | None
    poller: Any = field(default=None)
    # Readable when the worker exits, even if a descendant still holds its socket open.
    pid_fd: int = -1
    # protocol.OutputMirror memory: what the current cell printed, should the worker die.
    mirror_fd: int = -1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        for fd in (self.out_fd, self.err_fd, self.pid_fd, self.mirror_fd):
            if fd < 0:
                continue
            with contextlib.suppress(OSError):
                os.close(fd)

    @classmethod
    def unborn(cls, ends: ChannelEnds) -> WorkerHandle:
        """Our ends of a channel whose worker was never forked (only to close them)."""
        parent_sock, out_r, err_r, mirror_fd = ends
        return cls(0, parent_sock, out_r, err_r, "", None, mirror_fd=mirror_fd)

    @classmethod
    def forked(cls, ends: ChannelEnds, pid: Any) -> WorkerHandle:
        """The handle of a worker the zygote says it forked (`pid` as the zygote sent it)."""
        parent_sock, out_r, err_r, mirror_fd = ends
        if not isinstance(pid, int) or pid <= 0:
            cls.unborn(ends).close()
            raise protocol.ProtocolError("the zygote did not fork a worker")
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        poller = select.poll()
        for fd in (parent_sock.fileno(), out_r, err_r):
            poller.register(fd, select.POLLIN)
        try:
            pid_fd = os.pidfd_open(pid)
        except (OSError, AttributeError):  # pre-5.3 kernels: socket EOF is the only signal
            pid_fd = -1
        else:
            poller.register(pid_fd, select.POLLIN)
        return cls(pid, parent_sock, out_r, err_r, "", None, poller, pid_fd, mirror_fd)


class OutcomeKind(StrEnum):
    RESULT = "result"  # the worker answered with its final frame
    TIMEOUT = "timeout"  # out of time (the cell, a transfer, or the Lambda deadline)
    CRASHED = "crashed"  # died or closed the channel before answering
    INVALID = "invalid"  # sent something that is not a valid frame


@dataclass
class Outcome:
    kind: OutcomeKind
    final: frames.ResultFrame | None = None
    cell: frames.Cell | None = None  # sent before saving: the run itself finished
    detail: str = ""
    partial: frames.Cell | None = None  # what a timed-out cell had printed
    frame_bytes: int = 0
    out: CappedBuffer | None = None
    err: CappedBuffer | None = None


def _needs_prepare(inv: ExecutorInvocation) -> bool:
    return (
        bool(inv.files and inv.files.files)
        or bool(inv.inline_files)
        or bool(inv.packages)
        or bool(inv.state and inv.state.download_url)
    )


def exchange(
    worker: WorkerHandle, inv: ExecutorInvocation, payload: bytes, hard_deadline: float
) -> Outcome:
    """Send one run request and wait for its outcome; `hard_deadline` (monotonic) caps it all."""
    spec = inv.limits
    timeout_s = inv.timeout_ms / 1000
    hard = hard_deadline
    deadline = time.monotonic() + timeout_s + (PREPARE_BUDGET_S if _needs_prepare(inv) else 0)
    deadline = min(deadline, hard)
    out = CappedBuffer(spec.stream_bytes)
    err = CappedBuffer(spec.stream_bytes)
    outcome = Outcome(OutcomeKind.CRASHED, out=out, err=err)
    sock = worker.sock
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(payload)
    except TimeoutError:
        outcome.kind = OutcomeKind.TIMEOUT
        return outcome
    except OSError:
        return outcome
    reader = protocol.FrameReader(
        RESULT_FRAME_FACTOR * spec.result_bytes + RESULT_FRAME_SLACK_BYTES
    )
    sock_fd = sock.fileno()
    buffers = {worker.out_fd: out, worker.err_fd: err}
    poller = worker.poller
    asked_for_partial = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if outcome.cell is None and not asked_for_partial:
                asked_for_partial = True
                with contextlib.suppress(OSError):
                    os.kill(worker.pid, signal.SIGUSR1)
                deadline = min(time.monotonic() + PARTIAL_OUTPUT_GRACE_S, hard + 0.1)
                continue
            outcome.kind = OutcomeKind.TIMEOUT
            drain(worker, buffers)
            return outcome
        for fd, _mask in poller.poll(remaining * 1000 + 1):
            if fd == worker.pid_fd:
                # Dead, though a descendant may keep the socket open: take what is queued.
                reader.feed(_recv_queued(sock))
                frame = reader.pop()
                while frame is not None:
                    message = frames.parse_worker_frame(frame, spec.stream_bytes)
                    if isinstance(message, frames.ResultFrame):
                        outcome.kind, outcome.final = OutcomeKind.RESULT, message
                    elif isinstance(message, frames.SavingFrame):
                        outcome.cell = message.cell
                    frame = reader.pop()
                drain(worker, buffers)
                return outcome
            if fd != sock_fd:
                read_fd(fd, buffers, poller)
                continue
            try:
                data = sock.recv(_SOCKET_READ_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                drain(worker, buffers)
                return outcome  # crashed
            reader.feed(data)
            outcome.frame_bytes += len(data)
            try:
                frame = reader.pop()
                while frame is not None:
                    message = frames.parse_worker_frame(frame, spec.stream_bytes)
                    if isinstance(message, frames.PhaseFrame):
                        deadline = min(time.monotonic() + timeout_s, hard)
                    elif isinstance(message, frames.SavingFrame):
                        outcome.cell = message.cell
                        deadline = min(time.monotonic() + SAVE_BUDGET_S, hard)
                    elif isinstance(message, frames.PartialFrame) and asked_for_partial:
                        outcome.partial = message.cell
                        outcome.kind = OutcomeKind.TIMEOUT
                        drain(worker, buffers)
                        return outcome
                    elif isinstance(message, frames.ResultFrame):
                        outcome.kind = OutcomeKind.RESULT
                        outcome.final = message
                        drain(worker, buffers)
                        return outcome
                    frame = reader.pop()
            except protocol.ProtocolError as exc:
                outcome.kind = OutcomeKind.INVALID
                outcome.detail = str(exc)
                return outcome


def read_fd(fd: int, buffers: dict[int, CappedBuffer], poller: Any) -> bool:
    try:
        chunk = os.read(fd, _FD_READ_BYTES)
    except BlockingIOError:
        return False
    except OSError:
        chunk = b""
    if not chunk:
        with contextlib.suppress(KeyError, ValueError):
            poller.unregister(fd)
        return False
    buffers[fd].add(chunk)
    return True


def drain(worker: WorkerHandle, buffers: dict[int, CappedBuffer]) -> None:
    """Whatever the worker wrote to its fds before answering (bounded: at most 1 MiB
    per pass, then the rest stays in the pipe and is dropped with the next run)."""
    for fd in (worker.out_fd, worker.err_fd):
        for _ in range(16):
            if not read_fd(fd, buffers, worker.poller):
                break


def _recv_queued(sock: socket.socket) -> bytes:
    """Whatever is already queued on the socket, without waiting."""
    chunks = []
    sock.setblocking(False)  # a timeout-mode socket would wait for more first
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
