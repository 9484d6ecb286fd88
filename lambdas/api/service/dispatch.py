"""Dispatch: the sync window (at most 25 s, under API Gateway's 29 s) holds on every path.

The running execution is recorded before the executor is invoked, whatever the path, so a run
whose answer never reaches its caller still exists (and is reported lost if its process dies).
Then:
- `wait: false`: 202 at once; the background port runs it.
- an in-process background (the local stack, tests): the run goes to a thread and the caller
  waits for it up to the window, then gets 202 — a slow cold start or state restore included;
- on Lambda the API function cannot answer while it still waits for an invoke, so a run is
  invoked inline only when its timeout plus a cold-start and transfer allowance fits the window
  (`limits.SYNC_INLINE_ALLOWANCE_MS`); any other run goes to the background invocation and the
  caller waits for its record up to the window. The inline invoke runs on a thread of this
  invocation all the same, so an executor that hangs past that allowance still lets the caller
  have 202 when the window closes (the run finishes behind it while this environment lives).
An invoke Lambda refuses before anything ran (throttled, over its request limit) answers a
caller still waiting with 429 / 413 and leaves no trace; after a 202 it is the run's error.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from lambdas.api.models import ExecuteAccepted
from lambdas.api.ports import BackgroundHandle
from lambdas.api.service.common import Deps
from lambdas.api.service.records import ExecutionRecords, Job
from lambdas.api.service.run import RunService, SyncCaller
from lambdas.shared import limits
from lambdas.shared.models import ExecutionResult

# A run that refused its caller at the very moment the window closed delivers its error within
# this (it only has to give the lease back).
_REFUSAL_DELIVERY_SECONDS = 30.0


@dataclass
class ExecuteOutcome:
    """200 with `result`, or 202 with `accepted`."""

    result: ExecutionResult | None = None
    accepted: ExecuteAccepted | None = None


class _InlineRun:
    """A `BackgroundHandle` for a run invoked inline on one of the dispatcher's threads."""

    def __init__(self, future: Future[ExecutionResult]) -> None:
        self._future = future

    def wait(self, timeout_s: float) -> ExecutionResult | None:
        try:
            return self._future.result(timeout=max(0.0, timeout_s))
        except FutureTimeout:
            return None


class Dispatcher:
    def __init__(self, deps: Deps, records: ExecutionRecords, runs: RunService) -> None:
        self._deps = deps
        self._records = records
        self._runs = runs
        self._inline = ThreadPoolExecutor(max_workers=256, thread_name_prefix="lci-inline")

    def stores_job(self, job: Job) -> bool:
        """Whether `job` runs in another invocation, which reads it from its running record
        (`ExecutionRecords.start(with_job=...)`)."""
        return self._deps.background.runs_remotely and self._in_background(job)

    def _in_background(self, job: Job) -> bool:
        remote = self._deps.background.runs_remotely
        return not job.wait or (remote and not self._fits_inline(job))

    def start(self, job: Job) -> ExecuteOutcome:
        """Dispatch `job`, whose running record `ExecutionRecords.start` wrote."""
        window_s = self._deps.settings.SYNC_WAIT_MS / 1000
        background = self._deps.background
        remote = background.runs_remotely
        accepted = ExecuteOutcome(
            accepted=ExecuteAccepted(execution_id=job.execution_id, session_id=job.session_id)
        )
        if self._in_background(job):
            try:
                handle = background.submit(
                    job.execution_id,
                    run=lambda: self._runs.run_job(job),
                    poll=lambda: self._records.finished_result(job.execution_id),
                )
            except Exception:
                self._records.abandon(job)  # nothing will run it: no lease, record or claim
                raise
            result = handle.wait(window_s) if job.wait else None
            return ExecuteOutcome(result=result) if result is not None else accepted

        caller = SyncCaller()

        def run() -> ExecutionResult:
            return self._runs.run_job(job, caller=caller)

        running: BackgroundHandle = (
            _InlineRun(self._inline.submit(run))
            if remote
            else background.submit(
                job.execution_id,
                run=run,
                poll=lambda: self._records.finished_result(job.execution_id),
            )
        )
        result = running.wait(window_s)
        if result is not None:
            return ExecuteOutcome(result=result)
        if caller.accept():
            return accepted
        # The run refused this caller just now (429 / 413): its error is on its way.
        result = running.wait(_REFUSAL_DELIVERY_SECONDS)
        if result is not None:
            return ExecuteOutcome(result=result)
        return accepted

    def _fits_inline(self, job: Job) -> bool:
        window_ms = self._deps.settings.SYNC_WAIT_MS
        return job.timeout_ms + limits.SYNC_INLINE_ALLOWANCE_MS <= window_ms
