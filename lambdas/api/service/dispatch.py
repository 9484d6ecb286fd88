"""Dispatch: run inline when `timeout_ms` + a margin fits the sync window (fast path), else hand
the run to the background port and wait up to the window (202 after it; `wait: false` → 202 at
once). Either way a sync call answers within the window, whatever the executor does."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from lambdas.api.models import ExecuteAccepted
from lambdas.api.ports import ConditionFailed
from lambdas.api.service.common import Deps, execution_prefix, store_json
from lambdas.api.service.records import ExecutionRecords, Job
from lambdas.api.service.run import RunService
from lambdas.shared import limits
from lambdas.shared.models import ExecutionResult, ExecutionStatus


@dataclass
class ExecuteOutcome:
    """200 with `result`, or 202 with `accepted`."""

    result: ExecutionResult | None = None
    accepted: ExecuteAccepted | None = None


class Dispatcher:
    def __init__(self, deps: Deps, records: ExecutionRecords, runs: RunService) -> None:
        self._deps = deps
        self._records = records
        self._runs = runs
        self._inline = ThreadPoolExecutor(max_workers=256, thread_name_prefix="lci-inline")

    def start(self, job: Job) -> ExecuteOutcome:
        job.created_at = self._deps.now()
        window_ms = self._deps.settings.SYNC_WAIT_MS
        if job.wait and job.timeout_ms + limits.SYNC_FAST_PATH_MARGIN_MS <= window_ms:
            # Fast path: the run fits in the window, so it is invoked inline and its record is
            # written once, when it is finished (no client knows its id before that) — unless
            # an Idempotency-Key lets a retry find it meanwhile: then it is visible as running.
            if job.idempotency_key_hash:
                self.put_running(job, with_job=False)
            # On a thread, so a run that outlives the window (an executor that hangs) still
            # answers 202 when the window closes and finishes behind it.
            inline = self._inline.submit(self._runs.run_job, job, raise_throttled=True)
            try:
                return ExecuteOutcome(result=inline.result(timeout=window_ms / 1000))
            except FutureTimeout:
                self.put_running(job, with_job=False, only_if_absent=True)
                return ExecuteOutcome(
                    accepted=ExecuteAccepted(
                        execution_id=job.execution_id, session_id=job.session_id
                    )
                )

        remote = self._deps.background.runs_remotely
        if remote or not job.wait:
            # The background runner (another invocation) or the client (it gets the id at once)
            # needs the record before the run starts.
            self.put_running(job, with_job=remote)
        handle = self._deps.background.submit(
            job.execution_id,
            run=lambda: self._runs.run_job(job),
            poll=lambda: self._records.finished_result(job.execution_id),
        )
        result = handle.wait(window_ms / 1000) if job.wait else None
        if result is not None:
            return ExecuteOutcome(result=result)
        if job.wait and not remote:
            # The run outlived the window: make it visible as running, unless it has just
            # finished and written its final record (the put is conditional).
            self.put_running(job, with_job=False, only_if_absent=True)
        return ExecuteOutcome(
            accepted=ExecuteAccepted(execution_id=job.execution_id, session_id=job.session_id)
        )

    def put_running(self, job: Job, *, with_job: bool, only_if_absent: bool = False) -> None:
        record = self._records.execution_record(job, ExecutionStatus.RUNNING)
        if with_job:
            stored_job = store_json(
                self._deps,
                job.model_dump(mode="json"),
                execution_prefix(job.execution_id) + "job.json",
            )
            record = record.model_copy(update={"job": stored_job})
        try:
            if only_if_absent:
                with contextlib.suppress(ConditionFailed):
                    self._deps.table.create_execution(record)
            else:
                self._deps.table.put_execution(record)
        except Exception:
            self._records.release(job)
            raise
