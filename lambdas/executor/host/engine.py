"""The trusted side of the executor, as one `Engine` per execution environment.

It validates the invocation, hands it to the session's worker (pool.py forks one from the
zygote when needed), runs the exchange over the worker's channel (channel.py: wall clock,
capped fd output, partial output on timeout) watched by a `RunMonitor` (live.py: live output,
interrupts, the usage receipt), turns whatever happened into an `ExecutorResponse` dict
(results.py) and has the pool kill anything user code left behind.
It never unpickles and never holds state bytes.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import threading
import time
from typing import Any

from pydantic import ValidationError

from lambdas.executor import protocol
from lambdas.executor.host import procs, protections, results
from lambdas.executor.host.channel import OutcomeKind, WorkerHandle, exchange, needs_prepare
from lambdas.executor.host.live import PresignedS3Transport, RunMonitor
from lambdas.executor.host.pool import WorkerPool
from lambdas.executor.host.zygote_client import EnvironmentStartError
from lambdas.executor.settings import ExecutorSettings
from lambdas.shared.models import ExecutionUsage, ExecutorInvocation

logger = logging.getLogger(__name__)

# A dying worker's channel ends a moment before its exit is visible (files close first).
HUNG_UP_WAIT_S = 0.05


def _invocation_json(inv: ExecutorInvocation) -> str:
    """The invocation as the worker gets it, serialized by pydantic-core (faster than json.dumps
    of its dict; json escapes what it cannot encode, such as lone surrogates in the code). The
    live channel is the parent's alone (host/live.py): the worker never sees it."""
    parent_only = {"live"}
    try:
        return inv.model_dump_json(exclude=parent_only)
    except ValueError:
        return json.dumps(inv.model_dump(mode="json", exclude=parent_only))


