"""The environment's processes: the zygote, the session workers forked from it, one spare
worker forked ahead of need, and the cleanup after every run (nothing user code started may
survive but the live workers). Not thread-safe: the engine serializes every call.

The zygote preloads the data stack after it is ready (sandbox/zygote.py): a spare is asked for
only when the zygote answers at once (its first request, then once the preload is complete),
and a spare forked before the preload completed is replaced by one from the fuller zygote as
soon as the pool learns it completed."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import time
import uuid
from collections import OrderedDict
from typing import Any

from lambdas.executor import protocol
from lambdas.executor.host import procs
from lambdas.executor.host.channel import ChannelEnds, WorkerHandle, accept_credentials
from lambdas.executor.host.zygote_client import ZygoteClient
from lambdas.executor.sandbox import workspace
from lambdas.executor.settings import ExecutorSettings

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _workspace_name(session_id: str | None) -> str:
    if session_id is None:
        return "oneshot-" + uuid.uuid4().hex
    if _SAFE_ID.match(session_id) and not session_id.startswith("."):
        return session_id
    return "s-" + hashlib.sha256(session_id.encode()).hexdigest()[:32]


class WorkerPool:
    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.zygote: ZygoteClient | None = None
        self.workers: OrderedDict[str, WorkerHandle] = OrderedDict()
        # A worker forked ahead of need (fork + first-touch costs paid off the critical path);
        # `_spare_ends` holds its channel while the zygote's reply (its pid) is unread.
        self._spare: WorkerHandle | None = None
        self._spare_ends: ChannelEnds | None = None
        self._spare_preloaded = False  # forked from a zygote whose preload was complete
        # `procs.fork_count()` as read just before the last stray scan that found nothing, and
        # the worker forks confirmed since (each one raised that counter by exactly one).
        self._forks_at_clean_scan: int | None = None
        self._worker_forks_since_scan = 0

    # -- zygote --------------------------------------------------------------------------------

    def ensure_zygote(self) -> bool:
        """Start the zygote unless it is alive; True if this call started it."""
        if self.zygote is not None and self.zygote.alive():
            return False
        if self.zygote is not None:
            self._replace_zygote()
        self.zygote = ZygoteClient(self.settings)
        self.request_spare()
        return True

    def _replace_zygote(self) -> None:
        """The zygote died (user code killed it): drop it, its workers and its orphans."""
        self.drop_all_workers()
        if self.zygote is not None:
            self.zygote.kill()
            self.zygote = None
        self._kill_orphans()

    def shutdown(self) -> None:
        self.drop_all_workers()
        if self.zygote is not None:
            self.zygote.kill()
            self.zygote = None

    def reset_after_failure(self) -> None:
        with contextlib.suppress(Exception):
            self.drop_all_workers()
        if self.zygote is not None:
            with contextlib.suppress(Exception):
                self.zygote.kill()
            self.zygote = None

    def drop_all_workers(self) -> None:
        for worker in list(self.workers.values()):
            self._discard(worker)
        self.workers.clear()
        with contextlib.suppress(OSError, protocol.ProtocolError):
            self._collect_spare()
        if self._spare is not None:
            self._discard(self._spare)
        self._spare = None
        if self._spare_ends is not None:  # the zygote never answered: just close our ends
            WorkerHandle.unborn(self._spare_ends).close()
            self._spare_ends = None

    def environment_pids(self) -> list[int]:
        """Every process this environment legitimately keeps: zygote, workers, spare."""
        with contextlib.suppress(OSError, protocol.ProtocolError):
            self._collect_spare()
        pids = [worker.pid for worker in self.workers.values()]
        if self._spare is not None:
            pids.append(self._spare.pid)
        if self.zygote is not None:
            pids.append(self.zygote.pid)
        return pids

    # -- workers -------------------------------------------------------------------------------

    def _send_fork(self, warm: bool) -> ChannelEnds:
        assert self.zygote is not None
        parent_sock, child_sock = socket.socketpair()
        accept_credentials(parent_sock)  # before the worker exists: it is tagged from the start
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mirror_fd = -1
        try:
            mirror_fd = protocol.OutputMirror.create_fd()
            self.zygote.send(
                {"op": "fork", "warm": warm}, [child_sock.fileno(), out_w, err_w, mirror_fd]
            )
        except BaseException:
            WorkerHandle.unborn((parent_sock, out_r, err_r, mirror_fd)).close()
            raise
        finally:
            child_sock.close()
            os.close(out_w)
            os.close(err_w)
        return parent_sock, out_r, err_r, mirror_fd

    def request_spare(self) -> None:
        if not self.settings.LCI_PREFORK_WORKER or self.zygote is None:
            return
        with contextlib.suppress(OSError, protocol.ProtocolError):
            self.zygote.poll_events()
            self._drop_stale_spare()
            if self._spare is None and self._spare_ends is None and self.zygote.answers_at_once:
                self._spare_ends = self._send_fork(warm=True)

    def _drop_stale_spare(self) -> None:
        """A spare forked before the preload completed goes once the zygote has it all."""
        assert self.zygote is not None
        if self._spare is not None and not self._spare_preloaded and self.zygote.preloaded:
            spare, self._spare = self._spare, None
            self._discard(spare)

    def wait_until_preloaded(self, timeout_s: float) -> bool:
        """Wait for the zygote's preload to complete (tests, benchmarks), then have a spare
        forked from it; False if it did not complete within `timeout_s`."""
        if self.zygote is None:
            return False
        try:
            self._collect_spare()
            done = self.zygote.wait_preloaded(timeout_s)
        except (OSError, protocol.ProtocolError):
            return False  # the zygote is gone: the next invocation starts a new one
        self.request_spare()
        return done

    def _collect_spare(self) -> None:
        if self.zygote is None or not self.zygote.pending:
            return
        replies = self.zygote.collect()
        ends, self._spare_ends = self._spare_ends, None
        if ends is not None and replies:
            self._spare = WorkerHandle.forked(ends, replies[-1].get("pid"))
            self._spare_preloaded = replies[-1].get("preloaded") is True
            self._worker_forks_since_scan += 1

    def _fork_worker(self, session_id: str | None) -> WorkerHandle:
        assert self.zygote is not None
        self._collect_spare()
        self.zygote.poll_events()
        self._drop_stale_spare()  # a fork from the fuller zygote is worth its few ms
        worker, self._spare = self._spare, None
        if worker is None or procs.is_zombie_or_gone(worker.pid):
            if worker is not None:
                self._discard(worker)
            ends = self._send_fork(warm=False)
            worker = WorkerHandle.forked(ends, self.zygote.collect()[0].get("pid"))
            self._worker_forks_since_scan += 1
        worker.session_id = session_id
        name = _workspace_name(session_id)
        worker.workspace = os.path.join(self.settings.root, "workspaces", name)
        return worker

    def worker_for(self, session_id: str | None) -> WorkerHandle:
        """The session's live worker, or a new one forked for it or for a one-shot run."""
        if session_id is not None:
            worker = self.workers.get(session_id)
            if worker is not None and worker.exited():
                # Ended between runs by something its last cell left running (a thread, a
                # timer): this run gets a new worker, which restores the committed state.
                self.release(worker, want_status=False)
            elif worker is not None:
                self.workers.move_to_end(session_id)
                return worker
        try:
            worker = self._fork_worker(session_id)
        except (OSError, protocol.ProtocolError):
            # The zygote is gone or wedged: start a fresh environment once.
            assert self.zygote is not None
            self.drop_all_workers()
            self.zygote.kill()
            self.zygote = None
            self.ensure_zygote()
            worker = self._fork_worker(session_id)
        if session_id is not None:
            self.workers[session_id] = worker
        return worker

    def release(self, worker: WorkerHandle, want_status: bool) -> list[Any] | None:
        """A worker whose run was one-shot or went wrong leaves the pool, killed with its tree;
        with `want_status`, its wait status as the zygote reaped it."""
        self.workers.pop(worker.session_id or "", None)
        return self._discard(worker, want_status=want_status)

    def evict_over_capacity(self) -> None:
        """Least recently used session workers beyond LCI_MAX_WORKERS go, after the run that
        added one (so its first cell does not share the CPU with their teardown); their
        sessions restore from the snapshot when they come back."""
        while len(self.workers) > self.settings.LCI_MAX_WORKERS:
            _, evicted = self.workers.popitem(last=False)
            self._discard(evicted, idle=True)

    def clean_up_after_run(self) -> None:
        """Kill what the run left behind (a zygote that stopped answering is replaced on the
        next invocation)."""
        try:
            self._kill_strays()
        except (OSError, protocol.ProtocolError):
            logger.warning("the zygote stopped answering; the next invocation starts a new one")
            if self.zygote is not None:
                self.zygote.process.kill()

    # -- cleanup -------------------------------------------------------------------------------

    def _kill_tree(self, worker: WorkerHandle) -> None:
        def collect() -> list[int]:
            return [worker.pid, *procs.descendants_of(worker.pid)]

        procs.kill_processes(collect)

    def _discard(
        self, worker: WorkerHandle, want_status: bool = False, idle: bool = False
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
        if want_status and self.zygote is not None:
            with contextlib.suppress(OSError, protocol.ProtocolError):
                self._collect_spare()
            status = self.zygote.reap(worker.pid).get(str(worker.pid))
        if worker.session_id is None:
            workspace.remove_tree(worker.workspace)
        return status

    def _kill_strays(self) -> None:
        """After every run: nothing user code started may survive but the live workers."""
        assert self.zygote is not None
        if not self.zygote.alive():  # user code killed it: its orphans went elsewhere
            self._replace_zygote()
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
        zygote_pid = self.zygote.pid
        live = {worker.pid for worker in self.workers.values()}
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
            self.zygote.reap()

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
