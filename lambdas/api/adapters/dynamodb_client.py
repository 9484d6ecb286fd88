"""The DynamoDB low-level client as the adapter (`dynamodb.py`) uses it: the few table
operations it needs, with Python values in and out (boto3's resource layer is not thread-safe,
and the API serves requests on several threads)."""

from __future__ import annotations

from typing import Any

from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_fixed

BATCH_WRITE_ATTEMPTS = 8


class Wire:
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


class TableOps:
    """The few Table operations the adapter uses, on the thread-safe low-level client."""

    def __init__(self, client: Any, name: str, wire: Wire) -> None:
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
            stop=stop_after_attempt(BATCH_WRITE_ATTEMPTS),
            wait=wait_fixed(0.05),
            retry=retry_if_result(bool),
            retry_error_callback=lambda _: None,
        )(write_once)
