"""Deploy-time configuration: CDK context (cdk.json or `-c key=value`) as one pydantic model.

Every key has a default, so an empty context deploys a working `dev` stage. Values given on the
command line arrive as strings; pydantic coerces them. docs/deploy.md (Settings) lists the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Node
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lambdas.shared import limits

# Lambda's ceiling for a function timeout; the API function needs room above the executor's.
LAMBDA_MAX_TIMEOUT_SECONDS = 900
# The executor gets this long beyond the longest allowed run: restore, upload, cleanup.
EXECUTOR_TIMEOUT_MARGIN_SECONDS = 30
# The API function waits for a background run to finish, plus its own bookkeeping.
API_BACKGROUND_MARGIN_SECONDS = 60

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# CloudWatch Logs accepts only these retention periods (days -> CDK enum member).
LOG_RETENTION_DAYS = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS",
    30: "ONE_MONTH", 60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS",
    150: "FIVE_MONTHS", 180: "SIX_MONTHS", 365: "ONE_YEAR", 400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1827: "FIVE_YEARS", 3653: "TEN_YEARS",
}  # fmt: skip


class StackConfig(BaseModel):
    """One deployment (stage). Field names are the CDK context keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(
        default="dev",
        pattern=r"^[a-z][a-z0-9-]{0,19}$",
        description="Stage name; part of the stack name, so stages deploy side by side.",
    )
    networkMode: Literal["isolated", "internet"] = Field(
        default="isolated",
        description="isolated: executor in a VPC with isolated subnets and an S3 endpoint only; "
        "internet: executor outside any VPC (can reach PyPI and the internet).",
    )
    dnsFirewall: bool = Field(
        default=True,
        description="isolated mode: Route 53 Resolver DNS Firewall on the executor's VPC answers "
        "only the bucket's regional S3 host (DNS would otherwise be a way out).",
    )
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    executorMemoryMb: int = Field(default=3008, ge=512, le=10240)
    executorEphemeralStorageMb: int = Field(default=2048, ge=512, le=10240)
    apiMemoryMb: int = Field(default=512, ge=128, le=10240)
    maxTimeoutMs: int = Field(default=limits.MAX_TIMEOUT_MS, ge=limits.MIN_TIMEOUT_MS)
    defaultTimeoutMs: int = Field(default=limits.DEFAULT_TIMEOUT_MS, ge=limits.MIN_TIMEOUT_MS)
    syncWaitMs: int = Field(default=limits.DEFAULT_SYNC_WAIT_MS, gt=0, le=limits.MAX_SYNC_WAIT_MS)
    maxCodeBytes: int = Field(default=limits.MAX_CODE_BYTES, gt=0)
    maxUploadBytes: int = Field(default=limits.MAX_UPLOAD_BYTES, gt=0)
    sessionTtlSeconds: int = Field(
        default=limits.DEFAULT_SESSION_TTL_SECONDS,
        ge=limits.MIN_SESSION_TTL_SECONDS,
        le=limits.MAX_SESSION_TTL_SECONDS,
    )
    sandboxMemoryLimitMb: int = Field(default=limits.DEFAULT_MEMORY_LIMIT_MB, gt=0)
    throttleRateLimit: float = Field(default=10, gt=0, description="Requests/s per API key.")
    throttleBurstLimit: int = Field(default=20, gt=0)
    publicThrottleRateLimit: float = Field(
        default=5,
        gt=0,
        description="Requests/s of each route served without a key (health, OpenAPI): no usage "
        "plan covers them, so they are throttled per method, for all callers together.",
    )
    publicThrottleBurstLimit: int = Field(default=10, gt=0)
    quotaRequestsPerMonth: int = Field(default=100_000, gt=0, description="Per API key.")
    quotaExecutions: int = Field(default=limits.DEFAULT_QUOTA_EXECUTIONS, ge=0)
    quotaComputeMs: int = Field(default=limits.DEFAULT_QUOTA_COMPUTE_MS, ge=0)
    reservedConcurrency: int = Field(
        default=0, ge=0, description="Executor reserved concurrency; 0 leaves it unreserved."
    )
    sessionObjectExpiryDays: int = Field(default=30, ge=1)
    executionObjectExpiryDays: int = Field(default=7, ge=1)
    logRetentionDays: int = Field(default=30, ge=1)
    executorDurationAlarmPercent: int = Field(
        default=80, gt=0, le=100, description="p95 executor duration alarm, % of its timeout."
    )
    retainData: bool = Field(
        default=True, description="Keep the bucket and table when the stack is destroyed."
    )
    apiGatewayCloudWatchRole: bool = Field(
        default=True,
        description="Create the account-wide API Gateway CloudWatch role that access logs need; "
        "false if the account already has one.",
    )
    layersDir: str = Field(
        default="",
        description="A built layers tree (<dir>/<arch>/manifest.json); empty: build it with "
        "`python -m layers.build` for `layersProfile`.",
    )
    layersProfile: Literal["default", "ci"] = "default"

    @model_validator(mode="after")
    def _timeouts_fit(self) -> StackConfig:
        if self.executor_timeout_seconds > LAMBDA_MAX_TIMEOUT_SECONDS:
            raise ValueError(
                f"maxTimeoutMs={self.maxTimeoutMs} leaves no room under Lambda's "
                f"{LAMBDA_MAX_TIMEOUT_SECONDS} s limit"
            )
        if self.logRetentionDays not in LOG_RETENTION_DAYS:
            raise ValueError(f"logRetentionDays must be one of {sorted(LOG_RETENTION_DAYS)}")
        if self.defaultTimeoutMs > self.maxTimeoutMs:
            raise ValueError("defaultTimeoutMs must not exceed maxTimeoutMs")
        return self

    @property
    def stack_name(self) -> str:
        return f"LambdaCodeInterpreter-{self.stage}"

    @property
    def removal_policy(self) -> RemovalPolicy:
        """For everything holding data or logs."""
        return RemovalPolicy.RETAIN if self.retainData else RemovalPolicy.DESTROY

    @property
    def log_retention(self) -> logs.RetentionDays:
        return logs.RetentionDays[LOG_RETENTION_DAYS[self.logRetentionDays]]

    @property
    def executor_timeout_seconds(self) -> int:
        return -(-self.maxTimeoutMs // 1000) + EXECUTOR_TIMEOUT_MARGIN_SECONDS

    @property
    def api_timeout_seconds(self) -> int:
        return min(
            LAMBDA_MAX_TIMEOUT_SECONDS,
            self.executor_timeout_seconds + API_BACKGROUND_MARGIN_SECONDS,
        )

    @classmethod
    def from_context(cls, node: Node) -> StackConfig:
        """Read every known key from the CDK context (strings from `-c` are coerced)."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            value = node.try_get_context(name)
            if value is not None:
                values[name] = value
        return cls.model_validate(values)
