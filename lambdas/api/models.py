"""Request and response bodies of the HTTP API v1.

`ExecutionResult` is the shared contract model (`lambdas.shared.models`); everything else the
API speaks is defined here. Request models forbid unknown fields so a typo is a clear 400, not a
silently ignored option. Limits that depend on configuration (code size, timeout maximum) are
checked by the services, which know the settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lambdas.shared import limits
from lambdas.shared.models import ExecutionResult, ProtectionReport

__all__ = [
    "Diagnostics",
    "ErrorBody",
    "ExecuteAccepted",
    "ExecuteRequest",
    "ExecutionResult",
    "FileInfo",
    "FileList",
    "FileUploadRequest",
    "FileUploadResponse",
    "HealthResponse",
    "InlineFileIn",
    "InterruptAccepted",
    "OneShotExecuteRequest",
    "PackageInfo",
    "PackageList",
    "PresignedUpload",
    "Quota",
    "Session",
    "SessionCreateRequest",
    "SessionDetail",
    "Usage",
    "Variable",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- requests ----------------------------------------------------------------------------------


class SessionCreateRequest(_Request):
    ttl_seconds: int | None = Field(
        default=None,
        ge=limits.MIN_SESSION_TTL_SECONDS,
        le=limits.MAX_SESSION_TTL_SECONDS,
        description="Idle time after which the session expires; each execution extends it.",
    )


class ExecuteRequest(_Request):
    code: str = Field(description="Python source of one cell.")
    timeout_ms: int | None = Field(
        default=None, ge=limits.MIN_TIMEOUT_MS, description="Defaults to 30000."
    )
    packages: list[str] = Field(
        default_factory=list,
        max_length=limits.MAX_PACKAGES_PER_REQUEST,
        description="Whitelisted requirement specs to install before the run.",
    )
    requirements: str | None = Field(default=None, description="requirements.txt text.")
    env: dict[str, str] = Field(
        default_factory=dict,
        max_length=limits.MAX_ENV_VARS,
        description="Environment variables for this run only.",
    )
    wait: bool = Field(default=True, description="false: return 202 at once.")


class InlineFileIn(_Request):
    path: str
    content_base64: str


class OneShotExecuteRequest(ExecuteRequest):
    files: list[InlineFileIn] = Field(default_factory=list, max_length=limits.MAX_INLINE_FILES)


class FileUploadRequest(_Request):
    path: str = Field(description="Relative path inside the session workspace.")
    size: int | None = Field(default=None, ge=0, description="Exact size, if known.")


# --- responses ---------------------------------------------------------------------------------


class HealthResponse(_Response):
    status: Literal["ok"] = "ok"


class Session(_Response):
    session_id: str
    created_at: str
    expires_at: str
    last_used_at: str
    execution_count: int
    status: Literal["idle", "busy"]


class Variable(_Response):
    name: str
    type: str


class SessionDetail(Session):
    variables: list[Variable] = Field(default_factory=list)


class ExecuteAccepted(_Response):
    execution_id: str
    session_id: str | None = None
    status: Literal["running"] = "running"


class InterruptAccepted(_Response):
    """An interrupt request was recorded: the run ends as `interrupted` within seconds (poll
    `GET /v1/executions/{execution_id}`), unless it finishes first."""

    execution_id: str
    session_id: str | None = None
    status: Literal["running"] = "running"
    interrupt_requested: Literal[True] = True


class PresignedUpload(_Response):
    url: str
    fields: dict[str, str]


class FileUploadResponse(_Response):
    path: str
    upload: PresignedUpload
    expires_at: str
    max_bytes: int


class FileInfo(_Response):
    path: str
    size: int
    modified_at: str | None = None
    download_url: str


class FileList(_Response):
    files: list[FileInfo]


class PackageInfo(_Response):
    name: str
    version: str
    source: Literal["layer", "on_demand"]


class PackageList(_Response):
    python: str = limits.PYTHON_VERSION
    packages: list[PackageInfo]


class Quota(_Response):
    executions: int
    compute_ms: int


class Usage(_Response):
    period: str
    executions: int
    compute_ms: int
    quota: Quota


class Diagnostics(_Response):
    """GET /v1/diagnostics: which protections hold in the executor's environment (each check
    `ok` true / false / null for not applicable), or why the executor could not say; and how
    the API is configured."""

    executor: ProtectionReport | None = None
    executor_error: str | None = None
    api: dict[str, str | int] = Field(default_factory=dict)


class ErrorDetail(_Response):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(_Response):
    error: ErrorDetail
