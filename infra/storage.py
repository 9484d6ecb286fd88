"""The bucket (sessions, executions, wheelhouse) and the single DynamoDB table.

Both come from `lambdas/shared/storage.py`, the same definitions the local stack creates.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import StackConfig
from lambdas.shared import storage

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
_PROJECTIONS = {
    "ALL": dynamodb.ProjectionType.ALL,
    "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY,
    "INCLUDE": dynamodb.ProjectionType.INCLUDE,
}
# Server access logs are kept for audits, then expire.
ACCESS_LOG_EXPIRY_DAYS = 90


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        removal = config.removal_policy
        auto_delete = not config.retainData

        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(ACCESS_LOG_EXPIRY_DAYS))],
            removal_policy=removal,
            auto_delete_objects=auto_delete,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="bucket/",
            cors=[_cors_rule(rule) for rule in storage.BUCKET_CORS_RULES],
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-sessions",
                    prefix=storage.SESSIONS_PREFIX,
                    expiration=Duration.days(config.sessionObjectExpiryDays),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="expire-executions",
                    prefix=storage.EXECUTIONS_PREFIX,
                    expiration=Duration.days(config.executionObjectExpiryDays),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
            ],
            removal_policy=removal,
            auto_delete_objects=auto_delete,
        )
        self.table = _table(self, removal)


def _cors_rule(rule: dict[str, Any]) -> s3.CorsRule:
    return s3.CorsRule(
        allowed_methods=[s3.HttpMethods(method) for method in rule["AllowedMethods"]],
        allowed_origins=list(rule["AllowedOrigins"]),
        allowed_headers=list(rule.get("AllowedHeaders", [])) or None,
        exposed_headers=list(rule.get("ExposeHeaders", [])) or None,
        max_age=rule.get("MaxAgeSeconds"),
    )


def _table(scope: Construct, removal: RemovalPolicy) -> dynamodb.Table:
    definition = storage.table_create_kwargs("unused")
    types = {a["AttributeName"]: a["AttributeType"] for a in definition["AttributeDefinitions"]}

    def key(schema: list[dict[str, str]], kind: str) -> dynamodb.Attribute | None:
        for element in schema:
            if element["KeyType"] == kind:
                name = element["AttributeName"]
                return dynamodb.Attribute(name=name, type=_ATTRIBUTE_TYPES[types[name]])
        return None

    partition_key = key(definition["KeySchema"], "HASH")
    assert partition_key is not None, "the shared table definition has no partition key"
    table = dynamodb.Table(
        scope,
        "Table",
        partition_key=partition_key,
        sort_key=key(definition["KeySchema"], "RANGE"),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        time_to_live_attribute=storage.TABLE_TTL_ATTRIBUTE,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        stream=dynamodb.StreamViewType(storage.TABLE_STREAM_VIEW_TYPE),
        removal_policy=removal,
    )
    for index in definition.get("GlobalSecondaryIndexes", []):
        projection = index.get("Projection", {})
        index_partition_key = key(index["KeySchema"], "HASH")
        assert index_partition_key is not None
        table.add_global_secondary_index(
            index_name=index["IndexName"],
            partition_key=index_partition_key,
            sort_key=key(index["KeySchema"], "RANGE"),
            projection_type=_PROJECTIONS[projection.get("ProjectionType", "ALL")],
            non_key_attributes=projection.get("NonKeyAttributes"),
        )
    return table
