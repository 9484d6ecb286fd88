"""Table and bucket definitions shared by the CDK stack, the local stack and the API adapters.

One DynamoDB table, single-table design (the API's DynamoDB adapter documents the item types):
partition key `pk`, sort key `sk`, both strings; TTL attribute `ttl` (epoch seconds).
"""

from __future__ import annotations

from typing import Any, Final

TABLE_PARTITION_KEY: Final = "pk"
TABLE_SORT_KEY: Final = "sk"
TABLE_TTL_ATTRIBUTE: Final = "ttl"
# The table's stream feeds the API function (`Records` events): when TTL removes a session item,
# the API deletes that session's S3 objects and notebook cells. Keys are all it needs.
TABLE_STREAM_VIEW_TYPE: Final = "KEYS_ONLY"

# S3 key layout (the API's S3 adapter builds keys only through these prefixes)
SESSIONS_PREFIX: Final = "sessions/"
EXECUTIONS_PREFIX: Final = "executions/"
WHEELHOUSE_PREFIX: Final = "wheelhouse/"

# Browser uploads go straight to S3 with a presigned POST.
BUCKET_CORS_RULES: Final[list[dict[str, Any]]] = [
    {
        "AllowedMethods": ["GET", "POST"],
        "AllowedOrigins": ["*"],
        "AllowedHeaders": ["*"],
        "MaxAgeSeconds": 3000,
    }
]


def table_create_kwargs(table_name: str) -> dict[str, Any]:
    """boto3 `create_table` arguments matching the CDK table (used by the local stack and tests)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": TABLE_PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": TABLE_SORT_KEY, "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
        ],
    }
