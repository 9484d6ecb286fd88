"""The API function's environment, as one pydantic model.

The CDK stack sets exactly these variables (an infra test compares the keys with the fields),
so infrastructure and runtime cannot drift. Field names are the upper-cased variable names.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdas.shared import limits


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=True)

    TABLE_NAME: str
    BUCKET_NAME: str
    # "lambda": boto3 invoke with TenantId; "local": the executor adapter is injected with
    # `container.override(executor=...)` (the local stack's environment pool, tests' fakes).
    EXECUTOR_MODE: Literal["lambda", "local"] = "lambda"
    EXECUTOR_FUNCTION_NAME: str = ""
    # Where long runs finish after the sync window: this function invoked asynchronously
    # ("lambda"), or a thread of this process ("thread", local stack and tests).
    BACKGROUND_MODE: Literal["lambda", "thread"] = "lambda"
    SELF_FUNCTION_NAME: str = ""
    STAGE: str = "dev"
    NETWORK_MODE: Literal["isolated", "internet"] = "isolated"
    SYNC_WAIT_MS: int = Field(default=limits.DEFAULT_SYNC_WAIT_MS, gt=0, le=limits.MAX_SYNC_WAIT_MS)
    DEFAULT_TIMEOUT_MS: int = Field(default=limits.DEFAULT_TIMEOUT_MS, gt=0)
    MAX_TIMEOUT_MS: int = Field(default=limits.MAX_TIMEOUT_MS, gt=0)
    MAX_CODE_BYTES: int = Field(default=limits.MAX_CODE_BYTES, gt=0)
    SESSION_TTL_SECONDS: int = Field(default=limits.DEFAULT_SESSION_TTL_SECONDS, gt=0)
    MAX_UPLOAD_BYTES: int = Field(default=limits.MAX_UPLOAD_BYTES, gt=0)
    QUOTA_EXECUTIONS: int = Field(default=limits.DEFAULT_QUOTA_EXECUTIONS, ge=0)
    QUOTA_COMPUTE_MS: int = Field(default=limits.DEFAULT_QUOTA_COMPUTE_MS, ge=0)
    EXECUTOR_MEMORY_LIMIT_MB: int = Field(default=limits.DEFAULT_MEMORY_LIMIT_MB, gt=0)
    # Base URL of the wheelhouse index the executor may read (on-demand packages); empty: none.
    WHEELHOUSE_URL: str = ""
    # Endpoint overrides, empty on AWS. The local stack: S3 through its verifying front
    # (`local/s3_front.py`), DynamoDB on its moto server.
    S3_ENDPOINT_URL: str = ""
    DYNAMODB_ENDPOINT_URL: str = ""
    POWERTOOLS_SERVICE_NAME: str = "lci-api"
    POWERTOOLS_METRICS_NAMESPACE: str = "LambdaCodeInterpreter"
    POWERTOOLS_LOG_LEVEL: str = "INFO"
    # X-Ray never records a response (user output, presigned URLs): see lambdas/api/handler.py.
    POWERTOOLS_TRACER_CAPTURE_RESPONSE: Literal["false"] = "false"


@lru_cache(maxsize=1)
def get_settings() -> ApiSettings:
    return ApiSettings()  # type: ignore[call-arg]  # required fields come from the environment
