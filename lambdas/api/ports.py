"""The service layer's ports: what the services need from storage, the executor, the background
runner and the clock. The entities that cross them are in `lambdas/api/domain.py`. Adapters
(`lambdas/api/adapters/`, the local stack, the tests' fakes) implement these; only adapters
import boto3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from lambdas.api.domain import (
    ExecutionRecord,
    IdempotencyRecord,
    LeaseClaim,
    NotebookCell,
    SessionCommit,
    SessionRecord,
    StoredObject,
    UsageDelta,
    UsageRecord,
)
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


class LeaseRefused(ConditionFailed):
    """The session's lease was not taken: `session` is the item as it was (None: missing, or
    not returned by the store), to tell a missing/foreign/expired/busy session from a stale
    view of it."""

    def __init__(self, session: SessionRecord | None = None) -> None:
        super().__init__("the session lease was not taken")
        self.session = session


class IdempotencyTaken(ConditionFailed):
    """The Idempotency-Key was claimed by another request first."""


class Table(Protocol):
    """The API's one table (`lambdas/api/adapters/dynamodb.py` documents the item layout)."""

    def create_session(self, session: SessionRecord) -> None: ...
    def get_session(self, session_id: str) -> SessionRecord | None: ...
    def finish_run(self, commit: SessionCommit) -> None: ...
    def start_run(
        self,
        execution: ExecutionRecord,
        *,
        lease: LeaseClaim | None = None,
        claim: IdempotencyRecord | None = None,
    ) -> None: ...
    def commit_run(
        self,
        *,
        execution: ExecutionRecord,
        session: SessionCommit | None = None,
        cell: NotebookCell | None = None,
        usage: UsageDelta | None = None,
    ) -> None: ...
    def add_usage(self, usage: UsageDelta) -> None: ...
    def mark_has_files(self, session_id: str) -> None: ...
    def delete_session(self, session_id: str) -> None: ...
    def list_cells(self, session_id: str) -> list[NotebookCell]: ...
    def put_cells(self, cells: list[NotebookCell]) -> None: ...
    def create_execution(self, execution: ExecutionRecord) -> None: ...
    def claim_job(self, execution_id: str) -> bool: ...
    def delete_execution(self, execution_id: str) -> None: ...
    def get_execution(
        self, execution_id: str, consistent: bool = True
    ) -> ExecutionRecord | None: ...
    def get_usage(self, principal: str, period: str) -> UsageRecord: ...
    def get_idempotency(self, principal: str, key_hash: str) -> IdempotencyRecord | None: ...
    def delete_idempotency(self, principal: str, key_hash: str) -> None: ...


class BlobStore(Protocol):
    """The bucket: presigned transfers and the few direct object operations."""

    def presigned_post(
        self, *, key_prefix: str, max_bytes: int, expires_in: int, exact_key: str | None = None
    ) -> PresignedPost: ...
    def presigned_get(self, key: str, expires_in: int) -> str: ...
    def list_objects(self, prefix: str) -> list[StoredObject]: ...
    def list_keys(self, prefix: str, limit: int) -> list[str]: ...
    def copy(self, source_key: str, target_key: str) -> None: ...
    def count_objects(self, prefix: str, stop_at: int) -> int: ...
    def head(self, key: str) -> StoredObject | None: ...
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
