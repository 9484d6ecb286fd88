"""The parent's side of one worker: its channel and the exchange of one run over it.

A channel is a socketpair for frames (protocol.py), the worker's stdout and stderr pipes (what
C code and subprocesses write straight to the fds) and its output mirror. `exchange` sends the
run request and waits on the wall clock, draining the pipes into capped buffers, until the
worker answers, dies, or runs out of time; it says which in an `Outcome`.

Only the worker speaks on its channel: the kernel tags every read with the sending process
(SCM_CREDENTIALS), and bytes from anything the worker forked are dropped unread.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lambdas.executor import protocol
from lambdas.executor.host import frames, procs
from lambdas.shared.models import ExecutorInvocation

# Budgets of their own, never added to the user's timeout (see `Phase`): the state, file and
# package transfers before the cell, and the state and file uploads after it.
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
    """Bytes from a worker fd within `cap`: the first bytes as they come, then the last ones
    in a bounded tail (protocol.head_and_tail_bytes); what falls between is only counted."""

    __slots__ = ("cap", "data", "head_cap", "omitted", "tail", "tail_cap", "truncated")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.head_cap, self.tail_cap = protocol.head_and_tail_bytes(cap)
        self.data = bytearray()  # the head: only ever appended to
        self.tail = bytearray()  # the last `tail_cap` bytes after the head
        self.omitted = 0
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.head_cap - len(self.data)
        if len(chunk) <= room:
            self.data += chunk
            return
        if room > 0:
            self.data += chunk[:room]
            chunk = chunk[room:]
        if self.tail_cap <= 0:
            self.truncated = True
            self.omitted += len(chunk)
            return
        self.tail += chunk
        excess = len(self.tail) - self.tail_cap
        if excess > 0:
            del self.tail[:excess]  # cheap: bytearray drops its front without copying
            self.omitted += excess
            self.truncated = True

    @property
    def received(self) -> int:
        """Bytes added so far, kept or not."""
        return len(self.data) + self.omitted + len(self.tail)

    def since(self, offset: int) -> bytes:
        """What was added after the first `offset` bytes and is still kept."""
        head = bytes(self.data[offset:]) if offset < len(self.data) else b""
        tail_start = len(self.data) + self.omitted
        return head + bytes(self.tail[max(offset - tail_start, 0) :])

    def text(self) -> str:
        if not self.tail or not self.omitted:
            return (self.data + self.tail).decode("utf-8", "replace")
        # The cuts may fall inside characters: their leftover bytes are not shown.
        head = codecs.getincrementaldecoder("utf-8")("replace").decode(bytes(self.data))
        tail = bytes(self.tail)
        skip = 0
        while skip < min(3, len(tail)) and 0x80 <= tail[skip] < 0xC0:
            skip += 1
        marker = protocol.omission_marker(self.omitted + skip)
        return head + marker + tail[skip:].decode("utf-8", "replace")


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

    def exited(self, wait_s: float = 0.0) -> bool:
        """Whether the worker is gone (waiting up to `wait_s` for it to be)."""
        if self.pid_fd < 0:
            return procs.is_zombie_or_gone(self.pid)
        readable, _, _ = select.select([self.pid_fd], [], [], wait_s)
        return bool(readable)

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


class Phase(StrEnum):
    """Where a run is, each phase with its own time budget. Phases only move forward, so no
    frame can give a run more time than the three budgets together."""

    PREPARE = "prepare"  # state, files and packages before the cell: PREPARE_BUDGET_S
    RUN = "run"  # the cell: the user's timeout_ms, and nothing else
    SAVE = "save"  # state and files after the cell: SAVE_BUDGET_S


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
    phase: Phase = Phase.RUN  # the phase the run ended in


class ExchangeObserver:
    """Hooks for whoever watches a run while `exchange` waits on it (host/live.py): the cell
    started after its transfers, the cell is done, and a tick at least every `wait_limit()`
    seconds with the pipe buffers. This base class watches nothing."""

    def wait_limit(self) -> float:
        return float("inf")

    def tick(self, out: CappedBuffer, err: CappedBuffer) -> None:
        return None

    def phase(self) -> None:
        return None

    def cell_done(self) -> None:
        return None


_NO_OBSERVER = ExchangeObserver()


class Spinner:
    """Busy-polls for a worker's answer for a moment before sleeping in poll(): a quick cell's
    answer then reaches a parent that is still on its CPU, instead of waking it (~0.1 ms of a
    0.6 ms warm run here). Only where it pays and takes nothing from anyone: the worker has a
    CPU of its own (two or more, and no more tasks runnable right now than CPUs), and the
    last answer came within the window (answers that take longer, long cells or a loaded
    machine, turn it off until one comes quickly again)."""

    WINDOW_S = 0.001

    def __init__(self) -> None:
        try:
            self.cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = 1
        self.quick = True  # the last answer came within the window

    @staticmethod
    def runnable() -> int:
        """Tasks running or ready to run on the machine right now (this parent and the
        worker it just woke among them): /proc/loadavg's fourth field, not an average."""
        try:
            fd = os.open("/proc/loadavg", os.O_RDONLY)
        except OSError:
            return 0
        try:
            fields = os.read(fd, 128).split()
            return int(fields[3].split(b"/")[0])
        except (OSError, IndexError, ValueError):
            return 0
        finally:
            os.close(fd)

    def wait(self, poller: Any, until: float) -> list[tuple[int, int]]:
        """What `poller` has ready before `until` (perf_counter), or [] to block instead."""
        if self.cpus < 2 or not self.quick or self.runnable() > self.cpus:
            return []
        while time.perf_counter() < until:
            ready = poller.poll(0)
            if ready:
                return ready
        return []

    def answered(self, seconds: float) -> None:
        """How long the worker took to answer (or to write first), spinning or not."""
        self.quick = seconds < self.WINDOW_S


