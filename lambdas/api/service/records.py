"""Execution records and the session lease: the record of a run (running, finished or lost),
and giving a lease back without committing (what a run that never started leaves behind)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from cachetools import TTLCache
from pydantic import BaseModel, Field

from lambdas.api.domain import (
    ExecutionRecord,
    IdempotencyRecord,
    LeaseClaim,
    SessionCommit,
    SessionRecord,
)
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


SESSION_VIEWS = 10_000  # sessions whose last committed state one process remembers
SESSION_VIEW_SECONDS = 3600.0


class SessionViews:
    """What this process last knew of its sessions (count, version, files flag), so a warm run
    takes its lease without reading the session first: the lease's condition checks that the
    session is still so (`LeaseClaim`), and a stale view costs one read and a retry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: TTLCache[str, SessionRecord] = TTLCache(
            maxsize=SESSION_VIEWS, ttl=SESSION_VIEW_SECONDS
        )

    def get(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            return self._views.get(session_id)

    def remember(self, session: SessionRecord) -> None:
        with self._lock:
            self._views[session.session_id] = session

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._views.pop(session_id, None)

    def committed(self, job: Job, commit: SessionCommit) -> None:
        """The run of `job` committed `commit`: the view it was built from moves on."""
        assert job.session_id and job.execution_count is not None
        with self._lock:
            view = self._views.get(job.session_id)
            if view is None or (view.execution_count, view.state_version) != (
                job.execution_count - 1,
                job.state_version,
            ):
                self._views.pop(job.session_id, None)
                return
            changes = {
                name: getattr(commit, name)
                for name in ("execution_count", "state_version", "variables", "has_files")
                if getattr(commit, name) is not None
            }
            self._views[job.session_id] = view.model_copy(
                update={**changes, "expires_at": commit.expires_at, "lease_id": None,
                        "lease_expires_at": None}
            )  # fmt: skip


class ExecutionRecords:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self.sessions = SessionViews()

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

    def start(
        self,
        job: Job,
        *,
        with_job: bool,
        lease: LeaseClaim | None = None,
        claim: IdempotencyRecord | None = None,
    ) -> None:
        """Record the execution as running (with its job for a background invocation), taking
        the session `lease` and the Idempotency-Key `claim` in the same write: all or nothing
        (`Table.start_run`'s LeaseRefused / IdempotencyTaken)."""
        record = self.execution_record(job, ExecutionStatus.RUNNING)
        if with_job:
            stored_job = store_json(
                self._deps,
                job.model_dump(mode="json"),
                execution_prefix(job.execution_id) + "job.json",
            )
            record = record.model_copy(update={"job": stored_job})
        self._deps.table.start_run(record, lease=lease, claim=claim)

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
            self.sessions.forget(job.session_id)
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
