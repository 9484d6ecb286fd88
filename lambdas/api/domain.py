"""The API's domain entities: what the table and the bucket hold, as the services see it.

The adapters map them to and from storage at their edge (`lambdas/api/adapters/dynamodb.py`
keeps the key design and the item layout, `adapters/s3.py` the object listings); the services
read attributes, never item dicts.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from lambdas.shared import limits
from lambdas.shared.models import ExecutionStatus


class _Entity(BaseModel):
    # Frozen: an entity is a value read from or written to storage; a change is a new one
    # (`model_copy(update=...)`). Unknown attributes of older items are ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")


class JsonDocument(_Entity):
    """A JSON document kept with an item: inline as text, or in S3 (`s3_key`) when it would not
    fit in a DynamoDB item (`lambdas/api/service/common.py`'s `store_json` decides)."""

    text: str | None = None
    s3_key: str | None = None


class SessionRecord(_Entity):
    """A session. `expires_at` (epoch seconds) slides with every run; while a run is in flight
    it holds the lease `lease_id` until `lease_expires_at`."""

    session_id: str
    principal: str
    created_at: str
    last_used_at: str
    expires_at: int
    ttl_seconds: int = limits.DEFAULT_SESSION_TTL_SECONDS
    # The version of the last committed snapshot (0: none yet).
    state_version: int = 0
    execution_count: int = 0
    # `{name, type}` of the user variables in the last committed snapshot.
    variables: list[dict[str, str]] = Field(default_factory=list)
    # False until an upload form is issued or a run may have written files: runs then skip the
    # S3 listing. A session without the flag may have files.
    has_files: bool = True
    lease_id: str | None = None
    lease_expires_at: int | None = None

    def is_live(self, now: float) -> bool:
        return self.expires_at >= now

    def is_leased(self, now: float) -> bool:
        return bool(self.lease_id) and (self.lease_expires_at or 0) >= now


class ExecutionRecord(_Entity):
    """One execution: running (with `lost_after`, and `job` for the Lambda background runner)
    or finished (with `result`, `finished_at`, the measured `compute_ms` and, for a result
    too large for one response, `spilled`)."""

    execution_id: str
    principal: str
    status: ExecutionStatus
    created_at: str
    ttl: int
    session_id: str | None = None
    # Epoch seconds after which a record still running is reported lost.
    lost_after: int | None = None
    finished_at: str | None = None
    compute_ms: int | None = None
    result: JsonDocument | None = None
    # S3 keys of the result parts stored whole and linked from its response (`stdout`,
    # `stderr`, `outputs`: lambdas/api/service/payloads.py), presigned afresh on each read.
    spilled: dict[str, str] | None = None
    job: JsonDocument | None = None

    def is_running(self) -> bool:
        return self.status == ExecutionStatus.RUNNING

    def is_lost(self, now: float) -> bool:
        return self.lost_after is not None and now > self.lost_after


class NotebookCell(_Entity):
    """One executed cell of a session's notebook (`outputs`: nbformat v4 output dicts)."""

    session_id: str
    execution_count: int
    execution_id: str
    code: str
    created_at: str
    ttl: int
    outputs: JsonDocument | None = None


class UsageRecord(_Entity):
    """A principal's usage counters in one month (`period`: YYYY-MM)."""

    principal: str
    period: str
    executions: int = 0
    compute_ms: int = 0


class IdempotencyRecord(_Entity):
    """A principal's Idempotency-Key (hashed): which execution answers it, for which request."""

    principal: str
    key_hash: str
    execution_id: str
    request_hash: str
    ttl: int


class StoredObject(_Entity):
    """An object in the bucket, as a listing or a HEAD reports it."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


class SessionCommit(_Entity):
    """How a finished run changes its session: release the lease `lease_id`, slide the expiry,
    and (when given) set the execution count, the committed state version and the variables."""

    session_id: str
    lease_id: str
    last_used_at: str
    expires_at: int
    execution_count: int | None = None
    state_version: int | None = None
    variables: list[dict[str, str]] | None = None
    has_files: bool | None = None


class LeaseClaim(_Entity):
    """Taking a session's run lease: the session must exist, belong to `principal`, be live at
    `now` and hold no lease (or an expired one), and still be as this process last saw it
    (`execution_count`, `state_version`, `has_files`: what the run is built from)."""

    session_id: str
    principal: str
    lease_id: str
    lease_expires_at: int
    now: int
    execution_count: int
    state_version: int
    has_files: bool


class UsageDelta(_Entity):
    """What one run adds to its principal's usage counters."""

    principal: str
    period: str
    executions: int
    compute_ms: int
    ttl: int
