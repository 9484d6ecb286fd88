"""DynamoDB adapter: every read and write of the API's one table (`dynamodb_items.py` holds the
key design, the item attributes and the mapping to the entities of `lambdas/api/domain.py`).

A session run's lease is taken with one conditional write (exists, owned, not expired, not
leased — or the previous lease has expired, so a crashed call cannot wedge a session) and given
back by the run's commit, which is conditional on still holding it: two runs on one session
never both commit.

A finished run writes ONE TransactWriteItems: the session commit (lease release, state_version
+ 1 if a snapshot was uploaded, execution_count, variables, sliding expiry), its notebook cell
(same partition as the session, so one Query returns the notebook in order) and the execution
record; then `UpdateItem ADD executions, compute_ms` on the usage counter (outside the
transaction: all runs of a principal share that item).

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
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_fixed,
)

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
    NotebookCell,
    SessionCommit,
    SessionRecord,
    UsageDelta,
    UsageRecord,
)
from lambdas.api.ports import ConditionFailed
from lambdas.shared.storage import TABLE_PARTITION_KEY as PK
from lambdas.shared.storage import TABLE_SORT_KEY as SK
from lambdas.shared.storage import TABLE_TTL_ATTRIBUTE as TTL

_COMMIT_ATTEMPTS = 4
_BATCH_ATTEMPTS = 8


def _transaction_token(items: list[Any]) -> str:
    """A ClientRequestToken (at most 36 characters) naming exactly this item set."""
    canonical = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:36]


class _Wire:
    """Python values <-> DynamoDB attribute values (what boto3's resource layer does, done here
    because resources are not thread-safe and the API serves requests on several threads)."""

    def __init__(self) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()

    def dump(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self._serializer.serialize(v) for k, v in values.items()}

    def load(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: self._deserializer.deserialize(v) for k, v in item.items()}


class _TableOps:
    """The few Table operations the adapter uses, on the thread-safe low-level client."""

    def __init__(self, client: Any, name: str, wire: _Wire) -> None:
        self._client = client
        self._wire = wire
        self.name = name

    def _args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        args = {"TableName": self.name, **kwargs}
        for field in ("Key", "Item", "ExpressionAttributeValues", "ExclusiveStartKey"):
            if field in args:
                args[field] = self._wire.dump(args[field])
        return args

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        response = self._client.get_item(**self._args(kwargs))
        return {"Item": self._wire.load(response["Item"])} if "Item" in response else {}

    def put_item(self, **kwargs: Any) -> None:
        self._client.put_item(**self._args(kwargs))

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        response = self._client.update_item(**self._args(kwargs))
        return {"Attributes": self._wire.load(response.get("Attributes", {}))}

    def delete_item(self, **kwargs: Any) -> None:
        self._client.delete_item(**self._args(kwargs))

    def query(self, **kwargs: Any) -> dict[str, Any]:
        response = self._client.query(**self._args(kwargs))
        page: dict[str, Any] = {"Items": [self._wire.load(i) for i in response.get("Items", [])]}
        if "LastEvaluatedKey" in response:
            page["LastEvaluatedKey"] = self._wire.load(response["LastEvaluatedKey"])
        return page

    def delete_keys(self, keys: list[dict[str, str]]) -> None:
        """BatchWriteItem in chunks of 25, retrying unprocessed requests."""
        for start in range(0, len(keys), 25):
            requests: Any = {
                self.name: [
                    {"DeleteRequest": {"Key": self._wire.dump(k)}} for k in keys[start : start + 25]
                ]
            }
            self._write_batch(requests)

    def put_items(self, items: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, retrying unprocessed requests."""
        for start in range(0, len(items), 25):
            requests: Any = {
                self.name: [
                    {"PutRequest": {"Item": self._wire.dump(item)}}
                    for item in items[start : start + 25]
                ]
            }
            self._write_batch(requests)

    def _write_batch(self, requests: Any) -> None:
        """One BatchWriteItem, retried for its unprocessed requests (given up after a while)."""
        pending = [requests]

        def write_once() -> Any:
            unprocessed = self._client.batch_write_item(RequestItems=pending[0]).get(
                "UnprocessedItems"
            )
            if unprocessed:
                pending[0] = unprocessed
            return unprocessed

        Retrying(
            stop=stop_after_attempt(_BATCH_ATTEMPTS),
            wait=wait_fixed(0.05),
            retry=retry_if_result(bool),
            retry_error_callback=lambda _: None,
        )(write_once)


