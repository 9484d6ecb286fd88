"""Contract models shared by the API function, the executor, the local stack and the client.

Two contracts live here:
- the executor invocation (`ExecutorInvocation` in, `ExecutorResponse` out) — what the trusted
  API function sends to the untrusted executor and what comes back;
- `ExecutionResult`, exactly as SPEC §3 defines it, returned to API users.

The executor receives no credentials: every S3 access it makes goes through a presigned URL in
the invocation (SPEC §1 invariant 2). State blobs are opaque bytes to everyone except the
sandboxed worker (invariant 3).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lambdas.shared import limits


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecutionStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    MEMORY_EXCEEDED = "memory_exceeded"
    INTERRUPTED = "interrupted"  # POST /v1/executions/{id}/interrupt: KeyboardInterrupt, state kept
    RUNNING = "running"


# ---------------------------------------------------------------------------------------------
# ExecutionResult (SPEC §3)
# ---------------------------------------------------------------------------------------------


class ExecutionError(_Model):
    """The exception that ended a cell: Jupyter's `ename`/`evalue`/`traceback`, no colour codes."""

    name: str
    value: str
    traceback: list[str] = Field(default_factory=list)


class OutputFile(_Model):
    """A workspace file created or changed by a run."""

    path: str
    size: int
    content_type: str = "application/octet-stream"
    download_url: str | None = None  # filled in by the API function, which can presign


class ExecutionUsage(_Model):
    """The receipt of a run: what the user code used, measured by the executor's trusted parent
    (children included where the kernel still accounts for them)."""

    wall_ms: int = 0
    cpu_ms: int = 0  # user + system time of the worker and its children
    peak_memory_mb: float = 0.0  # peak resident set (VmHWM) of the worker, plus live children


class ExecutionResult(_Model):
    execution_id: str
    session_id: str | None = None
    status: ExecutionStatus
    success: bool
    execution_count: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    result: dict[str, Any] | None = None  # mime bundle of the last expression
    outputs: list[dict[str, Any]] = Field(default_factory=list)  # nbformat v4 outputs, in order
    error: ExecutionError | None = None
    files: list[OutputFile] = Field(default_factory=list)
    duration_ms: int = 0
    warnings: list[str] = Field(default_factory=list)
    usage: ExecutionUsage = Field(default_factory=ExecutionUsage)
    # A result too large for one response keeps the head and tail of these inline; the whole
    # of each is behind its presigned GET (set by the API function, None otherwise).
    stdout_url: str | None = None
    stderr_url: str | None = None
    outputs_url: str | None = None  # every output, the last expression's value and the error

    @classmethod
    def running(cls, execution_id: str, session_id: str | None) -> ExecutionResult:
        return cls(
            execution_id=execution_id,
            session_id=session_id,
            status=ExecutionStatus.RUNNING,
            success=False,
        )


# ---------------------------------------------------------------------------------------------
# Executor invocation (API function -> executor)
# ---------------------------------------------------------------------------------------------


class ResourceLimits(_Model):
    """rlimits and caps applied to the sandboxed worker (SPEC §1 invariant 4)."""

    memory_mb: int = limits.DEFAULT_MEMORY_LIMIT_MB
    cpu_seconds: int = limits.DEFAULT_CPU_LIMIT_SECONDS
    file_size_bytes: int = limits.DEFAULT_FILE_SIZE_LIMIT_BYTES
    open_files: int = limits.DEFAULT_OPEN_FILES_LIMIT
    extra_processes: int = limits.DEFAULT_EXTRA_PROCESSES_LIMIT
    stream_bytes: int = limits.MAX_STREAM_BYTES
    result_bytes: int = limits.MAX_RESULT_BYTES
    output_file_bytes: int = limits.MAX_OUTPUT_FILE_BYTES
    output_files: int = limits.MAX_OUTPUT_FILES_PER_RUN


class PresignedPost(_Model):
    """An S3 presigned POST. `fields` carries policy and signature; the uploader adds `key`
    (which must start with `key_prefix`, a condition of the signed policy) and the file."""

    url: str
    fields: dict[str, str]
    key_prefix: str
    max_bytes: int


class StateTransfer(_Model):
    """Where the session's namespace snapshot comes from and goes to.

    `download_url` is a presigned GET of the last committed snapshot (None for a new session);
    `version` is the committed version it belongs to, so a warm worker that already holds that
    version skips the download. The new snapshot is uploaded with `upload` under exactly
    `upload_key` (the API commits it by bumping the version in DynamoDB).
    """

    version: int = 0
    download_url: str | None = None
    upload: PresignedPost | None = None
    upload_key: str | None = None


