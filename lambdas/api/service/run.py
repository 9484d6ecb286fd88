"""The run: invoke the executor, then commit what it produced (session state, notebook cell,
execution record) in one transaction and count its usage. Compute time is measured here, around
the executor call, never taken from the executor's report."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lambdas.api.domain import NotebookCell, SessionCommit
from lambdas.api.errors import InvalidPath, PayloadTooLarge, RateLimited, ServiceUnavailable
from lambdas.api.ports import ConditionFailed
from lambdas.api.service import payloads
from lambdas.api.service.common import (
    Deps,
    execution_files_prefix,
    execution_output_key,
    execution_prefix,
    iso,
    notebook_cell_key,
    session_files_prefix,
    state_key,
    store_json,
    validate_path,
)
from lambdas.api.service.live import live_channel
from lambdas.api.service.records import ExecutionRecords, Job
from lambdas.api.service.usage import UsageService
from lambdas.shared import limits
from lambdas.shared.executor_responses import ExecutorFailure, failed_response
from lambdas.shared.models import (
    ExecutionResult,
    ExecutionStatus,
    ExecutorInvocation,
    ExecutorResponse,
    FilesTransfer,
    ResourceLimits,
    SessionFileRef,
    StateTransfer,
    WheelhouseAccess,
)

logger = logging.getLogger(__name__)

_CUT_SHORT = {ExecutionStatus.TIMEOUT, ExecutionStatus.MEMORY_EXCEEDED}
_UPLOAD_EXPIRY_MARGIN_S = 120


class SyncCaller:
    """The caller of a sync run waiting for its answer: either the run refuses it (429 / 413:
    an invoke Lambda refused, nothing ran) or the window closes first and it gets 202, never
    both — after a 202 a refusal is the run's recorded error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answer: str | None = None

    def refuse(self) -> bool:
        """The run's side: True if the caller takes the refusal (it has no 202 yet)."""
        return self._settle("refused")

    def accept(self) -> bool:
        """The window's side: True if the caller gets 202 (the run did not refuse it)."""
        return self._settle("accepted")

    def _settle(self, answer: str) -> bool:
        with self._lock:
            if self._answer is None:
                self._answer = answer
            return self._answer == answer


