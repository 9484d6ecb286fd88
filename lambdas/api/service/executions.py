"""Executions: the entry points (a run in a session, a one-shot run, reading an execution, the
background runner's stored job) and the validation of a run request.

A session run: validate (400/413) → replay if the Idempotency-Key is known (`idempotency.py`) →
quota (429, cached) → ONE transaction takes the session lease (404 if missing/foreign/expired,
409 if held), records the execution as running and claims the idempotency key → `dispatch.py`
dispatches it within the sync window (200 with the result, or 202 with its id at the window;
`wait: false` → 202 at once) → `run.py` invokes the executor and commits what it produced in
one transaction; a lease that is no longer ours commits nothing.
"""

from __future__ import annotations

import base64
import binascii
import re

from lambdas.api.domain import IdempotencyRecord, LeaseClaim, SessionRecord
from lambdas.api.errors import (
    ExecutionNotFound,
    InvalidPath,
    InvalidRequest,
    PayloadTooLarge,
    SessionBusy,
)
from lambdas.api.models import ExecuteRequest, InterruptAccepted, OneShotExecuteRequest
from lambdas.api.ports import IdempotencyTaken, LeaseRefused
from lambdas.api.service.common import (
    IDEMPOTENCY_TTL_SECONDS,
    Deps,
    load_json,
    new_id,
    validate_path,
)
from lambdas.api.service.dispatch import Dispatcher, ExecuteOutcome
from lambdas.api.service.idempotency import Idempotency
from lambdas.api.service.live import LiveService
from lambdas.api.service.packages import PackageService
from lambdas.api.service.records import ExecutionRecords, Job
from lambdas.api.service.run import RunService
from lambdas.api.service.sessions import SessionService
from lambdas.api.service.usage import UsageService
from lambdas.shared import limits
from lambdas.shared.models import ExecutionResult, ExecutionStatus, InlineFile

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Lease attempts of one request: a stale view of the session is retried with the current one.
_LEASE_ATTEMPTS = 3


def _lease(job: Job, session: SessionRecord, lease_expires: int, now: float) -> LeaseClaim:
    assert job.session_id and job.lease_id
    return LeaseClaim(
        session_id=job.session_id,
        principal=job.principal,
        lease_id=job.lease_id,
        lease_expires_at=lease_expires,
        now=int(now),
        execution_count=session.execution_count,
        state_version=session.state_version,
        has_files=session.has_files,
    )


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
        self._records = ExecutionRecords(deps)
        self._runs = RunService(deps, self._records, usage)
        self._idempotency = Idempotency(deps, self._records)
        self._dispatch = Dispatcher(deps, self._records, self._runs)
        self._live = LiveService(deps)

    def execute_in_session(
        self,
        principal: str,
        session_id: str,
        request: ExecuteRequest,
        idempotency_key: str | None,
    ) -> ExecuteOutcome:
        timeout_ms, pinned = self._validate(request)
        key_hash, request_hash = self._idempotency.hashes(
            principal, idempotency_key, session_id, request
        )
        if key_hash:
            replay = self._idempotency.replay(principal, key_hash, request_hash)
            if replay:
                return replay
        self._usage.check_quota(principal)
        now = self._deps.now()
        lease_id = new_id()
        lease_expires = int(now + timeout_ms / 1000 + limits.SESSION_LEASE_GRACE_SECONDS)
        views = self._records.sessions
        session = views.get(session_id) or self._deps.table.get_session(session_id)
        execution_id = new_id()
        for _ in range(_LEASE_ATTEMPTS):
            if session is None or session.principal != principal or not session.is_live(now):
                self._sessions.load(principal, session_id)  # missing, foreign or expired: 404
                raise SessionBusy()
            if session.is_leased(now):
                raise SessionBusy()
            job = Job(
                execution_id=execution_id,
                principal=principal,
                session_id=session_id,
                lease_id=lease_id,
                code=request.code,
                timeout_ms=timeout_ms,
                env=request.env,
                packages=pinned,
                execution_count=session.execution_count + 1,
                state_version=session.state_version,
                session_ttl_seconds=session.ttl_seconds,
                wait=request.wait,
                idempotency_key_hash=key_hash,
                has_files=session.has_files,
                created_at=now,
            )
            try:
                self._start(job, request_hash, lease=_lease(job, session, lease_expires, now))
            except LeaseRefused as refused:
                # A stale view of the session, or it is busy / gone: look at it as it is.
                views.forget(session_id)
                session = refused.session or self._deps.table.get_session(session_id)
                continue
            except IdempotencyTaken:
                replay = self._idempotency.replay(principal, key_hash or "", request_hash)
                if replay:
                    return replay
                raise SessionBusy() from None
            views.remember(session)
            return self._dispatch.start(job)
        raise SessionBusy()

    def _start(self, job: Job, request_hash: str, lease: LeaseClaim | None = None) -> None:
        """Record `job` as running, with its lease and Idempotency-Key claim: one write."""
        claim = None
        if job.idempotency_key_hash:
            claim = IdempotencyRecord(
                principal=job.principal,
                key_hash=job.idempotency_key_hash,
                execution_id=job.execution_id,
                request_hash=request_hash,
                ttl=int(self._deps.now() + IDEMPOTENCY_TTL_SECONDS),
            )
        self._records.start(job, with_job=self._dispatch.stores_job(job), lease=lease, claim=claim)

    def execute_one_shot(
        self, principal: str, request: OneShotExecuteRequest, idempotency_key: str | None
    ) -> ExecuteOutcome:
        timeout_ms, pinned = self._validate(request)
        inline_files = self._inline_files(request)
        key_hash, request_hash = self._idempotency.hashes(principal, idempotency_key, None, request)
        if key_hash:
            replay = self._idempotency.replay(principal, key_hash, request_hash)
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
            created_at=self._deps.now(),
        )
        try:
            self._start(job, request_hash)
        except IdempotencyTaken:
            replay = self._idempotency.replay(principal, key_hash or "", request_hash)
            if replay:
                return replay
            raise InvalidRequest("the Idempotency-Key is being used concurrently") from None
        return self._dispatch.start(job)

    def get(self, principal: str, execution_id: str) -> ExecutionResult:
        record = self._deps.table.get_execution(execution_id)
        if not record or record.principal != principal:
            raise ExecutionNotFound()
        result = self._records.result_of(record)
        if result.status == ExecutionStatus.RUNNING:
            return self._live.with_output_so_far(result)
        return result

    def interrupt(self, principal: str, execution_id: str) -> InterruptAccepted:
        return self._live.interrupt(principal, execution_id)

    def run_stored_job(self, execution_id: str) -> ExecutionResult | None:
        """Background entry (LambdaBackground): run the job stored in the record, once."""
        record = self._deps.table.get_execution(execution_id)
        if not record or not record.is_running():
            return None
        if record.is_lost(self._deps.now()):
            return None  # a delivery this late is not run: the client saw the run lost
        job_data = load_json(self._deps, record.job)
        if job_data is None or not self._deps.table.claim_job(execution_id):
            return None
        return self._runs.run_job(Job.model_validate(job_data))

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
