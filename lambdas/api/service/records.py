"""Execution records and the session lease: the record of a run (running, finished or lost),
and giving a lease back without committing (what a run that never started leaves behind)."""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import BaseModel, Field

from lambdas.api.domain import ExecutionRecord, SessionCommit
from lambdas.api.ports import ConditionFailed
from lambdas.api.service.common import (
    EXECUTION_RECORD_TTL_SECONDS,
    Deps,
    execution_prefix,
    iso,
    load_json,
    store_json,
)
from lambdas.shared import limits
from lambdas.shared.models import ExecutionError, ExecutionResult, ExecutionStatus, InlineFile


class Job(BaseModel):
    """Everything needed to run one execution; stored in its record for the background runner."""

    execution_id: str
    principal: str
    session_id: str | None = None
    lease_id: str | None = None
    code: str
    timeout_ms: int
    env: dict[str, str] = Field(default_factory=dict)
    packages: list[str] = Field(default_factory=list)
    execution_count: int | None = None
    state_version: int = 0
    session_ttl_seconds: int = limits.DEFAULT_SESSION_TTL_SECONDS
    inline_files: list[InlineFile] = Field(default_factory=list)
    wait: bool = True
    idempotency_key_hash: str | None = None
    created_at: float = 0.0
    has_files: bool = True  # the session may have files (False: none was ever written)


class ExecutionRecords:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    def execution_record(self, job: Job, status: ExecutionStatus) -> ExecutionRecord:
        lost_after = None
        if status == ExecutionStatus.RUNNING:
            lost_after = int(
                job.created_at
                + job.timeout_ms / 1000
                + limits.SESSION_LEASE_GRACE_SECONDS
                + limits.LOST_RUN_AFTER_SECONDS
            )
        return ExecutionRecord(
            execution_id=job.execution_id,
            principal=job.principal,
            status=status,
            created_at=iso(job.created_at),
            ttl=int(job.created_at + EXECUTION_RECORD_TTL_SECONDS),
            session_id=job.session_id,
            lost_after=lost_after,
        )

    def put_running(self, job: Job, *, with_job: bool) -> None:
        """Record the execution as running (with its job for a background invocation); if that
        fails the run never starts: the lease is given back and the error raised."""
        record = self.execution_record(job, ExecutionStatus.RUNNING)
        try:
            if with_job:
                stored_job = store_json(
                    self._deps,
                    job.model_dump(mode="json"),
                    execution_prefix(job.execution_id) + "job.json",
                )
                record = record.model_copy(update={"job": stored_job})
            self._deps.table.put_execution(record)
        except Exception:
            self.release(job)
            raise

    def finished_result(self, execution_id: str) -> ExecutionResult | None:
        record = self._deps.table.get_execution(execution_id, consistent=True)
        if not record or record.is_running():
            return None
        return self.result_of(record)

    def result_of(self, record: ExecutionRecord) -> ExecutionResult:
        if record.is_running():
            if record.is_lost(self._deps.now()):
                return ExecutionResult(
                    execution_id=record.execution_id,
                    session_id=record.session_id,
                    status=ExecutionStatus.ERROR,
                    success=False,
                    error=ExecutionError(
                        name="ExecutionLost",
                        value="the run was interrupted before it finished; its result is lost",
                    ),
                )
            return ExecutionResult.running(record.execution_id, record.session_id)
        result = ExecutionResult.model_validate(load_json(self._deps, record.result))
        self.link_spilled(result, record.spilled or {})
        return result

    def link_spilled(self, result: ExecutionResult, keys: dict[str, str]) -> None:
        """Presign (afresh) the links to the parts of `result` stored whole."""
        for part, key in keys.items():
            url = self._deps.blobs.presigned_get(key, limits.PRESIGNED_DOWNLOAD_EXPIRES_SECONDS)
            setattr(result, f"{part}_url", url)

    def abandon(self, job: Job) -> None:
        """Undo a run that never started."""
        self.release(job)
        self._deps.table.delete_execution(job.execution_id)
        if job.idempotency_key_hash:
            self._deps.table.delete_idempotency(job.principal, job.idempotency_key_hash)

    def release(self, job: Job) -> None:
        """Give the lease back without committing anything."""
        if job.session_id and job.lease_id:
            with contextlib.suppress(ConditionFailed):
                # The run may have written files before it failed: list them next time.
                self._deps.table.finish_run(self.session_commit(job, has_files=True))

    def session_commit(self, job: Job, **committed: Any) -> SessionCommit:
        assert job.session_id and job.lease_id
        now = self._deps.now()
        return SessionCommit(
            session_id=job.session_id,
            lease_id=job.lease_id,
            last_used_at=iso(now),
            expires_at=int(now + job.session_ttl_seconds),
            **committed,
        )
