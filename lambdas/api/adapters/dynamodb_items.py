"""The API table's item layout (single-table design): keys, attributes, and the mapping of items
to the entities of `lambdas/api/domain.py` and back. `dynamodb.py` does the reads and writes.

Key design (pk / sk are strings; `ttl` is epoch seconds: DynamoDB deletes expired items up to two
days late, so a session's or an idempotency key's reader also checks the item's own expiry):

| item           | pk                                      | sk                   |
|----------------|-----------------------------------------|----------------------|
| session        | SESSION#{session_id}                    | META                 |
| notebook cell  | SESSION#{session_id}                    | CELL#{count:010d}    |
| execution      | EXECUTION#{execution_id}                | META                 |
| usage counter  | USAGE#{principal}                       | PERIOD#{YYYY-MM}     |
| idempotency    | IDEMPOTENCY#{principal}#{sha256(key)}   | META                 |

An item holds its entity's fields that are not None, except those its key holds (a cell's
session id, an idempotency item's principal and key hash). A JSON document (`JsonDocument`: an
execution's `result` and `job`, a cell's `outputs`) is the attribute `{field}` (JSON text) or,
when it lives in S3, `{field}_s3_key`. A session's `ttl` is its `expires_at`; the running
Lambda background job's `job_started` flag belongs to `DynamoTable.claim_job` alone.
"""

from __future__ import annotations

import functools
import typing
from typing import Any, TypeVar

from pydantic import BaseModel

from lambdas.api.domain import JsonDocument, SessionCommit
from lambdas.shared.storage import TABLE_PARTITION_KEY as PK
from lambdas.shared.storage import TABLE_SORT_KEY as SK
from lambdas.shared.storage import TABLE_TTL_ATTRIBUTE as TTL

META = "META"
SESSION_PREFIX = "SESSION#"
CELL_PREFIX = "CELL#"


def session_key(session_id: str) -> dict[str, str]:
    return {PK: f"{SESSION_PREFIX}{session_id}", SK: META}


def execution_key(execution_id: str) -> dict[str, str]:
    return {PK: f"EXECUTION#{execution_id}", SK: META}


def usage_key(principal: str, period: str) -> dict[str, str]:
    return {PK: f"USAGE#{principal}", SK: f"PERIOD#{period}"}


def idempotency_key(principal: str, key_hash: str) -> dict[str, str]:
    return {PK: f"IDEMPOTENCY#{principal}#{key_hash}", SK: META}


def cell_key(session_id: str, execution_count: int) -> dict[str, str]:
    return {PK: f"{SESSION_PREFIX}{session_id}", SK: f"{CELL_PREFIX}{execution_count:010d}"}


# --- items <-> entities -------------------------------------------------------------------------

_Entity = TypeVar("_Entity", bound=BaseModel)


@functools.cache
def _document_fields(entity_type: type[BaseModel]) -> tuple[str, ...]:
    return tuple(
        name
        for name, field in entity_type.model_fields.items()
        if JsonDocument in typing.get_args(field.annotation)
    )


def item_attributes(entity: BaseModel, *, in_key: set[str] | None = None) -> dict[str, Any]:
    """The item attributes of `entity`: fields that are None are left out, and so are those the
    key already holds (`in_key`); a JSON document becomes `{field}` or `{field}_s3_key`."""
    documents = _document_fields(type(entity))
    item = entity.model_dump(
        mode="json", exclude_none=True, exclude=set(documents) | (in_key or set())
    )
    for name in documents:
        document = getattr(entity, name)
        if document is None:
            continue
        if document.text is not None:
            item[name] = document.text
        if document.s3_key:
            item[f"{name}_s3_key"] = document.s3_key
    return item


def entity_from_item(entity_type: type[_Entity], item: dict[str, Any], **from_key: Any) -> _Entity:
    """An item as `entity_type`, the reverse of `item_attributes` (`from_key`: the fields its
    key holds)."""
    values = {**item, **from_key}
    for name in _document_fields(entity_type):
        text = values.pop(name, None)
        s3_key = values.pop(f"{name}_s3_key", None)
        if text is not None or s3_key:
            values[name] = JsonDocument(text=text, s3_key=s3_key)
    return entity_type.model_validate(values)


def session_commit_update(commit: SessionCommit) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The conditional UpdateItem of a session commit (see SessionCommit)."""
    sets = ["last_used_at = :used", "expires_at = :exp", "#ttl = :exp"]
    values: dict[str, Any] = {
        ":lease": commit.lease_id,
        ":used": commit.last_used_at,
        ":exp": commit.expires_at,
    }
    for name, value in (
        ("execution_count", commit.execution_count),
        ("state_version", commit.state_version),
        ("variables", commit.variables),
        ("has_files", commit.has_files),
    ):
        if value is not None:
            sets.append(f"{name} = :{name}")
            values[f":{name}"] = value
    expression = f"SET {', '.join(sets)} REMOVE lease_id, lease_expires_at"
    return expression, values, {"#ttl": TTL}
