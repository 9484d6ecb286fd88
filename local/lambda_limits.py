"""Lambda's 6 MB synchronous payload limit, both ways, as the local executor invoke enforces it.

The local pool answers what boto3's `lambda.invoke` would hand the API's executor adapter
(lambdas/api/adapters/executor.py `LambdaExecutor.invoke`), so the API sees the same result:

- an invocation request over 6 MB: Lambda refuses it with `RequestEntityTooLargeException`
  (HTTP 413) before any environment runs; the adapter turns a raised client error into
  "the executor could not be invoked (RequestEntityTooLargeException)";
- a function response over 6 MB: Lambda answers 200 with `FunctionError` and the error type
  `Function.ResponseSizeTooLarge`; the adapter reports it as a crashed environment.
https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
"""

from __future__ import annotations

import json
from typing import Any

from lambdas.api.adapters.executor import _function_error_message, failed_response
from lambdas.shared.models import ExecutorInvocation, ExecutorResponse

LAMBDA_SYNC_PAYLOAD_MAX_BYTES = 6 * 1024 * 1024  # request and response of a synchronous invoke
REQUEST_TOO_LARGE_ERROR = "RequestEntityTooLargeException"
RESPONSE_TOO_LARGE_ERROR = "Function.ResponseSizeTooLarge"


def payload_size(document: Any) -> int:
    return len(json.dumps(document, separators=(",", ":")).encode())


def request_too_large(invocation: ExecutorInvocation) -> ExecutorResponse | None:
    """The adapter's answer to an invoke Lambda refuses for its size, or None."""
    if len(invocation.model_dump_json().encode()) <= LAMBDA_SYNC_PAYLOAD_MAX_BYTES:
        return None
    return failed_response(
        invocation, f"the executor could not be invoked ({REQUEST_TOO_LARGE_ERROR})"
    )


def response_too_large(invocation: ExecutorInvocation, payload: Any) -> ExecutorResponse | None:
    """The adapter's answer to a function response over the limit, or None."""
    if payload_size(payload) <= LAMBDA_SYNC_PAYLOAD_MAX_BYTES:
        return None
    lambda_error = {
        "errorType": RESPONSE_TOO_LARGE_ERROR,
        "errorMessage": "Response payload size exceeded maximum allowed payload size.",
    }
    # The adapter's own wording of a function error (one place for it).
    message = _function_error_message(json.dumps(lambda_error).encode())
    return failed_response(invocation, message)
