"""The service layer's ports: what the services need from storage, the executor, the background
runner and the clock, and the domain types that cross them. Adapters (`lambdas/api/adapters/`,
the local stack, the tests' fakes) implement these; only adapters import boto3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from lambdas.shared.models import (
    ExecutionResult,
    ExecutorInvocation,
    ExecutorResponse,
    PresignedPost,
)

# Epoch seconds; swapped for a settable clock in tests.
Clock = Callable[[], float]


class ConditionFailed(Exception):
    """A conditional write lost (item missing, lease held by someone else, already claimed)."""


@dataclass(frozen=True)
class SessionCommit:
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


@dataclass(frozen=True)
class UsageDelta:
    principal: str
    period: str
    executions: int
    compute_ms: int
    ttl: int


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime | None


# A notebook cell to store with a run: (session id, execution count, attributes).
CellWrite = tuple[str, int, dict[str, Any]]


class Table(Protocol):
    """The API's one table (`lambdas/api/adapters/dynamodb.py` documents the item layout)."""

    def create_session(self, session_id: str, attributes: dict[str, Any]) -> None: ...
    def get_session(self, session_id: str) -> dict[str, Any] | None: ...
    def acquire_lease(
        self, session_id: str, principal: str, lease_id: str, lease_expires_at: int, now: int
    ) -> dict[str, Any]: ...
    def finish_run(self, commit: SessionCommit) -> None: ...
    def commit_run(
        self,
        *,
        execution_id: str,
        execution: dict[str, Any],
        session: SessionCommit | None = None,
        cell: CellWrite | None = None,
    ) -> None: ...
    def add_usage(self, usage: UsageDelta) -> None: ...
    def mark_has_files(self, session_id: str) -> None: ...
    def delete_session(self, session_id: str) -> None: ...
    def list_cells(self, session_id: str) -> list[dict[str, Any]]: ...
    def put_execution(self, execution_id: str, attributes: dict[str, Any]) -> None: ...
    def create_execution(self, execution_id: str, attributes: dict[str, Any]) -> None: ...
    def claim_job(self, execution_id: str) -> bool: ...
    def delete_execution(self, execution_id: str) -> None: ...
    def get_execution(
        self, execution_id: str, consistent: bool = True
    ) -> dict[str, Any] | None: ...
    def get_usage(self, principal: str, period: str) -> dict[str, Any]: ...
    def get_idempotency(self, principal: str, key_hash: str) -> dict[str, Any] | None: ...
    def claim_idempotency(
        self, principal: str, key_hash: str, attributes: dict[str, Any]
    ) -> None: ...
    def delete_idempotency(self, principal: str, key_hash: str) -> None: ...


class BlobStore(Protocol):
    """The bucket: presigned transfers and the few direct object operations."""

    def presigned_post(
        self, *, key_prefix: str, max_bytes: int, expires_in: int, exact_key: str | None = None
    ) -> PresignedPost: ...
    def presigned_get(self, key: str, expires_in: int) -> str: ...
    def list_objects(self, prefix: str) -> list[ObjectInfo]: ...
    def count_objects(self, prefix: str, stop_at: int) -> int: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str, page_size: int = 1000) -> int: ...


class Executor(Protocol):
    def invoke(self, invocation: ExecutorInvocation) -> ExecutorResponse:
        """The run's response; an `ExecutorFailure` (lambdas/shared/executor_responses.py) when
        the executor produced no result; RateLimited when it is throttled."""
        ...


Runner = Callable[[], ExecutionResult]
Poller = Callable[[], ExecutionResult | None]


class BackgroundHandle(Protocol):
    def wait(self, timeout_s: float) -> ExecutionResult | None:
        """The finished result, or None if the run is still going after `timeout_s`; an
        in-process run's exception (a refusal for a waiting caller) is raised here."""
        ...


class Background(Protocol):
    """Where a run keeps going after the sync window closes."""

    # True: the run happens in another invocation, which reads the job from the stored record.
    runs_remotely: bool

    def submit(self, execution_id: str, run: Runner, poll: Poller) -> BackgroundHandle:
        """Start the run elsewhere. `run` executes the job in-process; `poll` reads the stored
        record (None while it is still running). An adapter uses whichever fits."""
        ...