class SessionFileRef(_Model):
    """A file of the session that must be present in the workspace before the run."""

    path: str  # relative to the workspace
    size: int
    etag: str  # lets a warm environment skip unchanged files
    download_url: str


class FilesTransfer(_Model):
    """Session files in (presigned GETs) and out (one presigned POST for the files prefix)."""

    files: list[SessionFileRef] = Field(default_factory=list)
    upload: PresignedPost | None = None
    # False: `files` is only part of the stored set (over the session's file cap), so the
    # worker must not delete the files it holds that are not listed.
    complete: bool = True


class InlineFile(_Model):
    """One-shot runs may carry small files inline instead of going through S3."""

    path: str
    content_base64: str


class WheelhouseAccess(_Model):
    """Where on-demand wheels come from: presigned or endpoint-readable base URL of the
    wheelhouse index, or PyPI when the network mode allows."""

    index_url: str | None = None
    allow_pypi: bool = False


class LiveChannel(_Model):
    """Where the executor's trusted parent publishes a running cell's output (numbered chunks
    under `output.key_prefix`, named and shaped by lambdas/shared/live.py) and where it looks for
    an interrupt request (a presigned GET that answers 200 once one was made). It is never
    passed on to the sandboxed worker."""

    output: PresignedPost
    interrupt_url: str


class ExecutorInvocation(_Model):
    """Payload of one executor invocation. The tenant (Lambda TenantId) is `session_id`, or the
    principal for one-shot runs; it is also passed here so the local stack can route by it."""

    execution_id: str
    tenant_id: str
    session_id: str | None = None  # None: one-shot run in a throwaway worker
    code: str
    timeout_ms: int = limits.DEFAULT_TIMEOUT_MS
    env: dict[str, str] = Field(default_factory=dict)  # this run only
    execution_count: int = 1  # the count this cell will get (sessions: committed count + 1)
    limits: ResourceLimits = Field(default_factory=ResourceLimits)
    packages: list[str] = Field(default_factory=list)  # validated whitelisted requirement specs
    state: StateTransfer | None = None
    files: FilesTransfer | None = None
    inline_files: list[InlineFile] = Field(default_factory=list)
    wheelhouse: WheelhouseAccess | None = None
    live: LiveChannel | None = None  # None: nothing is published while the run goes
    # Report which protections hold in this environment instead of running `code`.
    diagnostics: bool = False


class StateReport(_Model):
    """What happened to the session snapshot after the run.

    `uploaded`: a new snapshot is at `StateTransfer.upload_key`; the API commits it as the
    next version. `unchanged`: nothing was uploaded because the namespace dumps to exactly the
    snapshot of the committed version (same bytes, same variable names and types), so the API
    keeps the version and the variables it has. Neither: the state could not be saved (the
    warnings say why) or the run was cut short.
    """

    uploaded: bool = False
    unchanged: bool = False
    size: int = 0
    dropped: list[str] = Field(default_factory=list)  # variables that could not be pickled
    # User variables in the namespace after the run, `{name, type}` (type: the class name);
    # the API shows them in GET /v1/sessions/{id}. Optional: an executor may leave it empty.
    variables: list[dict[str, str]] = Field(default_factory=list)


class ProtectionCheck(_Model):
    """One protection of the executor: `ok` true (it holds), false (it does not) or null (not
    applicable where the executor runs), and what was seen."""

    ok: bool | None
    detail: str = ""


class ProtectionReport(_Model):
    """What the executor found about its own environment (lambdas/executor/host/protections.py):
    non_dumpable, rlimits, process_group_kill, pidfd, huge_pages, runtime_api_isolated."""

    checks: dict[str, ProtectionCheck]
    on_lambda: bool
    uid: int
    kernel: str
    python: str
    checked_at: str
    duration_ms: int


class ExecutorResponse(_Model):
    """What the executor returns. `result.files[*].download_url` is None here."""

    result: ExecutionResult
    state: StateReport = Field(default_factory=StateReport)
    cold_start: bool = False  # this environment's zygote was started by this invocation
    worker_restored: bool = False  # the session worker was (re)built from the snapshot
    diagnostics: ProtectionReport | None = None  # answers a diagnostics invocation
