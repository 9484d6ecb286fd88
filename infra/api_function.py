"""The API function: the trusted control plane that owns every AWS permission (SPEC §1).

Its environment is exactly `lambdas.api.settings.ApiSettings` minus the local-only fields
(an infra test compares the keys), so infrastructure and runtime cannot drift.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.bundling import stage_sources
from infra.config import StackConfig
from infra.function_identity import own_log_group_and_role
from lambdas.api.settings import ApiSettings

API_HANDLER = "lambdas.api.handler.handler"
# Removed items (TTL expiry or delete) reach the API function, which purges expired sessions'
# objects; the lifecycle rules are the backstop if a batch is ever given up on.
STREAM_RETRY_ATTEMPTS = 5
STREAM_MAX_RECORD_AGE = Duration.days(1)
# lambdas/shared includes the package catalog and its whitelist.toml (GET /v1/packages and the
# validation of requested packages).
API_SOURCES = ["lambdas/__init__.py", "lambdas/api", "lambdas/shared"]
# Settings that only the local stack and tests use (endpoint overrides): unset on AWS.
LOCAL_ONLY_SETTINGS = frozenset({"S3_ENDPOINT_URL", "DYNAMODB_ENDPOINT_URL"})


def _default(field: str) -> str:
    return str(ApiSettings.model_fields[field].default)


class ApiFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        architecture: lambda_.Architecture,
        dependencies_layer: lambda_.ILayerVersion,
        table: dynamodb.ITable,
        bucket: s3.IBucket,
        executor: lambda_.IFunction,
        wheelhouse_url: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # Named after the stack (so stages coexist) because the function invokes itself for
        # background runs: a name token of its own would be a circular reference.
        function_name = f"{stack.stack_name}-api"
        self_arn = stack.format_arn(
            service="lambda",
            resource="function",
            resource_name=function_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        environment = {
            "TABLE_NAME": table.table_name,
            "BUCKET_NAME": bucket.bucket_name,
            "EXECUTOR_MODE": "lambda",
            "EXECUTOR_FUNCTION_NAME": executor.function_name,
            "BACKGROUND_MODE": "lambda",
            "SELF_FUNCTION_NAME": function_name,
            "STAGE": config.stage,
            "NETWORK_MODE": config.networkMode,
            "SYNC_WAIT_MS": str(config.syncWaitMs),
            "DEFAULT_TIMEOUT_MS": str(config.defaultTimeoutMs),
            "MAX_TIMEOUT_MS": str(config.maxTimeoutMs),
            "MAX_CODE_BYTES": str(config.maxCodeBytes),
            "SESSION_TTL_SECONDS": str(config.sessionTtlSeconds),
            "MAX_UPLOAD_BYTES": str(config.maxUploadBytes),
            "QUOTA_EXECUTIONS": str(config.quotaExecutions),
            "QUOTA_COMPUTE_MS": str(config.quotaComputeMs),
            "EXECUTOR_MEMORY_LIMIT_MB": str(config.sandboxMemoryLimitMb),
            "WHEELHOUSE_URL": wheelhouse_url,
            "POWERTOOLS_SERVICE_NAME": _default("POWERTOOLS_SERVICE_NAME"),
            "POWERTOOLS_METRICS_NAMESPACE": _default("POWERTOOLS_METRICS_NAMESPACE"),
            "POWERTOOLS_LOG_LEVEL": _default("POWERTOOLS_LOG_LEVEL"),
            "POWERTOOLS_TRACER_CAPTURE_RESPONSE": _default("POWERTOOLS_TRACER_CAPTURE_RESPONSE"),
        }
        self.log_group, self.role = own_log_group_and_role(
            self, config, "API function: the control plane's grants"
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=function_name,
            description="Lambda Code Interpreter API (control plane)",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=architecture,
            handler=API_HANDLER,
            code=lambda_.Code.from_asset(str(stage_sources(API_SOURCES))),
            layers=[dependencies_layer],
            memory_size=config.apiMemoryMb,
            timeout=Duration.seconds(config.api_timeout_seconds),
            environment=environment,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            role=self.role,
        )
        table.grant_read_write_data(self.function)
        bucket.grant_read_write(self.function)
        executor.grant_invoke(self.function)
        self.function.add_event_source(
            event_sources.DynamoEventSource(
                table,
                starting_position=lambda_.StartingPosition.LATEST,
                batch_size=100,
                bisect_batch_on_error=True,
                retry_attempts=STREAM_RETRY_ATTEMPTS,
                max_record_age=STREAM_MAX_RECORD_AGE,
                filters=[
                    lambda_.FilterCriteria.filter(
                        {"eventName": lambda_.FilterRule.is_equal("REMOVE")}
                    )
                ],
            )
        )
        # Background runs: the function invokes itself asynchronously (by constructed ARN, see
        # above). A grant_invoke on itself would make the role depend on the function.
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="InvokeSelfForBackgroundRuns",
                actions=["lambda:InvokeFunction"],
                resources=[self_arn],
            )
        )
