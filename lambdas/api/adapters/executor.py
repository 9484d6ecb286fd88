"""The executor adapter for AWS (the port is `lambdas/api/ports.py`'s `Executor`).

`LambdaExecutor` invokes the executor function with `TenantId` (Lambda tenant isolation: one
execution environment per session, or per principal for one-shot runs). The local stack injects
its own adapter (warm worker processes per tenant) through
`lambdas.api.container.override(executor=...)`, the tests theirs.

An invoke is sent once: botocore never retries it (a resend after a read timeout or a reset
connection would run the user's code a second time), only a throttle — refused before anything
ran — is retried here, within a small budget, and then raises `RateLimited` (429 with
Retry-After). An invocation over Lambda's 6 MB request limit raises `PayloadTooLarge` (413).
An executor that crashes, answers over the 6 MB response limit or reports a function error
yields an `ExecutorFailure` with a clear message: the API then commits nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from lambdas.api.errors import PayloadTooLarge, RateLimited
from lambdas.shared import limits
from lambdas.shared.executor_responses import failed_response, parse_response
from lambdas.shared.models import ExecutorInvocation, ExecutorResponse

logger = logging.getLogger(__name__)

# Boto's text of an invoke failure can name the role's ARN: users get this, the log the detail.
EXECUTOR_INVOKE_FAILED = "the executor could not be invoked"
# A throttled invoke ran nothing, so it may be sent again: this often, within this long.
INVOKE_THROTTLE_ATTEMPTS = 3
INVOKE_THROTTLE_BUDGET_SECONDS = 2.0
THROTTLED_RETRY_AFTER_SECONDS = 1
THROTTLED_MESSAGE = (
    "the executor is at its capacity (concurrency, or its tenant environments: Lambda keeps at "
    "most 2,500 per 1,000 concurrent executions); retry shortly"
)
# What Lambda calls an invocation over its request limit (the API model names the first; the
# service has answered with the others).
REQUEST_TOO_LARGE_ERRORS = frozenset(
    {
        "RequestTooLargeException",
        "RequestEntityTooLargeException",
        "SerializedRequestEntityTooLargeException",
    }
)
REQUEST_TOO_LARGE_MESSAGE = (
    "the run's invocation is over Lambda's 6 MB request limit (inline files, or the links to "
    "a session's many files); upload large files to the session instead"
)
# The function error of a response over Lambda's limit, and what the user is told instead.
RESPONSE_TOO_LARGE_ERROR = "Function.ResponseSizeTooLarge"
RESULT_TOO_LARGE_MESSAGE = (
    "the result is too large to return (over Lambda's 6 MB response limit), so it was not "
    "saved; print less, or write large output to a file"
)


class _Throttled(Exception):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__("throttled")
        self.retry_after_seconds = retry_after_seconds


class LambdaExecutor:
    """boto3 `lambda.invoke` of the executor function, tenant = session id or principal."""

    def __init__(
        self,
        function_name: str,
        read_timeout_s: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import boto3  # lazy: keeps the handler module cheap to import
        from botocore.config import Config

        self._function_name = function_name
        self._sleep = sleep
        self._client = boto3.client(
            "lambda",
            # The read must outlive the longest run. One attempt in all (botocore's
            # `max_attempts` would count retries); keepalive stops NATs and load balancers
            # from dropping a connection that is silent for minutes while the code runs.
            config=Config(
                read_timeout=read_timeout_s,
                connect_timeout=5,
                retries={"total_max_attempts": 1, "mode": "standard"},
                tcp_keepalive=True,
            ),
        )

    def invoke(self, invocation: ExecutorInvocation) -> ExecutorResponse:
        payload = invocation.model_dump_json().encode()
        try:
            response = self._invoke_retrying_throttles(invocation.tenant_id, payload)
            body = response["Payload"].read()
        except _Throttled as throttled:
            raise RateLimited(
                THROTTLED_MESSAGE, retry_after_seconds=throttled.retry_after_seconds
            ) from None
        except self._client.exceptions.ClientError as exc:
            if _error_code(exc) in REQUEST_TOO_LARGE_ERRORS or _http_status(exc) == 413:
                raise PayloadTooLarge(
                    REQUEST_TOO_LARGE_MESSAGE,
                    details={"max_bytes": limits.LAMBDA_SYNC_PAYLOAD_MAX_BYTES},
                ) from None
            logger.exception("the executor could not be invoked")
            return failed_response(invocation, EXECUTOR_INVOKE_FAILED)
        except Exception:
            # Boto's error text can name the function's or the caller's ARN (an
            # AccessDeniedException does): it goes to the log, the user gets a generic message.
            logger.exception("the executor could not be invoked")
            return failed_response(invocation, EXECUTOR_INVOKE_FAILED)
        if response.get("FunctionError"):
            return failed_response(invocation, function_error_message(body))
        try:
            parsed = json.loads(body)
        except ValueError:
            return failed_response(invocation, "the executor returned an unreadable response")
        return parse_response(invocation, parsed)

    def _invoke_retrying_throttles(self, tenant_id: str, payload: bytes) -> Any:
        def send() -> Any:
            try:
                return self._client.invoke(
                    FunctionName=self._function_name,
                    InvocationType="RequestResponse",
                    TenantId=tenant_id,
                    Payload=payload,
                )
            except self._client.exceptions.TooManyRequestsException as exc:
                raise _Throttled(_retry_after(exc)) from None

        retrying = Retrying(
            stop=stop_after_attempt(INVOKE_THROTTLE_ATTEMPTS)
            | stop_after_delay(INVOKE_THROTTLE_BUDGET_SECONDS),
            wait=wait_random_exponential(multiplier=0.1, max=1.0),
            retry=retry_if_exception(lambda exc: isinstance(exc, _Throttled)),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(send)


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _retry_after(exc: Any) -> int:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    try:
        return max(THROTTLED_RETRY_AFTER_SECONDS, int(headers.get("retry-after", 0)))
    except ValueError:
        return THROTTLED_RETRY_AFTER_SECONDS


def function_error_message(body: bytes) -> str:
    """What the user is told about a function error (an executor that produced no answer)."""
    try:
        error_type = str(json.loads(body).get("errorType", "Unhandled"))
    except (ValueError, AttributeError):
        error_type = "Unhandled"
    if error_type == RESPONSE_TOO_LARGE_ERROR:
        return RESULT_TOO_LARGE_MESSAGE
    if error_type == "Sandbox.Timedout" or "Timeout" in error_type:
        return "the executor environment timed out and was reset"
    return f"the executor environment crashed ({error_type[:80]}) and was reset"
