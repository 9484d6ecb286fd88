"""The executor adapter for AWS (the port is `lambdas/api/ports.py`'s `Executor`).

`LambdaExecutor` invokes the executor function with `TenantId` (Lambda tenant isolation: one
execution environment per session, or per principal for one-shot runs). The local stack injects
its own adapter (warm worker processes per tenant) through
`lambdas.api.container.override(executor=...)`, the tests theirs.

An executor that crashes or reports a function error yields an `ExecutorFailure` with a clear
message: the API then commits nothing. A throttled invoke raises `RateLimited` (429), so
a synchronous caller can simply retry.
"""

from __future__ import annotations

import json
import logging

from lambdas.api.errors import RateLimited
from lambdas.shared.executor_responses import failed_response, parse_response
from lambdas.shared.models import ExecutorInvocation, ExecutorResponse

logger = logging.getLogger(__name__)

# Boto's text of an invoke failure can name the role's ARN: users get this, the log the detail.
EXECUTOR_INVOKE_FAILED = "the executor could not be invoked"


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
