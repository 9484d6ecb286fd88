"""The trusted side of the executor: zygote lifecycle, session workers, timeouts, cleanup.

One `Engine` per execution environment. It validates the invocation, hands it to the
session's worker (forking one from the zygote when needed), waits on the wall clock while
draining the worker's stdout/stderr pipes into capped buffers, kills the whole process tree on
timeout, kills anything user code left behind after every run, and turns whatever happened
into an `ExecutorResponse` dict. It never unpickles and never holds state bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from lambdas.executor import protocol
from lambdas.executor.host import procs
from lambdas.executor.sandbox import fontcache, heap, workspace
from lambdas.executor.settings import ExecutorSettings
from lambdas.shared.models import ExecutorInvocation, ResourceLimits

logger = logging.getLogger(__name__)

# Budgets around the user's timeout: state/file/package transfers before and after the cell.
PREPARE_BUDGET_S = 120.0
SAVE_BUDGET_S = 120.0
ZYGOTE_REQUEST_TIMEOUT_S = 30.0
PARTIAL_OUTPUT_GRACE_S = 0.2  # a timed-out cell gets this long to send what it printed
NEAR_MEMORY_LIMIT_FRACTION = 0.75  # a crash with this much resident counts as out of memory
# A worker's answer may exceed the result cap (JSON escaping, streams that appear both in
# `stdout` and in `outputs`); the parent reads up to this much, then trims to the cap.
RESULT_FRAME_FACTOR = 4
RESULT_FRAME_SLACK_BYTES = 1024 * 1024
_DROPPED_OUTPUT = {"text/plain": "<output dropped: the result size limit was reached>"}
_FD_READ_BYTES = 65536
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ZYGOTE_ENV_VARS = ("PATH", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH")


class EnvironmentStartError(Exception):
    """The zygote could not be started."""


class _CappedBuffer:
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
class _Worker:
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
    def unborn(cls, parts: _Channel) -> _Worker:
        """Our ends of a channel whose worker was never forked (only to close them)."""
        parent_sock, out_r, err_r, mirror_fd = parts
        return cls(0, parent_sock, out_r, err_r, "", None, mirror_fd=mirror_fd)


# Our ends of a worker's channel: socket, stdout pipe, stderr pipe, output mirror.
_Channel = tuple[socket.socket, int, int, int]


@dataclass
class _Outcome:
    kind: str  # "result" | "timeout" | "crashed" | "invalid"
    final: dict[str, Any] | None = None
    cell: dict[str, Any] | None = None
    detail: str = ""
    partial: dict[str, Any] | None = None  # what a timed-out cell had printed
    frame_bytes: int = 0
    out: _CappedBuffer | None = None
    err: _CappedBuffer | None = None


class _Zygote:
    def __init__(self, settings: ExecutorSettings) -> None:
        config_dir = os.path.join(settings.root, "config")
        env = {name: os.environ[name] for name in _ZYGOTE_ENV_VARS if name in os.environ}
        env.update(
            {
                "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
                "MPLCONFIGDIR": os.path.join(config_dir, "matplotlib"),
                "IPYTHONDIR": os.path.join(config_dir, "ipython"),
                "HOME": config_dir,
                "PYTHONPATH": os.pathsep.join(os.path.abspath(path) for path in sys.path if path),
                "PYTHONUNBUFFERED": "1",
                **heap.allocator_environment(),
            }
        )
        for directory in (env["MPLCONFIGDIR"], env["IPYTHONDIR"]):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fontcache.seed_matplotlib_cache(env["MPLCONFIGDIR"])  # else preloading builds one
        parent_sock, child_sock = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lambdas.executor.sandbox.zygote", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                env=env,  # scrubbed: nothing secret may be in the memory workers inherit
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd=config_dir,
            )
        finally:
            child_sock.close()
        self.sock = parent_sock
        self.pending = 0
        self.sock.settimeout(settings.LCI_ZYGOTE_START_TIMEOUT_S)
        try:
            ready = protocol.recv_frame(self.sock)
        except (OSError, protocol.ProtocolError) as exc:
            self.kill()
            raise EnvironmentStartError("the execution environment failed to start") from exc
        self.sock.settimeout(ZYGOTE_REQUEST_TIMEOUT_S)
        self.pid = self.process.pid
        self.preload_ms = float(ready.get("preload_ms", 0))
        self.modules = list(ready.get("modules", []))

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """Send a request whose reply is read later by `request` or `collect`."""
        protocol.send_frame(self.sock, message, fds)
        self.pending += 1

    def collect(self) -> list[dict[str, Any]]:
        replies = []
        while self.pending:
            self.pending -= 1
            reply = protocol.recv_frame(self.sock)
            if not isinstance(reply, dict):
                raise protocol.ProtocolError("unexpected zygote reply")
            replies.append(reply)
        return replies

    def request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        if self.pending:
            raise protocol.ProtocolError("a reply is pending")
        self.send(message, fds)
        return self.collect()[0]

    def reap(self, wait_pid: int | None = None) -> dict[str, list[Any]]:
        if self.pending:
            raise protocol.ProtocolError("collect the pending reply first")
        try:
            return self.request({"op": "reap", "wait_pid": wait_pid}).get("statuses", {})
        except (OSError, protocol.ProtocolError):
            return {}

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        procs.kill_processes(lambda: procs.descendants_of(self.process.pid))
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            self.sock.close()


def _workspace_name(session_id: str | None) -> str:
    if session_id is None:
        return "oneshot-" + uuid.uuid4().hex
    if _SAFE_ID.match(session_id) and not session_id.startswith("."):
        return session_id
    return "s-" + hashlib.sha256(session_id.encode()).hexdigest()[:32]


def _describe_exit(status: list[Any] | None) -> str:
    if not status:
        return "it exited unexpectedly"
    kind, code = status[0], status[1]
    if kind == "signal":
        try:
            name = signal.Signals(code).name
        except ValueError:
            name = str(code)
        return f"it was killed by signal {name}"
    return f"it exited with code {code}"


def _error_dict(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value, "traceback": []}


class Engine:
    """One execution environment's executor. Thread-safe: invocations are serialized."""

    def __init__(self, settings: ExecutorSettings | None = None) -> None:
        self.settings = settings or ExecutorSettings.from_env()
        self._lock = threading.Lock()
        self._zygote: _Zygote | None = None
        self._workers: OrderedDict[str, _Worker] = OrderedDict()
        # A worker forked ahead of need (fork + first-touch costs paid off the critical path);
        # `_spare_parts` holds its channel while the zygote's reply (its pid) is unread.
        self._spare: _Worker | None = None
        self._spare_parts: _Channel | None = None
        self._hard_deadline = float("inf")
        # `procs.fork_count()` as read just before the last stray scan that found nothing, and
        # the worker forks confirmed since (each one raised that counter by exactly one).
        self._forks_at_clean_scan: int | None = None
        self._worker_forks_since_scan = 0
        procs.set_dumpable(False)  # children cannot read our environ or memory
        if self.settings.LCI_OWN_PROCESS:
            procs.set_child_subreaper()

    # -- lifecycle -----------------------------------------------------------------------------

    def warm_up(self) -> bool:
        """Start the zygote now; True if this call started it."""
        with self._lock:
            return self._ensure_zygote()

    def _ensure_zygote(self) -> bool:
        if self._zygote is not None and self._zygote.alive():
            return False
        if self._zygote is not None:
            self._drop_all_workers()
            self._zygote.kill()
            self._zygote = None
            self._kill_orphans()
        self._zygote = _Zygote(self.settings)
        self._request_spare()
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._drop_all_workers()
            if self._zygote is not None:
                self._zygote.kill()
                self._zygote = None

    def _drop_all_workers(self) -> None:
        for worker in list(self._workers.values()):
            self._discard(worker)
        self._workers.clear()
        with contextlib.suppress(OSError, protocol.ProtocolError):
            self._collect_spare()
        if self._spare is not None:
            self._discard(self._spare)
        self._spare = None
        if self._spare_parts is not None:  # the zygote never answered: just close our ends
            _Worker.unborn(self._spare_parts).close()
            self._spare_parts = None

    @property
    def zygote_pid(self) -> int | None:
        return self._zygote.pid if self._zygote is not None else None

    def worker_pids(self) -> dict[str, int]:
        """Live session workers by session id (diagnostics and tests)."""
        return {session_id: worker.pid for session_id, worker in self._workers.items()}

    def environment_pids(self) -> list[int]:
        """Every process this environment legitimately keeps: zygote, workers, spare."""
        with self._lock:
            with contextlib.suppress(OSError, protocol.ProtocolError):
                self._collect_spare()
            pids = [worker.pid for worker in self._workers.values()]
            if self._spare is not None:
                pids.append(self._spare.pid)
            if self._zygote is not None:
                pids.append(self._zygote.pid)
            return pids

    # -- workers -------------------------------------------------------------------------------

    def _send_fork(self, warm: bool) -> _Channel:
        assert self._zygote is not None
        parent_sock, child_sock = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mirror_fd = -1
        try:
            mirror_fd = protocol.OutputMirror.create_fd()
            self._zygote.send(
                {"op": "fork", "warm": warm}, [child_sock.fileno(), out_w, err_w, mirror_fd]
            )
        except BaseException:
            _Worker.unborn((parent_sock, out_r, err_r, mirror_fd)).close()
            raise
        finally:
            child_sock.close()
            os.close(out_w)
            os.close(err_w)
        return parent_sock, out_r, err_r, mirror_fd

    @staticmethod
    def _make_worker(parts: _Channel, reply: dict[str, Any]) -> _Worker:
        parent_sock, out_r, err_r, mirror_fd = parts
        pid = reply.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            _Worker.unborn(parts).close()
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
        return _Worker(pid, parent_sock, out_r, err_r, "", None, poller, pid_fd, mirror_fd)

    def _request_spare(self) -> None:
        if (
            self.settings.LCI_PREFORK_WORKER
            and self._spare is None
            and self._spare_parts is None
            and self._zygote is not None
        ):
            with contextlib.suppress(OSError):
                self._spare_parts = self._send_fork(warm=True)

    def _collect_spare(self) -> None:
        if self._zygote is None or not self._zygote.pending:
            return
        replies = self._zygote.collect()
        parts, self._spare_parts = self._spare_parts, None
        if parts is not None and replies:
            self._spare = self._make_worker(parts, replies[-1])
            self._worker_forks_since_scan += 1

    def _fork_worker(self, session_id: str | None) -> _Worker:
        assert self._zygote is not None
        self._collect_spare()
        worker, self._spare = self._spare, None
        if worker is None or procs.is_zombie_or_gone(worker.pid):
            if worker is not None:
                self._discard(worker)
            parts = self._send_fork(warm=False)
            worker = self._make_worker(parts, self._zygote.collect()[0])
            self._worker_forks_since_scan += 1
        worker.session_id = session_id
        name = _workspace_name(session_id)
        worker.workspace = os.path.join(self.settings.root, "workspaces", name)
        return worker

    def _kill_tree(self, worker: _Worker) -> None:
        def collect() -> list[int]:
            return [worker.pid, *procs.descendants_of(worker.pid)]

        procs.kill_processes(collect)

    def _discard(
        self, worker: _Worker, want_status: bool = False, idle: bool = False
    ) -> list[Any] | None:
        """Kill a worker and everything under it; with `want_status`, wait for its status
        (the zygote reaps the others as they exit). An `idle` worker is a live session worker
        between runs: the last stray scan left it without descendants, and anything it started
        since moved the fork counter, so that scan's verdict still stands."""
        if not idle:
            self._forks_at_clean_scan = None  # the next stray scan runs in full
        self._kill_tree(worker)
        worker.close()
        status = None
        if want_status and self._zygote is not None:
            with contextlib.suppress(OSError, protocol.ProtocolError):
                self._collect_spare()
            status = self._zygote.reap(worker.pid).get(str(worker.pid))
        if worker.session_id is None:
            workspace.remove_tree(worker.workspace)
        return status

    def _kill_strays(self) -> None:
        """After every run: nothing user code started may survive but the live workers."""
        assert self._zygote is not None
        if not self._zygote.alive():  # user code killed it: its orphans went elsewhere
            self._drop_all_workers()
            self._zygote.kill()
            self._zygote = None
            self._kill_orphans()
            return
        self._collect_spare()  # every fork asked of the zygote is confirmed (and counted) now
        # Read before scanning. If by the next call it has moved only by the workers forked for
        # us since, no other process or thread was started anywhere in between: this scan's
        # verdict (nothing left) still holds and the next scan is skipped.
        forks = procs.fork_count()
        if (
            forks is not None
            and self._forks_at_clean_scan is not None
            and forks - self._forks_at_clean_scan == self._worker_forks_since_scan
        ):
            return
        self._forks_at_clean_scan = None
        zygote_pid = self._zygote.pid
        live = {worker.pid for worker in self._workers.values()}
        if self._spare is not None:
            live.add(self._spare.pid)

        def collect() -> list[int]:
            found = [pid for pid in procs.children_of(zygote_pid) if pid not in live]
            for pid in list(found):
                found.extend(procs.descendants_of(pid))
            for pid in live:
                found.extend(procs.descendants_of(pid))
            return found

        leftovers = collect()
        if not leftovers:
            self._forks_at_clean_scan = forks
            self._worker_forks_since_scan = 0
            return
        if any(not procs.is_zombie_or_gone(pid) for pid in leftovers):
            procs.kill_processes(collect)
        if any(pid not in live for pid in procs.children_of(zygote_pid)):
            self._zygote.reap()

    def _kill_orphans(self) -> None:
        """When this process is the environment's own (Lambda, `serve`), it is a subreaper
        too: whatever survived a dead zygote was re-parented here and is killed and reaped."""
        if not self.settings.LCI_OWN_PROCESS:
            return
        own = os.getpid()
        procs.kill_processes(lambda: procs.descendants_of(own))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                if not procs.children_of(own):
                    return
                time.sleep(0.005)

    # -- invocation ----------------------------------------------------------------------------

    def invoke(self, event: Any, budget_ms: int | None = None) -> dict[str, Any]:
        """Run one invocation. `budget_ms` caps the whole call (on Lambda: the time left before
        the function itself would be killed), so a late cell still gets a `timeout` result."""
        started = time.perf_counter()
        hard_deadline = (
            time.monotonic() + budget_ms / 1000 if budget_ms is not None else float("inf")
        )
        try:
            inv = ExecutorInvocation.model_validate(event)
        except ValidationError as exc:
            return _invalid_invocation(event, exc, started)
        with self._lock:
            self._hard_deadline = hard_deadline
            try:
                return self._invoke_locked(inv, started)
            except EnvironmentStartError as exc:
                return _error_response(inv, "EnvironmentStartFailed", str(exc), started)
            except Exception:
                # A bug or a broken environment: answer cleanly, start from scratch next time.
                logger.exception("executor invocation failed")
                self._reset_after_failure()
                return _error_response(
                    inv, "ExecutorError", "the execution environment failed; retry", started
                )

    def _reset_after_failure(self) -> None:
        with contextlib.suppress(Exception):
            self._drop_all_workers()
        if self._zygote is not None:
            with contextlib.suppress(Exception):
                self._zygote.kill()
            self._zygote = None

    def _invoke_locked(self, inv: ExecutorInvocation, started: float) -> dict[str, Any]:
        cold_start = self._ensure_zygote()
        worker, fresh = self._worker_for(inv.session_id)
        payload = protocol.encode_frame(
            {
                "op": "run",
                "one_shot": inv.session_id is None,
                "inv": inv.model_dump(mode="json"),
                "workspace": worker.workspace,
                "package_cache": os.path.join(self.settings.root, "packages"),
            }
        )
        outcome = self._exchange(worker, inv, payload, fresh)
        response = self._respond(inv, worker, outcome, started, cold_start, fresh)
        if inv.session_id is None or outcome.kind != "result":
            self._workers.pop(inv.session_id or "", None)
            status = self._discard(worker, want_status=outcome.kind == "crashed")
            if outcome.kind == "crashed":
                _explain_crash(response, status, inv.limits.memory_mb)
        try:
            self._kill_strays()
        except (OSError, protocol.ProtocolError):
            logger.warning("the zygote stopped answering; the next invocation starts a new one")
            if self._zygote is not None:
                self._zygote.process.kill()
        response["result"]["duration_ms"] = int((time.perf_counter() - started) * 1000)
        self._evict_over_capacity()
        self._request_spare()  # forks while the caller handles the response
        return response

    def _worker_for(self, session_id: str | None) -> tuple[_Worker, bool]:
        if session_id is not None:
            worker = self._workers.get(session_id)
            if worker is not None:
                self._workers.move_to_end(session_id)
                return worker, False
        try:
            worker = self._fork_worker(session_id)
        except (OSError, protocol.ProtocolError):
            # The zygote is gone or wedged: start a fresh environment once.
            assert self._zygote is not None
            self._drop_all_workers()
            self._zygote.kill()
            self._zygote = None
            self._ensure_zygote()
            worker = self._fork_worker(session_id)
        if session_id is not None:
            self._workers[session_id] = worker
        return worker, True

    def _evict_over_capacity(self) -> None:
        """Least recently used session workers beyond LCI_MAX_WORKERS go, after the run that
        added one (so its first cell does not share the CPU with their teardown); their
        sessions restore from the snapshot when they come back."""
        while len(self._workers) > self.settings.LCI_MAX_WORKERS:
            _, evicted = self._workers.popitem(last=False)
            self._discard(evicted, idle=True)

    def _exchange(
        self, worker: _Worker, inv: ExecutorInvocation, payload: bytes, fresh: bool
    ) -> _Outcome:
        spec = inv.limits
        timeout_s = inv.timeout_ms / 1000
        needs_prepare = (
            bool(inv.files and inv.files.files)
            or bool(inv.inline_files)
            or bool(inv.packages)
            or bool(inv.state and inv.state.download_url)
        )
        hard = self._hard_deadline
        deadline = time.monotonic() + timeout_s + (PREPARE_BUDGET_S if needs_prepare else 0)
        deadline = min(deadline, hard)
        out = _CappedBuffer(spec.stream_bytes)
        err = _CappedBuffer(spec.stream_bytes)
        outcome = _Outcome("crashed", out=out, err=err)
        sock = worker.sock
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(payload)
        except TimeoutError:
            outcome.kind = "timeout"
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
                outcome.kind = "timeout"
                self._drain(worker, buffers)
                return outcome
            for fd, _mask in poller.poll(remaining * 1000 + 1):
                if fd == worker.pid_fd:
                    # Dead, though a descendant may keep the socket open: take what is queued.
                    reader.feed(_recv_queued(sock))
                    frame = reader.pop()
                    while frame is not None:
                        if isinstance(frame, dict) and frame.get("kind") == "result":
                            outcome.kind, outcome.final = "result", frame
                        elif isinstance(frame, dict) and frame.get("kind") == "saving":
                            outcome.cell = frame.get("cell")
                        frame = reader.pop()
                    self._drain(worker, buffers)
                    return outcome
                if fd != sock_fd:
                    self._read_fd(fd, buffers, poller)
                    continue
                try:
                    data = sock.recv(1 << 20)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._drain(worker, buffers)
                    return outcome  # crashed
                reader.feed(data)
                outcome.frame_bytes += len(data)
                try:
                    frame = reader.pop()
                    while frame is not None:
                        kind = frame.get("kind") if isinstance(frame, dict) else None
                        if kind == "phase":
                            deadline = min(time.monotonic() + timeout_s, hard)
                        elif kind == "saving":
                            outcome.cell = frame.get("cell")
                            deadline = min(time.monotonic() + SAVE_BUDGET_S, hard)
                        elif kind == "partial" and asked_for_partial:
                            cell_so_far = frame.get("cell")
                            outcome.partial = cell_so_far if isinstance(cell_so_far, dict) else None
                            outcome.kind = "timeout"
                            self._drain(worker, buffers)
                            return outcome
                        elif kind == "result":
                            outcome.kind = "result"
                            outcome.final = frame
                            self._drain(worker, buffers)
                            return outcome
                        frame = reader.pop()
                except protocol.ProtocolError as exc:
                    outcome.kind = "invalid"
                    outcome.detail = str(exc)
                    return outcome

    @staticmethod
    def _read_fd(fd: int, buffers: dict[int, _CappedBuffer], poller: Any) -> bool:
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

    def _drain(self, worker: _Worker, buffers: dict[int, _CappedBuffer]) -> None:
        """Whatever the worker wrote to its fds before answering (bounded: at most 1 MiB
        per pass, then the rest stays in the pipe and is dropped with the next run)."""
        for fd in (worker.out_fd, worker.err_fd):
            for _ in range(16):
                if not self._read_fd(fd, buffers, worker.poller):
                    break

    # -- response ------------------------------------------------------------------------------

    def _respond(
        self,
        inv: ExecutorInvocation,
        worker: _Worker,
        outcome: _Outcome,
        started: float,
        cold_start: bool,
        fresh: bool,
    ) -> dict[str, Any]:
        spec = inv.limits
        final = outcome.final or {}
        cell = final.get("cell") or outcome.cell
        warnings: list[str] = []
        state_report = _empty_state_report()
        files: list[dict[str, Any]] = []
        restored = False
        if outcome.kind == "result":
            state_report = _clean_state_report(final.get("state"))
            files = _clean_files(final.get("files"))
            restored = bool(final.get("restored"))
            warnings.extend(_str_list(final.get("late_warnings")))
        if cell is None and outcome.partial is not None:
            cell = outcome.partial
            outcome.partial = None
            partial = True
        elif cell is None and outcome.kind in ("crashed", "timeout"):
            # Died (or stuck in C code) before answering: what it printed is in the mirror.
            cell = _mirrored_cell(worker.mirror_fd)
            partial = cell is not None
        else:
            partial = False
        result = _clean_cell(cell, spec) if isinstance(cell, dict) else protocol.empty_cell()
        if outcome.kind == "timeout":
            if cell is None or partial:
                result["status"] = "timeout"
                result["error"] = _error_dict(
                    "TimeoutError", f"execution exceeded the time limit of {inv.timeout_ms} ms"
                )
                result["outputs"].append(_error_output(result["error"]))
            else:
                warnings.append("the session state and files were not saved: saving timed out")
            warnings.append(
                "the session worker was stopped; its variables come back from the "
                "last saved state on the next execution"
            )
        elif outcome.kind in ("crashed", "invalid"):
            if cell is None or partial:
                result["status"] = "error"
                detail = outcome.detail or "it exited unexpectedly"
                result["error"] = _error_dict("WorkerCrashed", detail)
                result["outputs"].append(_error_output(result["error"]))
            else:
                warnings.append("the session state and files were not saved: the worker died")
        _merge_fd_output(result, "stdout", outcome.out, spec.stream_bytes)
        _merge_fd_output(result, "stderr", outcome.err, spec.stream_bytes)
        result["warnings"] = result["warnings"] + warnings
        if outcome.frame_bytes > spec.result_bytes // 2:
            _fit_result(result, spec.result_bytes)
        status = result["status"]
        result.update(
            {
                "execution_id": inv.execution_id,
                "session_id": inv.session_id,
                "success": status == "ok",
                "execution_count": inv.execution_count if inv.session_id is not None else None,
                "files": files,
                "duration_ms": int((time.perf_counter() - started) * 1000),
            }
        )
        return {
            "result": result,
            "state": state_report,
            "cold_start": cold_start,
            "worker_restored": restored,
        }


