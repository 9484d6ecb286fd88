"""Executor port and its adapters.

`LambdaExecutor` invokes the executor function with `TenantId` (Lambda tenant isolation: one
execution environment per session, or per principal for one-shot runs). `InProcessExecutor`
calls the executor handler in this process (tests). The local stack injects its own adapter
(warm worker processes per tenant) through `lambdas.api.container.override(executor=...)`.

An executor that crashes or reports a function error yields an `error` ExecutionResult with a
clear message: the API then commits nothing. A throttled invoke raises `RateLimited` (429), so
a synchronous caller can simply retry.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from lambdas.api.errors import RateLimited
from lambdas.shared.models import (
    ExecutionError,
    ExecutionResult,
    ExecutionStatus,
    ExecutorInvocation,
    ExecutorResponse,
)

logger = logging.getLogger(__name__)


class ExecutorPort(Protocol):
    def invoke(self, invocation: ExecutorInvocation) -> ExecutorResponse: ...


EXECUTOR_FAILURE_NAME = "ExecutorError"
EXECUTOR_INVOKE_FAILED = "the executor could not be invoked"


def failed_response(invocation: ExecutorInvocation, message: str) -> ExecutorResponse:
    """What the API reports when the executor did not return a result (nothing is committed)."""
    return ExecutorResponse(
        result=ExecutionResult(
            execution_id=invocation.execution_id,
            session_id=invocation.session_id,
            status=ExecutionStatus.ERROR,
            success=False,
            execution_count=None,
            error=ExecutionError(name=EXECUTOR_FAILURE_NAME, value=message),
            stderr=message,
        )
    )


def is_executor_failure(response: ExecutorResponse) -> bool:
    """True for `failed_response` results (a user exception always carries an execution count)."""
    result = response.result
    return (
        result.execution_count is None
        and result.error is not None
        and result.error.name == EXECUTOR_FAILURE_NAME
    )


def parse_response(invocation: ExecutorInvocation, payload: Any) -> ExecutorResponse:
    try:
        return ExecutorResponse.model_validate(payload)
    except ValueError:
        return failed_response(invocation, "the executor returned an unreadable response")


class LambdaExecutor:
    """boto3 `lambda.invoke` of the executor function, tenant = session id or principal."""

    def __init__(self, function_name: str, read_timeout_s: int) -> None:
        import boto3  # lazy: keeps the handler module cheap to import
        from botocore.config import Config

        self._function_name = function_name
        self._client = boto3.client(
            "lambda",
            # The read must outlive the longest run; throttles are retried, user code is not
            # re-run after a response was lost because the timeout never fires first.
            config=Config(
                read_timeout=read_timeout_s,
                connect_timeout=5,
                retries={"mode": "standard", "max_attempts": 3},
            ),
        )

    def invoke(self, invocation: ExecutorInvocation) -> ExecutorResponse:
        try:
            response = self._client.invoke(
                FunctionName=self._function_name,
                InvocationType="RequestResponse",
                TenantId=invocation.tenant_id,
                Payload=invocation.model_dump_json().encode(),
            )
            body = response["Payload"].read()
        except self._client.exceptions.TooManyRequestsException:
            raise RateLimited("the executor is at its concurrency limit; retry shortly") from None
        except Exception:
            # Boto's error text can name the function's or the caller's ARN (an
            # AccessDeniedException does): it goes to the log, the user gets a generic message.
            logger.exception("the executor could not be invoked")
            return failed_response(invocation, EXECUTOR_INVOKE_FAILED)
        if response.get("FunctionError"):
            return failed_response(invocation, _function_error_message(body))
        try:
            payload = json.loads(body)
        except ValueError:
            return failed_response(invocation, "the executor returned an unreadable response")
        return parse_response(invocation, payload)


def _function_error_message(body: bytes) -> str:
    try:
        error_type = str(json.loads(body).get("errorType", "Unhandled"))
    except (ValueError, AttributeError):
        error_type = "Unhandled"
    if error_type == "Sandbox.Timedout" or "Timeout" in error_type:
        return "the executor environment timed out and was reset"
    return f"the executor environment crashed ({error_type[:80]}) and was reset"


class InProcessExecutor:
    """Calls `lambdas.executor.handler.handler` directly (tests; no isolation)."""

    def invoke(self, invocation: ExecutorInvocation) -> ExecutorResponse:
        from lambdas.executor import handler as executor_handler  # type: ignore[attr-defined]

        try:
            payload = executor_handler.handler(invocation.model_dump(mode="json"), None)
        except Exception as exc:
            return failed_response(invocation, f"the executor failed ({type(exc).__name__})")
        return parse_response(invocation, payload)