SPINNER = Spinner()


def needs_prepare(inv: ExecutorInvocation) -> bool:
    """Whether the worker may transfer something before the cell: it then announces the cell's
    start, so the transfers get PREPARE_BUDGET_S and never eat into (or extend) the timeout."""
    return (
        bool(inv.files and inv.files.files)
        or bool(inv.inline_files)
        or bool(inv.packages)
        or bool(inv.state and inv.state.download_url)
    )


def exchange(
    worker: WorkerHandle,
    inv: ExecutorInvocation,
    payload: bytes,
    hard_deadline: float,
    prepares: bool = False,
    run_id: str = "",
    observer: ExchangeObserver = _NO_OBSERVER,
) -> Outcome:
    """Send one run request and wait for its outcome; `hard_deadline` (monotonic) caps it all.
    `prepares`: the request asked the worker to announce the cell's start (`needs_prepare`);
    `run_id`: the request's `run`, which only this run's frames carry."""
    spec = inv.limits
    timeout_s = inv.timeout_ms / 1000
    hard = hard_deadline
    phase = Phase.PREPARE if prepares else Phase.RUN
    deadline = min(time.monotonic() + (PREPARE_BUDGET_S if prepares else timeout_s), hard)
    out = CappedBuffer(spec.stream_bytes)
    err = CappedBuffer(spec.stream_bytes)
    outcome = Outcome(OutcomeKind.CRASHED, out=out, err=err, phase=phase)
    discard_stale_output(worker)
    sock = worker.sock
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(payload)
    except TimeoutError:
        outcome.kind = OutcomeKind.TIMEOUT
        return outcome
    except OSError:
        return outcome
    sent_at = time.perf_counter()
    spin_until = sent_at + Spinner.WINDOW_S
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
            if outcome.phase == Phase.RUN and not asked_for_partial:
                asked_for_partial = True
                with contextlib.suppress(OSError):
                    os.kill(worker.pid, signal.SIGUSR1)
                deadline = min(time.monotonic() + PARTIAL_OUTPUT_GRACE_S, hard + 0.1)
                continue
            outcome.kind = OutcomeKind.TIMEOUT
            drain(worker, buffers)
            return outcome
        observer.tick(out, err)
        wait = min(remaining, observer.wait_limit())
        if spin_until:  # once per run: the window, then what the first wait took
            ready = SPINNER.wait(poller, spin_until) or poller.poll(wait * 1000 + 1)
            SPINNER.answered(time.perf_counter() - sent_at)
            spin_until = 0.0
        else:
            ready = poller.poll(wait * 1000 + 1)
        for fd, _mask in ready:
            if fd == worker.pid_fd:
                # Dead, though a descendant may keep the socket open: take what is queued.
                reader.feed(_recv_queued(sock, worker.pid))
                with contextlib.suppress(protocol.ProtocolError):
                    frame = reader.pop()
                    while frame is not None:
                        message = frames.parse_worker_frame(frame, spec.stream_bytes)
                        if message is None or message.run != run_id:
                            pass  # of no run, or of an earlier one
                        elif isinstance(message, frames.ResultFrame):
                            outcome.kind, outcome.final = OutcomeKind.RESULT, message
                        elif isinstance(message, frames.SavingFrame):
                            outcome.cell, outcome.phase = message.cell, Phase.SAVE
                        frame = reader.pop()
                drain(worker, buffers)
                return outcome
            if fd != sock_fd:
                read_fd(fd, buffers, poller)
                continue
            try:
                data = recv_from(sock, worker.pid)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data is None:
                continue  # sent by a process user code forked: it never speaks for the worker
            if not data:
                drain(worker, buffers)
                return outcome  # crashed
            reader.feed(data)
            outcome.frame_bytes += len(data)
            try:
                frame = reader.pop()
                while frame is not None:
                    message = frames.parse_worker_frame(frame, spec.stream_bytes)
                    if message is None or message.run != run_id:
                        pass  # of no run, or of an earlier one
                    elif isinstance(message, frames.PhaseFrame):
                        if outcome.phase == Phase.PREPARE:
                            outcome.phase = Phase.RUN
                            observer.phase()
                            deadline = min(time.monotonic() + timeout_s, hard)
                    elif isinstance(message, frames.SavingFrame):
                        if outcome.phase != Phase.SAVE:
                            observer.cell_done()
                            outcome.cell, outcome.phase = message.cell, Phase.SAVE
                            deadline = min(time.monotonic() + SAVE_BUDGET_S, hard)
                    elif isinstance(message, frames.PartialFrame) and asked_for_partial:
                        outcome.partial = message.cell
                        outcome.kind = OutcomeKind.TIMEOUT
                        drain(worker, buffers)
                        return outcome
                    elif isinstance(message, frames.ResultFrame):
                        observer.cell_done()
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


