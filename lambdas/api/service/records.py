"""Execution records and the session lease: the record of a run (running, finished or lost),
and giving a lease back without committing (what a run that never started leaves behind)."""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import BaseModel, Field

from lambdas.api.ports import ConditionFailed, SessionCommit
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

# Execution record attribute: S3 keys of the result parts its response links, by part.
SPILLED_ATTRIBUTE = "spilled"


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

    def execution_item(self, job: Job, status: ExecutionStatus) -> dict[str, Any]:
        item: dict[str, Any] = {
            "execution_id": job.execution_id,
            "principal": job.principal,
            "status": status.value,
            "created_at": iso(job.created_at),
            "ttl": int(job.created_at + EXECUTION_RECORD_TTL_SECONDS),
        }
        if status == ExecutionStatus.RUNNING:
            item["lost_after"] = int(
                job.created_at
                + job.timeout_ms / 1000
                + limits.SESSION_LEASE_GRACE_SECONDS
                + limits.LOST_RUN_AFTER_SECONDS
            )
        if job.session_id:
            item["session_id"] = job.session_id
        return item

    def put_running(self, job: Job, *, with_job: bool) -> None:
        """Record the execution as running (with its job for a background invocation); if that
        fails the run never starts: the lease is given back and the error raised."""
        record = self.execution_item(job, ExecutionStatus.RUNNING)
        try:
            if with_job:
                store_json(
                    self._deps,
                    record,
                    "job",
                    job.model_dump(mode="json"),
                    execution_prefix(job.execution_id) + "job.json",
                )
            self._deps.table.put_execution(job.execution_id, record)
        except Exception:
            self.release(job)
            raise

    def finished_result(self, execution_id: str) -> ExecutionResult | None:
        record = self._deps.table.get_execution(execution_id, consistent=True)
        if not record or record.get("status") == ExecutionStatus.RUNNING.value:
            return None
        return self.result_of(record)

    def is_lost(self, record: dict[str, Any]) -> bool:
        lost_after = record.get("lost_after")
        return lost_after is not None and self._deps.now() > lost_after

    def result_of(self, record: dict[str, Any]) -> ExecutionResult:
        if record.get("status") == ExecutionStatus.RUNNING.value:
            if self.is_lost(record):
                return ExecutionResult(
                    execution_id=record["execution_id"],
                    session_id=record.get("session_id"),
                    status=ExecutionStatus.ERROR,
                    success=False,
                    error=ExecutionError(
                        name="ExecutionLost",
                        value="the run was interrupted before it finished; its result is lost",
                    ),
                )
            return ExecutionResult.running(record["execution_id"], record.get("session_id"))
        data = load_json(self._deps, record, "result")
        result = ExecutionResult.model_validate(data)
        self.link_spilled(result, record.get(SPILLED_ATTRIBUTE) or {})
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