class Engine:
    """One execution environment's executor. Thread-safe: invocations are serialized."""

    def __init__(self, settings: ExecutorSettings | None = None) -> None:
        self.settings = settings or ExecutorSettings()
        self._lock = threading.Lock()
        self._pool = WorkerPool(self.settings)
        self._package_cache = os.path.join(self.settings.root, "packages")
        self._run_prefix = secrets.token_hex(4) + "-"
        self._run_numbers = itertools.count(1)
        procs.set_dumpable(False)  # children cannot read our environ or memory
        if self.settings.LCI_OWN_PROCESS:
            procs.set_child_subreaper()

    # -- lifecycle -----------------------------------------------------------------------------

    def warm_up(self) -> bool:
        """Start the zygote now; True if this call started it."""
        with self._lock:
            return self._ensure_zygote()

    def _ensure_zygote(self) -> bool:
        return self._pool.ensure_zygote()

    def wait_until_preloaded(self, timeout_s: float = 60.0) -> bool:
        """Wait until the zygote has its data stack preloaded and its memory shaped (it is
        ready to fork before that; tests and benchmarks compare both); False on timeout."""
        with self._lock:
            return self._pool.wait_until_preloaded(timeout_s)

    @property
    def preload_report(self) -> dict[str, Any] | None:
        """What the zygote said when its preload completed (None until then)."""
        zygote = self._pool.zygote
        return zygote.preload_report if zygote is not None else None

    def shutdown(self) -> None:
        with self._lock:
            self._pool.shutdown()

    @property
    def zygote_pid(self) -> int | None:
        zygote = self._pool.zygote
        return zygote.pid if zygote is not None else None

    @property
    def zygote_huge_pages(self) -> int | None:
        zygote = self._pool.zygote
        return zygote.huge_pages if zygote is not None else None

    def worker_pids(self) -> dict[str, int]:
        """Live session workers by session id (diagnostics and tests)."""
        return {session_id: worker.pid for session_id, worker in self._pool.workers.items()}

    def environment_pids(self) -> list[int]:
        """Every process this environment legitimately keeps: zygote, workers, spare."""
        with self._lock:
            return self._pool.environment_pids()

    # -- invocation ----------------------------------------------------------------------------

    def invoke(self, event: Any, budget_ms: int | None = None) -> dict[str, Any]:
        """Run one invocation. `budget_ms` caps the whole call (on Lambda: the time left before
        the function itself would be killed), so a late cell still gets a `timeout` result."""
        response = self._invoke(event, budget_ms)
        # A run that never reached a worker used nothing; every result carries a receipt.
        if "usage" not in response["result"]:
            response["result"]["usage"] = ExecutionUsage().model_dump()
        return response

    def _invoke(self, event: Any, budget_ms: int | None) -> dict[str, Any]:
        started = time.perf_counter()
        hard_deadline = (
            time.monotonic() + budget_ms / 1000 if budget_ms is not None else float("inf")
        )
        try:
            inv = ExecutorInvocation.model_validate(event)
        except ValidationError as exc:
            return results.invalid_invocation(event, exc, started)
        if inv.diagnostics:  # which protections hold here; no code runs (protections.py)
            return results.diagnostics_response(inv, protections.report(self.zygote_huge_pages))
        with self._lock:
            try:
                return self._invoke_locked(inv, started, hard_deadline)
            except EnvironmentStartError as exc:
                return self._failure(inv, "EnvironmentStartFailed", str(exc), started)
            except Exception:
                # A bug or a broken environment: answer cleanly, start from scratch next time.
                logger.exception("executor invocation failed")
                self._pool.reset_after_failure()
                return self._failure(
                    inv, "ExecutorError", "the execution environment failed; retry", started
                )

    @staticmethod
    def _failure(
        inv: ExecutorInvocation, name: str, message: str, started: float
    ) -> dict[str, Any]:
        return results.failure_response(inv.execution_id, inv.session_id, name, message, started)

    def _worker_for(self, session_id: str | None) -> WorkerHandle:
        return self._pool.worker_for(session_id)

    def _invoke_locked(
        self, inv: ExecutorInvocation, started: float, hard_deadline: float
    ) -> dict[str, Any]:
        cold_start = self._ensure_zygote()
        worker = self._worker_for(inv.session_id)
        prepares = needs_prepare(inv)
        # Unique per run (a frame of an earlier run is told apart by it); the code of the run
        # sees it anyway, so it need not be unguessable.
        run_id = f"{self._run_prefix}{next(self._run_numbers)}"
        payload = protocol.encode_run_request(
            _invocation_json(inv),
            one_shot=inv.session_id is None,
            workspace=worker.workspace,
            package_cache=self._package_cache,
            announce_run=prepares,
            run=run_id,
        )
        monitor = RunMonitor(
            worker.pid,
            worker.mirror_fd,
            inv.limits.stream_bytes,
            PresignedS3Transport(inv.live) if inv.live is not None else None,
        )
        monitor.started()
        try:
            outcome = exchange(worker, inv, payload, hard_deadline, prepares, run_id, monitor)
        except BaseException:
            monitor.abandon()  # no upload or poll may outlive the invocation
            raise
        monitor.finish(outcome.out, outcome.err)
        response = results.respond(inv, worker.mirror_fd, outcome, started, cold_start)
        status = None
        if inv.session_id is None or outcome.kind != OutcomeKind.RESULT:
            crashed = outcome.kind == OutcomeKind.CRASHED
            # Alive after its channel ended: the status would only be our own kill.
            hung_up = crashed and not worker.exited(HUNG_UP_WAIT_S)
            status = self._pool.release(worker, want_status=crashed)
            if crashed:
                results.explain_crash(response, status, inv.limits.memory_mb, hung_up)
        monitor.apply(response, status)
        self._pool.clean_up_after_run()
        response["result"]["duration_ms"] = int((time.perf_counter() - started) * 1000)
        self._pool.evict_over_capacity()
        self._pool.request_spare()  # forks while the caller handles the response
        return response