# ---------------------------------------------------------------------------------------------
# Shaping untrusted worker output into the contract (cheap checks, no model re-validation)
# ---------------------------------------------------------------------------------------------

_STATUSES = frozenset({"ok", "error", "timeout", "memory_exceeded"})
_RESULT_KEYS = (
    "execution_id", "session_id", "status", "success", "execution_count", "stdout", "stderr",
    "stdout_truncated", "stderr_truncated", "result", "outputs", "error", "files",
    "duration_ms", "warnings",
)  # fmt: skip


def _str_list(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _clean_cell(cell: dict[str, Any], spec: ResourceLimits) -> dict[str, Any]:
    clean = protocol.empty_cell()
    status = cell.get("status")
    clean["status"] = status if status in _STATUSES else "error"
    for name in ("stdout", "stderr"):
        text = cell.get(name)
        if isinstance(text, str):
            if len(text) > spec.stream_bytes:
                text = text[: spec.stream_bytes]
                clean[f"{name}_truncated"] = True
            clean[name] = text
        clean[f"{name}_truncated"] = clean[f"{name}_truncated"] or bool(
            cell.get(f"{name}_truncated")
        )
    result = cell.get("result")
    clean["result"] = result if isinstance(result, dict) else None
    outputs = cell.get("outputs")
    if isinstance(outputs, list):
        clean["outputs"] = [item for item in outputs if isinstance(item, dict)]
    error = cell.get("error")
    if isinstance(error, dict):
        clean["error"] = {
            "name": str(error.get("name", "Error")),
            "value": str(error.get("value", "")),
            "traceback": _str_list(error.get("traceback")),
        }
    elif clean["status"] != "ok":
        clean["error"] = _error_dict("Error", "the cell failed")
    clean["warnings"] = _str_list(cell.get("warnings"))
    return clean


def _mirrored_cell(mirror_fd: int) -> dict[str, Any] | None:
    """The streams a dead worker printed before dying, as a cell (None if it printed nothing);
    `_clean_cell` caps it like anything else the worker produced."""
    if mirror_fd < 0:
        return None
    printed = protocol.OutputMirror.read(mirror_fd)
    if not printed:
        return None
    cell = protocol.empty_cell()
    for name, text in printed:
        _append_stream(cell, name, text)
    return cell


def _empty_state_report() -> dict[str, Any]:
    return {"uploaded": False, "size": 0, "dropped": [], "variables": []}


def _clean_state_report(report: Any) -> dict[str, Any]:
    if not isinstance(report, dict):
        return _empty_state_report()
    size = report.get("size")
    variables = report.get("variables")
    return {
        "uploaded": bool(report.get("uploaded")),
        "size": size if isinstance(size, int) and size >= 0 else 0,
        "dropped": _str_list(report.get("dropped")),
        "variables": [
            {"name": str(item.get("name")), "type": str(item.get("type"))}
            for item in variables
            if isinstance(item, dict)
        ]
        if isinstance(variables, list)
        else [],
    }


def _clean_files(files: Any) -> list[dict[str, Any]]:
    clean: list[dict[str, Any]] = []
    if not isinstance(files, list):
        return clean
    for item in files:
        if not isinstance(item, dict):
            continue
        path, size = item.get("path"), item.get("size")
        if not isinstance(path, str) or not isinstance(size, int):
            continue
        try:
            path = workspace.safe_relative_path(path)
        except workspace.UnsafePathError:
            continue
        content_type = item.get("content_type")
        clean.append(
            {
                "path": path,
                "size": size,
                "content_type": content_type
                if isinstance(content_type, str)
                else "application/octet-stream",
                "download_url": None,
            }
        )
    return clean


def _error_output(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "output_type": "error",
        "ename": error["name"],
        "evalue": error["value"],
        "traceback": list(error["traceback"]),
    }


def _merge_fd_output(
    result: dict[str, Any], name: str, buffer: _CappedBuffer | None, cap: int
) -> None:
    """Append what the worker wrote straight to its fd (C code, subprocesses) to the stream."""
    if buffer is None or (not buffer.data and not buffer.truncated):
        return
    text = buffer.text()
    room = cap - len(result[name].encode("utf-8", "surrogatepass"))
    if len(text) > room:
        text = text[: max(room, 0)]
        result[f"{name}_truncated"] = True
    if buffer.truncated:
        result[f"{name}_truncated"] = True
    if text:
        _append_stream(result, name, text)


def _append_stream(cell: dict[str, Any], name: str, text: str) -> None:
    """Add stream text to a cell: to its stream and to its last output if that is the same
    stream (as Jupyter merges consecutive writes), else as a new stream output."""
    cell[name] += text
    outputs = cell["outputs"]
    last = outputs[-1] if outputs else None
    if last is not None and last.get("output_type") == "stream" and last.get("name") == name:
        last["text"] = str(last.get("text", "")) + text
    else:
        outputs.append({"output_type": "stream", "name": name, "text": text})


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


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _fit_result(result: dict[str, Any], cap: int) -> None:
    """Trim a result over the size cap (the sync payload limit): drop the largest rich outputs
    first, then shorten the streams. Says so in `warnings`."""
    size = _json_size(result)
    if size <= cap:
        return
    result["warnings"].append("outputs were trimmed: the result size limit was reached")
    bundles = [output for output in result["outputs"] if isinstance(output.get("data"), dict)]
    bundles.sort(key=lambda output: _json_size(output["data"]), reverse=True)
    for output in bundles:
        saved = _json_size(output["data"]) - _json_size(_DROPPED_OUTPUT)
        if saved < 1024:  # small outputs cost little: the streams go first
            break
        output["data"] = dict(_DROPPED_OUTPUT)
        size -= saved
        if size <= cap:
            break
    if result["result"] is not None and _json_size(result["result"]) > 1024:
        size -= _json_size(result["result"])
        result["result"] = dict(_DROPPED_OUTPUT)
    while size > cap:
        excess = size - cap
        for name in ("stdout", "stderr"):
            text = result[name]
            if text:
                keep = max(len(text) - excess, len(text) // 4, 0) if len(text) > 64 else 0
                result[name] = text[:keep]
                result[f"{name}_truncated"] = True
        streams = [o for o in result["outputs"] if o.get("output_type") == "stream"]
        for output in streams:
            text = str(output.get("text", ""))
            output["text"] = text[: len(text) // 4]
        new_size = _json_size(result)
        if new_size >= size:  # nothing left to trim
            break
        size = new_size


def _explain_crash(response: dict[str, Any], status: list[Any] | None, memory_mb: int) -> None:
    """Say how the worker died; a death with the resident set near the address-space limit
    (C code that aborts or crashes when an allocation fails) counts as `memory_exceeded`."""
    result = response["result"]
    error = result.get("error")
    if error is None or error.get("name") != "WorkerCrashed":
        return
    peak_kb = status[2] if status and len(status) > 2 and isinstance(status[2], int) else 0
    near_limit = peak_kb * 1024 >= NEAR_MEMORY_LIMIT_FRACTION * memory_mb * 1024 * 1024
    if near_limit and status and status[:2] != ["exit", 0]:
        result["status"] = "memory_exceeded"
        error["name"] = "MemoryError"
        error["value"] = (
            f"the session worker died near its memory limit ({memory_mb} MB address space, "
            f"{peak_kb // 1024} MB resident at the peak): {_describe_exit(status)}"
        )
    else:
        error["value"] = (
            f"the session worker died: {_describe_exit(status)}; the environment keeps serving "
            "and the session's variables come back from the last saved state on the next "
            "execution"
        )
    for output in result["outputs"]:
        if output.get("output_type") == "error" and output.get("ename") == "WorkerCrashed":
            output["ename"] = error["name"]
            output["evalue"] = error["value"]


def _bare_result(execution_id: str, session_id: str | None, started: float) -> dict[str, Any]:
    result = protocol.empty_cell()
    result.update(
        {
            "execution_id": execution_id,
            "session_id": session_id,
            "success": False,
            "execution_count": None,
            "files": [],
            "duration_ms": int((time.perf_counter() - started) * 1000),
        }
    )
    return result


def _error_response(
    inv: ExecutorInvocation, name: str, message: str, started: float
) -> dict[str, Any]:
    return _failure_response(inv.execution_id, inv.session_id, name, message, started)


def _failure_response(
    execution_id: str, session_id: str | None, name: str, message: str, started: float
) -> dict[str, Any]:
    """A response for a run that never reached a worker: one error, nothing saved."""
    result = _bare_result(execution_id, session_id, started)
    result["error"] = _error_dict(name, message)
    result["outputs"] = [_error_output(result["error"])]
    return {
        "result": result,
        "state": _empty_state_report(),
        "cold_start": False,
        "worker_restored": False,
    }


def _invalid_invocation(event: Any, exc: ValidationError, started: float) -> dict[str, Any]:
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
    return _failure_response(
        execution_id,
        session_id,
        "InvalidInvocation",
        f"invalid executor invocation: {problems}",
        started,
    )
