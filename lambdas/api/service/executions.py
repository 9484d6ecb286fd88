"""Executions: validation, idempotency, quota, session lease, the executor call, commit.

A session run: validate (400/413) → replay if the Idempotency-Key is known → quota (429) → take
the session lease with one conditional write (404 if missing/foreign/expired, 409 if held) →
claim the idempotency key → run inline when `timeout_ms` + a margin fits the sync window (fast
path), else hand it to the background port and wait up to the window (202 after it; `wait:
false` → 202 at once). After the executor returns, one transaction releases the lease, commits
state_version + 1 if the worker uploaded a snapshot, stores the notebook cell and the execution
record; a lease that is no longer ours commits nothing. Compute time is measured here, around
the executor call, never taken from the executor's report.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from lambdas.api.errors import (
    ExecutionNotFound,
    InvalidPath,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    SessionBusy,
)
from lambdas.api.models import ExecuteAccepted, ExecuteRequest, OneShotExecuteRequest
from lambdas.api.ports import ConditionFailed, SessionCommit
from lambdas.api.service.common import (
    EXECUTION_RECORD_TTL_SECONDS,
    IDEMPOTENCY_TTL_SECONDS,
    Deps,
    execution_files_prefix,
    execution_prefix,
    iso,
    load_json,
    new_id,
    notebook_cell_key,
    session_files_prefix,
    state_key,
    store_json,
    validate_path,
)
from lambdas.api.service.packages import PackageService
from lambdas.api.service.sessions import SessionService
from lambdas.api.service.usage import UsageService
from lambdas.shared import limits
from lambdas.shared.executor_responses import ExecutorFailure, failed_response
from lambdas.shared.models import (
    ExecutionError,
    ExecutionResult,
    ExecutionStatus,
    ExecutorInvocation,
    ExecutorResponse,
    FilesTransfer,
    InlineFile,
    ResourceLimits,
    SessionFileRef,
    StateTransfer,
    WheelhouseAccess,
)

logger = logging.getLogger(__name__)

_CUT_SHORT = {ExecutionStatus.TIMEOUT, ExecutionStatus.MEMORY_EXCEEDED}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UPLOAD_EXPIRY_MARGIN_S = 120


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


@dataclass
class ExecuteOutcome:
    """200 with `result`, or 202 with `accepted`."""

    result: ExecutionResult | None = None
    accepted: ExecuteAccepted | None = None


class ExecutionService:
    def __init__(
        self,
        deps: Deps,
        sessions: SessionService,
        usage: UsageService,
        packages: PackageService,
    ) -> None:
        self._deps = deps
        self._sessions = sessions
        self._usage = usage
        self._packages = packages
        # Independent storage calls of one request run side by side (boto3 clients are
        # thread-safe); this pool only ever waits on I/O.
        self._io = ThreadPoolExecutor(max_workers=16, thread_name_prefix="lci-io")

    # --- entry points ---------------------------------------------------------------------------

    def execute_in_session(
        self,
        principal: str,
        session_id: str,
        request: ExecuteRequest,
        idempotency_key: str | None,
    ) -> ExecuteOutcome:
        timeout_ms, pinned = self._validate(request)
        key_hash, request_hash = self._idempotency_hashes(
            principal, idempotency_key, session_id, request
        )
        if key_hash:
            replay = self._replay(principal, key_hash, request_hash)
            if replay:
                return replay
        self._usage.check_quota(principal)
        now = self._deps.now()
        lease_id = new_id()
        lease_expires = int(now + timeout_ms / 1000 + limits.SESSION_LEASE_GRACE_SECONDS)
        try:
            # One conditional write checks existence, ownership, expiry and the lease.
            session = self._deps.table.acquire_lease(
                session_id, principal, lease_id, lease_expires, int(now)
            )
        except ConditionFailed:
            self._sessions.load(principal, session_id)  # missing, foreign or expired: 404
            raise SessionBusy() from None
        job = Job(
            execution_id=new_id(),
            principal=principal,
            session_id=session_id,
            lease_id=lease_id,
            code=request.code,
            timeout_ms=timeout_ms,
            env=request.env,
            packages=pinned,
            execution_count=int(session.get("execution_count", 0)) + 1,
            state_version=int(session.get("state_version", 0)),
            session_ttl_seconds=int(session.get("ttl_seconds", limits.DEFAULT_SESSION_TTL_SECONDS)),
            wait=request.wait,
            idempotency_key_hash=key_hash,
            has_files=bool(session.get("has_files", True)),
        )
        if key_hash:
            try:
                self._claim(principal, key_hash, request_hash, job.execution_id)
            except ConditionFailed:
                self._release(job)
                replay = self._replay(principal, key_hash, request_hash)
                if replay:
                    return replay
                raise SessionBusy() from None
        return self._start(job)

    def execute_one_shot(
        self, principal: str, request: OneShotExecuteRequest, idempotency_key: str | None
    ) -> ExecuteOutcome:
        timeout_ms, pinned = self._validate(request)
        inline_files = self._inline_files(request)
        key_hash, request_hash = self._idempotency_hashes(principal, idempotency_key, None, request)
        if key_hash:
            replay = self._replay(principal, key_hash, request_hash)
            if replay:
                return replay
        self._usage.check_quota(principal)
        job = Job(
            execution_id=new_id(),
            principal=principal,
            code=request.code,
            timeout_ms=timeout_ms,
            env=request.env,
            packages=pinned,
            inline_files=inline_files,
            wait=request.wait,
            idempotency_key_hash=key_hash,
        )
        if key_hash:
            try:
                self._claim(principal, key_hash, request_hash, job.execution_id)
            except ConditionFailed:
                replay = self._replay(principal, key_hash, request_hash)
                if replay:
                    return replay
                raise InvalidRequest("the Idempotency-Key is being used concurrently") from None
        return self._start(job)

    def get(self, principal: str, execution_id: str) -> ExecutionResult:
        record = self._deps.table.get_execution(execution_id)
        if not record or record.get("principal") != principal:
            raise ExecutionNotFound()
        return self._result_of(record)

    def run_stored_job(self, execution_id: str) -> ExecutionResult | None:
        """Background entry (LambdaBackground): run the job stored in the record, once."""
        record = self._deps.table.get_execution(execution_id)
        if not record or record.get("status") != ExecutionStatus.RUNNING.value:
            return None
        if self._is_lost(record):  # a delivery this late is not run: the client saw it lost
            return None
        job_data = load_json(self._deps, record, "job")
        if job_data is None or not self._deps.table.claim_job(execution_id):
            return None
        return self.run_job(Job.model_validate(job_data))

    # --- validation -----------------------------------------------------------------------------

    def _validate(self, request: ExecuteRequest) -> tuple[int, list[str]]:
        settings = self._deps.settings
        code_bytes = len(request.code.encode())
        if code_bytes > settings.MAX_CODE_BYTES:
            raise PayloadTooLarge(
                f"code is {code_bytes} bytes; the maximum is {settings.MAX_CODE_BYTES}",
                details={"max_bytes": settings.MAX_CODE_BYTES},
            )
        timeout_ms = request.timeout_ms or settings.DEFAULT_TIMEOUT_MS
        if timeout_ms > settings.MAX_TIMEOUT_MS:
            raise InvalidRequest(
                f"timeout_ms must be at most {settings.MAX_TIMEOUT_MS}",
                details={"max_timeout_ms": settings.MAX_TIMEOUT_MS},
            )
        for name, value in request.env.items():
            if not _ENV_NAME.match(name) or len(name) > 256:
                raise InvalidRequest(f"invalid environment variable name: {name[:64]!r}")
            if "\x00" in value or len(value.encode()) > limits.MAX_ENV_VALUE_BYTES:
                raise InvalidRequest(
                    f"environment variable {name} must be at most "
                    f"{limits.MAX_ENV_VALUE_BYTES} bytes without NUL characters"
                )
        pinned = self._packages.resolve(request.packages, request.requirements)
        return timeout_ms, pinned

    def _inline_files(self, request: OneShotExecuteRequest) -> list[InlineFile]:
        total = 0
        files: list[InlineFile] = []
        seen: set[str] = set()
        for item in request.files:
            try:
                path = validate_path(item.path)
            except InvalidPath as exc:
                raise InvalidPath(f"{exc.message}: {item.path[:100]!r}") from None
            if path in seen:
                raise InvalidPath(f"duplicate file path: {path[:100]!r}")
            seen.add(path)
            try:
                total += len(base64.b64decode(item.content_base64, validate=True))
            except (binascii.Error, ValueError):
                raise InvalidRequest(f"content_base64 of {path[:100]!r} is not base64") from None
            if total > limits.MAX_INLINE_FILES_BYTES:
                raise PayloadTooLarge(
                    f"inline files may total at most {limits.MAX_INLINE_FILES_BYTES} bytes; "
                    "upload larger files to a session",
                    details={"max_bytes": limits.MAX_INLINE_FILES_BYTES},
                )
            files.append(InlineFile(path=path, content_base64=item.content_base64))
        return files

    # --- idempotency ----------------------------------------------------------------------------

    def _idempotency_hashes(
        self,
        principal: str,
        key: str | None,
        session_id: str | None,
        request: ExecuteRequest,
    ) -> tuple[str | None, str]:
        if key is None:
            return None, ""
        if not key or len(key) > limits.MAX_IDEMPOTENCY_KEY_LENGTH:
            raise InvalidRequest(
                f"Idempotency-Key must be 1..{limits.MAX_IDEMPOTENCY_KEY_LENGTH} characters"
            )
        key_hash = hashlib.sha256(key.encode()).hexdigest()
        canonical = json.dumps(
            # `wait` only changes how the answer is delivered: a retry may flip it.
            {
                "session_id": session_id,
                "request": request.model_dump(mode="json", exclude={"wait"}),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return key_hash, hashlib.sha256(canonical.encode()).hexdigest()

    def _replay(self, principal: str, key_hash: str, request_hash: str) -> ExecuteOutcome | None:
        claim = self._deps.table.get_idempotency(principal, key_hash)
        if not claim or claim.get("ttl", 0) < self._deps.now():
            return None
        if claim.get("request_hash") != request_hash:
            raise InvalidRequest(
                "this Idempotency-Key was already used with a different request",
                details={"reason": "idempotency_key_reused"},
            )
        record = self._deps.table.get_execution(claim["execution_id"])
        if not record:
            return None
        result = self._result_of(record)
        if result.status == ExecutionStatus.RUNNING:
            return ExecuteOutcome(
                accepted=ExecuteAccepted(
                    execution_id=result.execution_id, session_id=result.session_id
                )
            )
        return ExecuteOutcome(result=result)

    def _claim(self, principal: str, key_hash: str, request_hash: str, execution_id: str) -> None:
        self._deps.table.claim_idempotency(
            principal,
            key_hash,
            {
                "execution_id": execution_id,
                "request_hash": request_hash,
                "ttl": int(self._deps.now() + IDEMPOTENCY_TTL_SECONDS),
            },
        )

    # --- dispatch -------------------------------------------------------------------------------

    def _start(self, job: Job) -> ExecuteOutcome:
        job.created_at = self._deps.now()
        window_ms = self._deps.settings.SYNC_WAIT_MS
        if job.wait and job.timeout_ms + limits.SYNC_FAST_PATH_MARGIN_MS <= window_ms:
            # Fast path: the run fits in the window, so it is invoked inline and its record is
            # written once, when it is finished (no client knows its id before that) — unless
            # an Idempotency-Key lets a retry find it meanwhile: then it is visible as running.
            if job.idempotency_key_hash:
                self._put_running(job, with_job=False)
            return ExecuteOutcome(result=self.run_job(job, raise_throttled=True))

        remote = self._deps.background.runs_remotely
        if remote or not job.wait:
            # The background runner (another invocation) or the client (it gets the id at once)
            # needs the record before the run starts.
            self._put_running(job, with_job=remote)
        handle = self._deps.background.submit(
            job.execution_id,
            run=lambda: self.run_job(job),
            poll=lambda: self._finished_result(job.execution_id),
        )
        result = handle.wait(window_ms / 1000) if job.wait else None
        if result is not None:
            return ExecuteOutcome(result=result)
        if job.wait and not remote:
            # The run outlived the window: make it visible as running, unless it has just
            # finished and written its final record (the put is conditional).
            self._put_running(job, with_job=False, only_if_absent=True)
        return ExecuteOutcome(
            accepted=ExecuteAccepted(execution_id=job.execution_id, session_id=job.session_id)
        )

    def _put_running(self, job: Job, *, with_job: bool, only_if_absent: bool = False) -> None:
        record = self._execution_item(job, ExecutionStatus.RUNNING)
        if with_job:
            store_json(
                self._deps,
                record,
                "job",
                job.model_dump(mode="json"),
                execution_prefix(job.execution_id) + "job.json",
            )
        try:
            if only_if_absent:
                with contextlib.suppress(ConditionFailed):
                    self._deps.table.create_execution(job.execution_id, record)
            else:
                self._deps.table.put_execution(job.execution_id, record)
        except Exception:
            self._release(job)
            raise

    def _execution_item(self, job: Job, status: ExecutionStatus) -> dict[str, Any]:
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

    def _finished_result(self, execution_id: str) -> ExecutionResult | None:
        record = self._deps.table.get_execution(execution_id, consistent=True)
        if not record or record.get("status") == ExecutionStatus.RUNNING.value:
            return None
        return self._result_of(record)

    def _is_lost(self, record: dict[str, Any]) -> bool:
        lost_after = record.get("lost_after")
        return lost_after is not None and self._deps.now() > lost_after

    def _result_of(self, record: dict[str, Any]) -> ExecutionResult:
        if record.get("status") == ExecutionStatus.RUNNING.value:
            if self._is_lost(record):
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
        return ExecutionResult.model_validate(data)

    def _abandon(self, job: Job) -> None:
        """Undo a run that never started."""
        self._release(job)
        self._deps.table.delete_execution(job.execution_id)
        if job.idempotency_key_hash:
            self._deps.table.delete_idempotency(job.principal, job.idempotency_key_hash)

    def _release(self, job: Job) -> None:
        """Give the lease back without committing anything."""
        if job.session_id and job.lease_id:
            with contextlib.suppress(ConditionFailed):
                # The run may have written files before it failed: list them next time.
                self._deps.table.finish_run(self._session_commit(job, has_files=True))

    def _session_commit(self, job: Job, **committed: Any) -> SessionCommit:
        assert job.session_id and job.lease_id
        now = self._deps.now()
        return SessionCommit(
            session_id=job.session_id,
            lease_id=job.lease_id,
            last_used_at=iso(now),
            expires_at=int(now + job.session_ttl_seconds),
            **committed,
        )

    # --- the run --------------------------------------------------------------------------------

    def run_job(self, job: Job, *, raise_throttled: bool = False) -> ExecutionResult:
        """Invoke the executor, commit, store the record and the notebook cell, count usage.

        Whatever goes wrong ends as an `error` result in the record, except a throttled
        executor when `raise_throttled` (a synchronous caller): then the run is undone without a
        trace (lease, record, idempotency claim) and RateLimited propagates as a 429.
        """
        started = time.monotonic()
        invocation: ExecutorInvocation | None = None
        unsynced_files = 0
        try:
            invocation, unsynced_files = self._invocation(job)
            response = self._deps.executor.invoke(invocation)
        except RateLimited as throttled:
            if raise_throttled:
                self._abandon(job)
                raise
            response = failed_response(invocation or _minimal_invocation(job), throttled.message)
        except Exception:
            logger.exception("executor call failed for execution %s", job.execution_id)
            response = failed_response(
                invocation or _minimal_invocation(job), "the execution could not be started"
            )
        compute_ms = int((time.monotonic() - started) * 1000)
        try:
            return self._complete(job, response, compute_ms, unsynced_files=unsynced_files)
        except Exception:
            logger.exception("storing execution %s failed", job.execution_id)
            result = failed_response(_minimal_invocation(job), "internal error").result
            try:
                self._release(job)
                self._commit(job, result, compute_ms, count_usage=False)
            except Exception:
                logger.exception("recording the failure of execution %s failed", job.execution_id)
            return result

    def _complete(
        self, job: Job, response: ExecutorResponse, compute_ms: int, *, unsynced_files: int = 0
    ) -> ExecutionResult:
        failed = isinstance(response, ExecutorFailure)
        result = response.result.model_copy(
            update={
                "execution_id": job.execution_id,
                "session_id": job.session_id,
                "success": response.result.status == ExecutionStatus.OK,
                "execution_count": None if failed else job.execution_count,
            }
        )
        if result.status == ExecutionStatus.RUNNING:  # a finished run cannot be "running"
            result.status, result.success = ExecutionStatus.ERROR, False
        self._presign_output_files(job, result)
        if unsynced_files:
            max_files = limits.MAX_FILES_PER_SESSION
            result.warnings.append(
                f"session files not synced to this run: {unsynced_files} (a session holds at "
                f"most {max_files} files; delete some to make room)"
            )
        if not job.session_id:
            self._commit(job, result, compute_ms)
            return result
        uploaded = response.state.uploaded and not failed
        # Conservative: a run that was cut short may have uploaded files it could not report.
        may_have_written = bool(result.files) or failed or result.status in _CUT_SHORT
        session = self._session_commit(
            job,
            execution_count=None if failed else job.execution_count,
            state_version=job.state_version + 1 if uploaded else None,
            variables=response.state.variables if uploaded else None,
            has_files=True if may_have_written else None,
        )
        try:
            self._commit(job, result, compute_ms, session=session, with_cell=not failed)
        except ConditionFailed:
            if may_have_written:
                self._deps.table.mark_has_files(job.session_id)
            result.warnings.append(
                "the session's lease expired before this run finished; its state was not saved"
            )
            self._commit(job, result, compute_ms, count_usage=False)
        return result

    def _commit(
        self,
        job: Job,
        result: ExecutionResult,
        compute_ms: int,
        *,
        session: SessionCommit | None = None,
        with_cell: bool = False,
        count_usage: bool = True,
    ) -> None:
        """Write the finished run: record and, for a session, its commit and notebook cell in
        one transaction; and count its usage (`count_usage=False` when a retry of this write
        follows a first attempt that counted it already)."""
        now = self._deps.now()
        execution = self._execution_item(job, result.status)
        execution.update(finished_at=iso(now), compute_ms=compute_ms)
        store_json(
            self._deps,
            execution,
            "result",
            result.model_dump(mode="json"),
            execution_prefix(job.execution_id) + "result.json",
        )
        cell = self._cell(job, result) if with_cell else None
        # Usage is its own item (see DynamoTable.commit_run): written alongside, awaited.
        counted = (
            self._io.submit(self._usage.record, job.principal, compute_ms) if count_usage else None
        )
        try:
            self._deps.table.commit_run(
                execution_id=job.execution_id, execution=execution, session=session, cell=cell
            )
        finally:
            if counted is not None:
                try:
                    counted.result()
                except Exception:  # the run's result matters more than its accounting
                    logger.exception("counting usage of execution %s failed", job.execution_id)

    def _presign_output_files(self, job: Job, result: ExecutionResult) -> None:
        prefix = (
            session_files_prefix(job.session_id)
            if job.session_id
            else execution_files_prefix(job.execution_id)
        )
        kept = []
        for file in result.files:
            try:
                path = validate_path(file.path)
            except InvalidPath:
                result.warnings.append("an output file with an invalid path was ignored")
                continue
            file.path = path
            file.download_url = self._deps.blobs.presigned_get(
                prefix + path, limits.PRESIGNED_DOWNLOAD_EXPIRES_SECONDS
            )
            kept.append(file)
        result.files = kept

    def _cell(self, job: Job, result: ExecutionResult) -> tuple[str, int, dict[str, Any]]:
        assert job.session_id and job.execution_count is not None
        now = self._deps.now()
        attributes: dict[str, Any] = {
            "execution_id": job.execution_id,
            "execution_count": job.execution_count,
            "code": job.code,
            "created_at": iso(now),
            # Cells outlive the session item by a margin; they are deleted with the session.
            "ttl": int(now + job.session_ttl_seconds + limits.MAX_SESSION_TTL_SECONDS),
        }
        store_json(
            self._deps,
            attributes,
            "outputs",
            result.outputs,
            notebook_cell_key(job.session_id, job.execution_count),
        )
        return job.session_id, job.execution_count, attributes

    def _invocation(self, job: Job) -> tuple[ExecutorInvocation, int]:
        """The executor's invocation, and how many session files were left out of it (cap)."""
        settings = self._deps.settings
        blobs = self._deps.blobs
        upload_expiry = job.timeout_ms // 1000 + _UPLOAD_EXPIRY_MARGIN_S
        download_expiry = limits.PRESIGNED_DOWNLOAD_EXPIRES_SECONDS
        state: StateTransfer | None = None
        if job.session_id:
            version = job.state_version
            next_key = state_key(job.session_id, version + 1)
            state = StateTransfer(
                version=version,
                download_url=(
                    blobs.presigned_get(state_key(job.session_id, version), download_expiry)
                    if version > 0
                    else None
                ),
                upload=blobs.presigned_post(
                    key_prefix=next_key,
                    exact_key=next_key,
                    max_bytes=limits.MAX_STATE_BYTES,
                    expires_in=upload_expiry,
                ),
                upload_key=next_key,
            )
            prefix = session_files_prefix(job.session_id)
            # A session that never received a file skips the listing (a round trip).
            stored = blobs.list_objects(prefix) if job.has_files else []
            # Runs may write past the cap; the files beyond it (in key order) are not synced.
            max_files = limits.MAX_FILES_PER_SESSION
            unsynced_files = max(0, len(stored) - max_files)
            refs = [
                SessionFileRef(
                    path=obj.key[len(prefix) :],
                    size=obj.size,
                    etag=obj.etag,
                    download_url=blobs.presigned_get(obj.key, download_expiry),
                )
                for obj in stored[:max_files]
            ]
        else:
            prefix = execution_files_prefix(job.execution_id)
            refs = []
            unsynced_files = 0
        transfer = FilesTransfer(
            files=refs,
            upload=blobs.presigned_post(
                key_prefix=prefix,
                max_bytes=limits.MAX_OUTPUT_FILE_BYTES,
                expires_in=upload_expiry,
            ),
        )
        invocation = ExecutorInvocation(
            execution_id=job.execution_id,
            tenant_id=job.session_id or job.principal,
            session_id=job.session_id,
            code=job.code,
            timeout_ms=job.timeout_ms,
            env=job.env,
            execution_count=job.execution_count or 1,
            limits=ResourceLimits(memory_mb=settings.EXECUTOR_MEMORY_LIMIT_MB),
            packages=job.packages,
            state=state,
            files=transfer,
            inline_files=job.inline_files,
            wheelhouse=WheelhouseAccess(
                index_url=settings.WHEELHOUSE_URL or None,
                allow_pypi=settings.NETWORK_MODE == "internet",
            ),
        )
        return invocation, unsynced_files


def _minimal_invocation(job: Job) -> ExecutorInvocation:
    return ExecutorInvocation(
        execution_id=job.execution_id,
        tenant_id=job.session_id or job.principal,
        session_id=job.session_id,
        code="",
    )