class DynamoTable:
    """All reads and writes of the API table."""

    def __init__(self, table_name: str, endpoint_url: str = "") -> None:
        import boto3  # lazy: keeps the handler module cheap to import

        from lambdas.api.adapters.unreachable import translate_unreachable

        self._client = translate_unreachable(
            boto3.client("dynamodb", endpoint_url=endpoint_url or None)
        )
        self._wire = _Wire()
        self._table = _TableOps(self._client, table_name, self._wire)

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

    def acquire_lease(
        self, session_id: str, principal: str, lease_id: str, lease_expires_at: int, now: int
    ) -> SessionRecord:
        """Take the run lease of a live session owned by `principal`; returns the session.
        ConditionFailed if it is missing, foreign, expired or leased by a run in flight."""
        item = self._update(
            session_key(session_id),
            "SET lease_id = :lease, lease_expires_at = :lease_exp",
            {":lease": lease_id, ":lease_exp": lease_expires_at, ":now": now, ":p": principal},
            condition=(
                "attribute_exists(#pk) AND principal = :p AND expires_at >= :now AND "
                "(attribute_not_exists(lease_id) OR lease_expires_at < :now)"
            ),
            names={"#pk": PK},
        )
        return entity_from_item(SessionRecord, item)

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
    ) -> None:
        """What a finished run writes, in ONE transaction: the session commit (lease release,
        version, count; conditional on still holding the lease), the notebook cell and the
        execution record. ConditionFailed: the lease was lost and nothing was written.

        Usage counters are not part of it: every run of a principal adds to the same item, and
        concurrent transactions on one item cancel each other (TransactionConflict)."""
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
        # The token makes a retry of this very transaction after a lost response a no-op
        # instead of a second commit. DynamoDB ties a token to its items for 10 minutes, so a
        # fallback commit of other items (lease lost, failure record) needs its own: the token
        # is a digest of the items.
        token = _transaction_token(items)
        for attempt in Retrying(
            stop=stop_after_attempt(_COMMIT_ATTEMPTS),
            wait=wait_exponential(multiplier=0.02, min=0.02),
            retry=retry_if_not_exception_type(ConditionFailed),
            reraise=True,
        ):
            with attempt:
                try:
                    self._client.transact_write_items(TransactItems=items, ClientRequestToken=token)
                except self._client.exceptions.TransactionCanceledException as exc:
                    reasons = exc.response.get("CancellationReasons", [])
                    if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                        raise ConditionFailed from exc
                    raise

    def add_usage(self, usage: UsageDelta) -> None:
        self._update(
            usage_key(usage.principal, usage.period),
            "ADD executions :n, compute_ms :ms SET #ttl = :ttl",
            {":n": usage.executions, ":ms": usage.compute_ms, ":ttl": usage.ttl},
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

    def put_execution(self, execution: ExecutionRecord) -> None:
        self._table.put_item(
            Item={**execution_key(execution.execution_id), **item_attributes(execution)}
        )

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

    def claim_idempotency(self, claim: IdempotencyRecord) -> None:
        """Record which execution answers this key; ConditionFailed if already claimed."""
        self._put_new(
            idempotency_key(claim.principal, claim.key_hash),
            item_attributes(claim, in_key={"principal", "key_hash"}),
        )

    def delete_idempotency(self, principal: str, key_hash: str) -> None:
        self._table.delete_item(Key=idempotency_key(principal, key_hash))