class RunService:
    def __init__(self, deps: Deps, records: ExecutionRecords, usage: UsageService) -> None:
        self._deps = deps
        self._records = records
        self._usage = usage
        # Independent storage calls of one request run side by side (boto3 clients are
        # thread-safe); this pool only ever waits on I/O.
        self._io = ThreadPoolExecutor(max_workers=16, thread_name_prefix="lci-io")

    def run_job(
        self,
        job: Job,
        *,
        caller: SyncCaller | None = None,
    ) -> ExecutionResult:
        """Invoke the executor, commit, store the record and the notebook cell, count usage.

        The running record exists already (`ExecutionRecords.start`). Whatever goes wrong
        later ends as an `error` result in the record, except an invoke Lambda refused before
        anything ran (throttled: RateLimited, over its request limit: PayloadTooLarge) while a
        sync `caller` still
        waits: then the run is undone without a trace (lease, record, idempotency claim) and
        the error propagates (429, 413); and storage that cannot be reached to record the
        finished run (ServiceUnavailable, a 503).
        """
        started = time.monotonic()
        invocation: ExecutorInvocation | None = None
        unsynced_files = 0
        not_started = "the execution could not be started"
        try:
            invocation, unsynced_files = self._invocation(job)
        except Exception:
            logger.exception("preparing execution %s failed", job.execution_id)
        try:
            response = (
                self._deps.executor.invoke(invocation)
                if invocation is not None
                else failed_response(_minimal_invocation(job), not_started)
            )
        except (RateLimited, PayloadTooLarge) as refused:
            if caller is not None and caller.refuse():
                self._records.abandon(job)
                raise
            response = failed_response(invocation or _minimal_invocation(job), refused.message)
        except Exception:
            logger.exception("executor call failed for execution %s", job.execution_id)
            response = failed_response(invocation or _minimal_invocation(job), not_started)
        compute_ms = int((time.monotonic() - started) * 1000)
        try:
            return self._complete(job, response, compute_ms, unsynced_files=unsynced_files)
        except ServiceUnavailable:
            # Nothing can be recorded now (the lease expires on its own): the caller says 503.
            logger.warning("execution %s not stored: storage unreachable", job.execution_id)
            raise
        except Exception:
            logger.exception("storing execution %s failed", job.execution_id)
            result = failed_response(_minimal_invocation(job), "internal error").result
            try:
                self._records.release(job)
                # The run's commit did not go through, its usage with it: count it here.
                self._commit(job, result, compute_ms)
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
        cell_outputs = list(result.outputs)  # the notebook keeps every output, however large
        spilled = self._spill(job, result)
        if not job.session_id:
            self._commit(job, result, compute_ms, spilled=spilled)
            return result
        # Not uploaded (unchanged, or not saved): the committed version and variables stay.
        uploaded = response.state.uploaded and not failed
        # Conservative: a run that was cut short may have uploaded files it could not report.
        may_have_written = bool(result.files) or failed or result.status in _CUT_SHORT
        session = self._records.session_commit(
            job,
            execution_count=None if failed else job.execution_count,
            state_version=job.state_version + 1 if uploaded else None,
            variables=response.state.variables if uploaded else None,
            has_files=True if may_have_written else None,
        )
        try:
            self._commit(
                job,
                result,
                compute_ms,
                session=session,
                cell_outputs=None if failed else cell_outputs,
                spilled=spilled,
            )
        except ConditionFailed:
            self._records.sessions.forget(job.session_id)
            if may_have_written:
                self._deps.table.mark_has_files(job.session_id)
            result.warnings.append(
                "the session's lease expired before this run finished; its state was not saved"
            )
            # Nothing of the first commit was written, its usage neither.
            self._commit(job, result, compute_ms, spilled=spilled)
            return result
        self._records.sessions.committed(job, session)
        return result

    def _spill(self, job: Job, result: ExecutionResult) -> dict[str, str]:
        """Fit `result` into one API response (`payloads.fit_result`): the parts that do not
        fit are stored whole and linked; returns their keys by part (kept in the record, so
        reading the execution later presigns fresh links)."""
        spills = payloads.fit_result(result, limits.API_RESPONSE_BUDGET_BYTES)
        keys = {spill.part: execution_output_key(job.execution_id, spill.part) for spill in spills}
        stored = [
            (spill, self._io.submit(self._deps.blobs.put_bytes, keys[spill.part], spill.data,
                                    spill.content_type))
            for spill in spills
        ]  # fmt: skip
        kept: dict[str, str] = {}
        for spill, upload in stored:
            try:
                upload.result()
            except Exception:
                logger.exception(
                    "storing the %s of execution %s failed", spill.part, job.execution_id
                )
                result.warnings.append(f"the whole of {spill.part} could not be stored")
                continue
            kept[spill.part] = keys[spill.part]
        self._records.link_spilled(result, kept)
        return kept

    def _commit(
        self,
        job: Job,
        result: ExecutionResult,
        compute_ms: int,
        *,
        session: SessionCommit | None = None,
        cell_outputs: list[dict[str, Any]] | None = None,
        spilled: dict[str, str] | None = None,
    ) -> None:
        """Write the finished run in one transaction: record, usage and, for a session, its
        commit and notebook cell (`cell_outputs`: every output, also those the response
        links). `spilled`: where the linked parts are stored."""
        now = self._deps.now()
        stored_result = store_json(
            self._deps,
            result.model_dump(mode="json"),
            execution_prefix(job.execution_id) + "result.json",
        )
        execution = self._records.execution_record(job, result.status).model_copy(
            update={
                "finished_at": iso(now),
                "compute_ms": compute_ms,
                "result": stored_result,
                "spilled": spilled or None,
            }
        )
        cell = self._cell(job, cell_outputs) if cell_outputs is not None else None
        usage = self._usage.delta(job.principal, compute_ms)
        self._deps.table.commit_run(execution=execution, session=session, cell=cell, usage=usage)
        self._usage.note(job.principal, compute_ms)

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

    def _cell(self, job: Job, outputs: list[dict[str, Any]]) -> NotebookCell:
        assert job.session_id and job.execution_count is not None
        now = self._deps.now()
        return NotebookCell(
            session_id=job.session_id,
            execution_count=job.execution_count,
            execution_id=job.execution_id,
            code=job.code,
            created_at=iso(now),
            # Cells outlive the session item by a margin; they are deleted with the session.
            ttl=int(now + job.session_ttl_seconds + limits.MAX_SESSION_TTL_SECONDS),
            outputs=store_json(
                self._deps,
                outputs,
                notebook_cell_key(job.session_id, job.execution_count),
            ),
        )

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
            complete=unsynced_files == 0,
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
            live=live_channel(blobs, job.execution_id, job.timeout_ms),
        )
        return invocation, unsynced_files


def _minimal_invocation(job: Job) -> ExecutorInvocation:
    return ExecutorInvocation(
        execution_id=job.execution_id,
        tenant_id=job.session_id or job.principal,
        session_id=job.session_id,
        code="",
    )
