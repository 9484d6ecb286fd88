"""The table's DynamoDB stream: when a session item disappears (TTL expiry or DELETE), delete
its S3 objects and notebook cells, so expired sessions leave nothing behind."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecordEventName,
)

from lambdas.api import container
from lambdas.api.adapters.dynamodb_items import META, SESSION_PREFIX
from lambdas.shared.storage import TABLE_PARTITION_KEY, TABLE_SORT_KEY


def is_stream_event(event: Any) -> bool:
    return isinstance(event, dict) and "Records" in event


def handle(event: dict[str, Any]) -> dict[str, Any]:
    purged = 0
    for record in DynamoDBStreamEvent(event).records:
        if record.event_source != "aws:dynamodb" or record.event_name != (
            DynamoDBRecordEventName.REMOVE
        ):
            continue
        keys = (record.dynamodb.keys if record.dynamodb else None) or {}
        pk = str(keys.get(TABLE_PARTITION_KEY) or "")
        sk = str(keys.get(TABLE_SORT_KEY) or "")
        if pk.startswith(SESSION_PREFIX) and sk == META:
            container.services().sessions.purge(pk.removeprefix(SESSION_PREFIX))
            purged += 1
    return {"purged": purged}
