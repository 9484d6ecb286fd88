"""DynamoDB adapter: every read and write of the API's one table (`dynamodb_items.py` holds the
key design, the item attributes and the mapping to the entities of `lambdas/api/domain.py`).

A run costs two requests on its critical path (issue 16). It starts with ONE
TransactWriteItems (`start_run`): the session lease (exists, owned, not expired, not leased — or
the previous lease has expired, so a crashed call cannot wedge a session — and unchanged since
the caller's view of it), the running execution record and the Idempotency-Key claim, if any.
The lease is given back by the run's commit, which is conditional on still holding it: two runs
on one session never both commit. A finished run writes ONE TransactWriteItems (`commit_run`):
the session commit (lease release, state_version + 1 if a snapshot was uploaded,
execution_count, variables, sliding expiry), its notebook cell (same partition as the session,
so one Query returns the notebook in order), the execution record and `ADD executions,
compute_ms` on the usage counter. All runs of a principal share that counter, so concurrent
commits can cancel each other on it (TransactionConflict): a commit that keeps losing that race
is written without it and the usage added by its own UpdateItem.

A running execution's record holds `lost_after` (a record still running after it is reported
lost) and, for the Lambda background runner, its `job`, claimed once with `job_started`.
Idempotency items map a principal's key to an execution id and the request's hash (24 h).

Only this module talks to DynamoDB.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

from tenacity import (
    Retrying,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from lambdas.api.adapters.dynamodb_client import TableOps, Wire
from lambdas.api.adapters.dynamodb_items import (
    CELL_PREFIX,
    SESSION_PREFIX,
    cell_key,
    entity_from_item,
    execution_key,
    idempotency_key,
    item_attributes,
    session_commit_update,
    session_key,
    usage_key,
)
from lambdas.api.domain import (
    ExecutionRecord,
    IdempotencyRecord,
    LeaseClaim,
    NotebookCell,
    SessionCommit,
    SessionRecord,
    UsageDelta,
    UsageRecord,
)
from lambdas.api.ports import ConditionFailed, IdempotencyTaken, LeaseRefused
from lambdas.shared.storage import TABLE_PARTITION_KEY as PK
from lambdas.shared.storage import TABLE_SORT_KEY as SK
from lambdas.shared.storage import TABLE_TTL_ATTRIBUTE as TTL

_COMMIT_ATTEMPTS = 4


def _transaction_token(items: list[Any]) -> str:
    """A ClientRequestToken (at most 36 characters) naming exactly this item set."""
    canonical = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:36]


_USAGE_UPDATE = "ADD executions :n, compute_ms :ms SET #ttl = :ttl"


def _usage_values(usage: UsageDelta) -> dict[str, Any]:
    return {":n": usage.executions, ":ms": usage.compute_ms, ":ttl": usage.ttl}


def _equals_or_default(attribute: str, placeholder: str, value: int) -> str:
    """`attribute = value`, where a missing attribute counts as its default 0."""
    if value == 0:
        return f"(attribute_not_exists({attribute}) OR {attribute} = {placeholder})"
    return f"{attribute} = {placeholder}"


class _UsageContended(Exception):
    """A run's commit kept losing the race for its principal's usage counter."""


class DynamoTable:
    """All reads and writes of the API table."""

    def __init__(self, table_name: str, endpoint_url: str = "") -> None:
        import boto3  # lazy: keeps the handler module cheap to import

        from lambdas.api.adapters.unreachable import translate_unreachable

        self._client = translate_unreachable(
            boto3.client("dynamodb", endpoint_url=endpoint_url or None)
        )
        self._wire = Wire()
        self._table = TableOps(self._client, table_name, self._wire)

    # --- generic ------------------------------------------------------------------------------

    def _get(self, key: dict[str, str], consistent: bool = True) -> dict[str, Any] | None:
        return self._table.get_item(Key=key, ConsistentRead=consistent).get("Item")

    def _update(
        self,
        key: dict[str, str],
        expression: str,
        values: dict[str, Any] | None = None,
        condition: str | None = None,
        names: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "Key": key,
            "UpdateExpression": expression,
            "ReturnValues": "ALL_NEW",
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if condition:
            kwargs["ConditionExpression"] = condition
        try:
            return self._table.update_item(**kwargs)["Attributes"]
        except self._client.exceptions.ConditionalCheckFailedException as exc:
            raise ConditionFailed from exc

    def _put_new(self, key: dict[str, str], attributes: dict[str, Any]) -> None:
        try:
            self._table.put_item(
                Item={**key, **attributes},
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": PK},
            )
        except self._client.exceptions.ConditionalCheckFailedException as exc:
            raise ConditionFailed from exc

    # --- sessions -----------------------------------------------------------------------------

    def create_session(self, session: SessionRecord) -> None:
        self._put_new(
            session_key(session.session_id), {**item_attributes(session), TTL: session.expires_at}
        )

    def get_session(self, session_id: str) -> SessionRecord | None:
        item = self._get(session_key(session_id))
        return entity_from_item(SessionRecord, item) if item else None

    def start_run(
        self,
        execution: ExecutionRecord,
        *,
        lease: LeaseClaim | None = None,
        claim: IdempotencyRecord | None = None,
    ) -> None:
        """Record the running execution, with the session lease and the Idempotency-Key claim
        when given, in ONE transaction (all or nothing). LeaseRefused: the lease condition
        failed (with the item as it was); IdempotencyTaken: the key was claimed first."""
        wire = self._wire.dump
        table = self._table.name
        items: list[Any] = []
        refusals: list[type[ConditionFailed]] = []
        if lease is not None:
            values: dict[str, Any] = {
                ":lease": lease.lease_id,
                ":lease_exp": lease.lease_expires_at,
                ":now": lease.now,
                ":p": lease.principal,
                ":count": lease.execution_count,
                ":version": lease.state_version,
            }
            condition = (
                "attribute_exists(#pk) AND principal = :p AND expires_at >= :now AND "
                "(attribute_not_exists(lease_id) OR lease_expires_at < :now) AND "
                + _equals_or_default("execution_count", ":count", lease.execution_count)
                + " AND "
                + _equals_or_default("state_version", ":version", lease.state_version)
            )
            if not lease.has_files:  # a session without the flag may have files
                condition += " AND has_files = :no_files"
                values[":no_files"] = False
            items.append(
                {
                    "Update": {
                        "TableName": table,
                        "Key": wire(session_key(lease.session_id)),
                        "UpdateExpression": "SET lease_id = :lease, lease_expires_at = :lease_exp",
                        "ConditionExpression": condition,
                        "ExpressionAttributeValues": wire(values),
                        "ExpressionAttributeNames": {"#pk": PK},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                }
            )
            refusals.append(LeaseRefused)
        items.append(
            {
                "Put": {
                    "TableName": table,
                    "Item": wire(
                        {**execution_key(execution.execution_id), **item_attributes(execution)}
                    ),
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": PK},
                }
            }
        )
        refusals.append(ConditionFailed)
        if claim is not None:
            claim_item = {
                **idempotency_key(claim.principal, claim.key_hash),
                **item_attributes(claim, in_key={"principal", "key_hash"}),
            }
            items.append(
                {
                    "Put": {
                        "TableName": table,
                        "Item": wire(claim_item),
                        "ConditionExpression": "attribute_not_exists(#pk)",
                        "ExpressionAttributeNames": {"#pk": PK},
                    }
                }
            )
            refusals.append(IdempotencyTaken)
        # A retry after a lost response is a no-op, not a second start (see commit_run).
        token = _transaction_token(items)
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(_COMMIT_ATTEMPTS),
                wait=wait_exponential(multiplier=0.02, min=0.02),
                retry=retry_if_not_exception_type(
                    self._client.exceptions.TransactionCanceledException
                ),
                reraise=True,
            ):
                with attempt:
                    self._client.transact_write_items(TransactItems=items, ClientRequestToken=token)
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons", [])
            for refusal, reason in zip(refusals, reasons, strict=False):
                if reason.get("Code") != "ConditionalCheckFailed":
                    continue
                if refusal is LeaseRefused:
                    old = reason.get("Item")
                    raise LeaseRefused(
                        entity_from_item(SessionRecord, self._wire.load(dict(old))) if old else None
                    ) from exc
                raise refusal() from exc
            raise

    def finish_run(self, commit: SessionCommit) -> None:
        """Release the lease, committing what the run produced, in one conditional write.
        ConditionFailed: the lease is no longer ours, so nothing is committed."""
        expression, values, names = session_commit_update(commit)
        self._update(
            session_key(commit.session_id),
            expression,
            values,
            condition="lease_id = :lease",
            names=names,
        )

    def commit_run(
        self,
        *,
        execution: ExecutionRecord,
        session: SessionCommit | None = None,
        cell: NotebookCell | None = None,
        usage: UsageDelta | None = None,
    ) -> None:
        """What a finished run writes, in ONE transaction: the session commit (lease release,
        version, count; conditional on still holding the lease), the notebook cell, the
        execution record and its `usage`. ConditionFailed: the lease was lost and nothing was
        written (the usage neither)."""
        try:
            self._commit_items(execution=execution, session=session, cell=cell, usage=usage)
        except _UsageContended:
            self._commit_items(execution=execution, session=session, cell=cell, usage=None)
            if usage is not None:
                self.add_usage(usage)

    def _commit_items(
        self,
        *,
        execution: ExecutionRecord,
        session: SessionCommit | None,
        cell: NotebookCell | None,
        usage: UsageDelta | None,
    ) -> None:
        execution_id = execution.execution_id
        wire = self._wire.dump
        table = self._table.name
        items: list[Any] = []
        if session is not None:
            expression, values, names = session_commit_update(session)
            items.append(
                {
                    "Update": {
                        "TableName": table,
                        "Key": wire(session_key(session.session_id)),
                        "UpdateExpression": expression,
                        "ConditionExpression": "lease_id = :lease",
                        "ExpressionAttributeValues": wire(values),
                        "ExpressionAttributeNames": names,
                    }
                }
            )
        if cell is not None:
            cell_item = {
                **cell_key(cell.session_id, cell.execution_count),
                **item_attributes(cell, in_key={"session_id"}),
            }
            items.append({"Put": {"TableName": table, "Item": wire(cell_item)}})
        items.append(
            {
                "Put": {
                    "TableName": table,
                    "Item": wire({**execution_key(execution_id), **item_attributes(execution)}),
                }
            }
        )
        if usage is not None:
            items.append(
                {
                    "Update": {
                        "TableName": table,
                        "Key": wire(usage_key(usage.principal, usage.period)),
                        "UpdateExpression": _USAGE_UPDATE,
                        "ExpressionAttributeValues": wire(_usage_values(usage)),
                        "ExpressionAttributeNames": {"#ttl": TTL},
                    }
                }
            )
        # The token makes a retry of this very transaction after a lost response a no-op
        # instead of a second commit. DynamoDB ties a token to its items for 10 minutes, so a
        # fallback commit of other items (lease lost, failure record) needs its own: the token
        # is a digest of the items.
        token = _transaction_token(items)
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(_COMMIT_ATTEMPTS),
                wait=wait_exponential(multiplier=0.02, min=0.02),
                retry=retry_if_not_exception_type(ConditionFailed),
                reraise=True,
            ):
                with attempt:
                    try:
                        self._client.transact_write_items(
                            TransactItems=items, ClientRequestToken=token
                        )
                    except self._client.exceptions.TransactionCanceledException as exc:
                        reasons = exc.response.get("CancellationReasons", [])
                        if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                            raise ConditionFailed from exc
                        raise
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons", [])
            # The usage counter is the last item; only it is shared with other runs.
            if usage is not None and reasons and reasons[-1].get("Code") == "TransactionConflict":
                raise _UsageContended from exc
            raise

    def add_usage(self, usage: UsageDelta) -> None:
        self._update(
            usage_key(usage.principal, usage.period),
            _USAGE_UPDATE,
            _usage_values(usage),
            names={"#ttl": TTL},
        )

    def mark_has_files(self, session_id: str) -> None:
        """Files may exist under the session's prefix: runs must list them (see has_files)."""
        with contextlib.suppress(ConditionFailed):
            self._update(
                session_key(session_id),
                "SET has_files = :yes",
                {":yes": True},
                condition="attribute_exists(#pk)",
                names={"#pk": PK},
            )

    def delete_session(self, session_id: str) -> None:
        """Delete the session item and all its notebook cells."""
        keys = [session_key(session_id)]
        keys += [{PK: c[PK], SK: c[SK]} for c in self._query_cells(session_id, keys_only=True)]
        self._table.delete_keys(keys)

    # --- notebook cells -----------------------------------------------------------------------

    def _query_cells(self, session_id: str, keys_only: bool = False) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :cell)",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {
                ":pk": f"{SESSION_PREFIX}{session_id}",
                ":cell": CELL_PREFIX,
            },
            "ConsistentRead": True,
        }
        if keys_only:
            kwargs["ProjectionExpression"] = "#pk, #sk"
        items: list[Any] = []
        while True:
            page = self._table.query(**kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list_cells(self, session_id: str) -> list[NotebookCell]:
        """The session's cells in execution order (the sort key orders them)."""
        return [
            entity_from_item(NotebookCell, item, session_id=session_id)
            for item in self._query_cells(session_id)
        ]

    def put_cells(self, cells: list[NotebookCell]) -> None:
        """Write notebook cells as they are (a forked session's copy of its parent's)."""
        self._table.put_items(
            [
                {
                    **cell_key(cell.session_id, cell.execution_count),
                    **item_attributes(cell, in_key={"session_id"}),
                }
                for cell in cells
            ]
        )

    # --- executions ---------------------------------------------------------------------------

    def create_execution(self, execution: ExecutionRecord) -> None:
        """Put the record unless one exists already (ConditionFailed then)."""
        self._put_new(execution_key(execution.execution_id), item_attributes(execution))

    def claim_job(self, execution_id: str) -> bool:
        """Mark a running execution's job as started; False if it already was (a duplicate
        asynchronous delivery must not run the job twice)."""
        try:
            self._update(
                execution_key(execution_id),
                "SET job_started = :yes",
                {":yes": True, ":running": "running"},
                # A job too large for the item is kept in S3 and only its key is stored.
                condition="(attribute_exists(job) OR attribute_exists(job_s3_key)) "
                "AND #status = :running AND attribute_not_exists(job_started)",
                names={"#status": "status"},
            )
        except ConditionFailed:
            return False
        return True

    def delete_execution(self, execution_id: str) -> None:
        self._table.delete_item(Key=execution_key(execution_id))

    def get_execution(self, execution_id: str, consistent: bool = True) -> ExecutionRecord | None:
        item = self._get(execution_key(execution_id), consistent)
        return entity_from_item(ExecutionRecord, item) if item else None

    # --- usage --------------------------------------------------------------------------------

    def get_usage(self, principal: str, period: str) -> UsageRecord:
        """The counters of `period` (zero when the principal has not run anything in it)."""
        item = self._get(usage_key(principal, period), consistent=False) or {}
        return entity_from_item(UsageRecord, item, principal=principal, period=period)

    # --- idempotency --------------------------------------------------------------------------

    def get_idempotency(self, principal: str, key_hash: str) -> IdempotencyRecord | None:
        item = self._get(idempotency_key(principal, key_hash))
        if not item:
            return None
        return entity_from_item(IdempotencyRecord, item, principal=principal, key_hash=key_hash)

    def delete_idempotency(self, principal: str, key_hash: str) -> None:
        self._table.delete_item(Key=idempotency_key(principal, key_hash))