def _readable_output_fds(worker: WorkerHandle) -> tuple[int, ...]:
    """The worker's stdout/stderr pipes that have bytes (or their end) waiting: one poll
    instead of a read that fails on each empty pipe, on every run."""
    if worker.poller is None:
        return (worker.out_fd, worker.err_fd)
    ready = {fd for fd, _mask in worker.poller.poll(0)}
    return tuple(fd for fd in (worker.out_fd, worker.err_fd) if fd in ready)


def drain(worker: WorkerHandle, buffers: dict[int, CappedBuffer]) -> None:
    """Whatever the worker wrote to its fds before answering (bounded: at most 1 MiB
    per pass, then the rest stays in the pipe and the next run discards it)."""
    for fd in _readable_output_fds(worker):
        for _ in range(16):
            if not read_fd(fd, buffers, worker.poller):
                break


_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_CREDENTIALS_SPACE = socket.CMSG_SPACE(_CREDENTIALS.size)


def accept_credentials(sock: socket.socket) -> None:
    """Have the kernel tag what arrives on our end of a worker's channel with its sender
    (SCM_CREDENTIALS); one read then never mixes the bytes of two processes."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)


def recv_from(sock: socket.socket, pid: int) -> bytes | None:
    """The next bytes on the channel if the worker `pid` sent them; None for bytes from a
    process it forked (which inherited the socket: libc's fork runs none of the worker's
    at-fork hooks, sandbox/worker.py), b"" at end of file."""
    data, ancillary, _flags, _address = sock.recvmsg(_SOCKET_READ_BYTES, _CREDENTIALS_SPACE)
    for level, kind, body in ancillary:
        if (
            level == socket.SOL_SOCKET
            and kind == socket.SCM_CREDENTIALS
            and len(body) >= _CREDENTIALS.size
            and _CREDENTIALS.unpack_from(body)[0] != pid
        ):
            return None if data else b""
    return data


def _recv_queued(sock: socket.socket, pid: int) -> bytes:
    """Whatever the worker `pid` already queued on the socket, without waiting."""
    chunks = []
    sock.setblocking(False)  # a timeout-mode socket would wait for more first
    while True:
        try:
            chunk = recv_from(sock, pid)
        except OSError:  # BlockingIOError: nothing (more) queued
            break
        if chunk is None:
            continue
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def discard_stale_output(worker: WorkerHandle) -> None:
    """Drop what reached the worker's fds between runs (a thread or process the last cell
    left behind, output past the last drain): it belongs to no run, least of all this one."""
    for fd in _readable_output_fds(worker):
        for _ in range(64):  # bounded: a writer that never stops does not hold the run up
            try:
                if not os.read(fd, _FD_READ_BYTES):
                    break
            except OSError:  # BlockingIOError: nothing (more) there
                break
