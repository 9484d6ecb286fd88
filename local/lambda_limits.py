"""Lambda's 6 MB synchronous payload limit, both ways, as the local executor invoke enforces it.

The local pool answers what boto3's `lambda.invoke` would hand the API's executor adapter
(lambdas/api/adapters/executor.py `LambdaExecutor.invoke`), so the API sees the same result:

- an invocation request over 6 MB: Lambda refuses it with `RequestEntityTooLargeException`
  (HTTP 413) before any environment runs; the adapter raises `PayloadTooLarge` (413);
- a function response over 6 MB: Lambda answers 200 with `FunctionError` and the error type
  `Function.ResponseSizeTooLarge`; the adapter reports that the result was too large.
https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
"""

from __future__ import annotations

import json
from typing import Any

from lambdas.api.adapters.executor import (
    REQUEST_TOO_LARGE_MESSAGE,
    RESPONSE_TOO_LARGE_ERROR,
    failed_response,
    function_error_message,
)
from lambdas.api.errors import PayloadTooLarge
from lambdas.shared.limits import LAMBDA_SYNC_PAYLOAD_MAX_BYTES
from lambdas.shared.models import ExecutorInvocation, ExecutorResponse

__all__ = [
    "LAMBDA_SYNC_PAYLOAD_MAX_BYTES",
    "payload_size",
    "request_too_large",
    "response_too_large",
]


def payload_size(document: Any) -> int:
    return len(json.dumps(document, separators=(",", ":")).encode())


def request_too_large(invocation: ExecutorInvocation) -> None:
    """Raise what the adapter raises for an invoke Lambda refuses for its size."""
    if len(invocation.model_dump_json().encode()) > LAMBDA_SYNC_PAYLOAD_MAX_BYTES:
        raise PayloadTooLarge(
            REQUEST_TOO_LARGE_MESSAGE, details={"max_bytes": LAMBDA_SYNC_PAYLOAD_MAX_BYTES}
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
    message = function_error_message(json.dumps(lambda_error).encode())
    return failed_response(invocation, message)
