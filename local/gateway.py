"""API Gateway's and Lambda's limits on the API function, as the local stack enforces them.

The deployed API answers what these limits say before or instead of the API function, so the
local stack does too (in the product's error shape, as infra/rest_api.py's gateway responses
render them):

- a request body over 10 MB: 413 `PAYLOAD_TOO_LARGE` (API Gateway's payload quota);
- an integration that has not answered after 29 s: 504 `INTEGRATION_TIMEOUT`, sent at 29 s while
  the handler keeps running in its thread, as the Lambda function does on AWS;
- a proxy result over Lambda's 6 MB synchronous response limit (the API function's serialized
  result: its body is JSON-encoded once more inside it) or a body over API Gateway's 10 MB:
  502 `INTERNAL` (the invoke fails with `Function.ResponseSizeTooLarge`; API Gateway answers
  its 5xx gateway response).

`LCI_INTEGRATION_TIMEOUT_MS` shortens the timeout (tests).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from local.events import HttpResponse, from_proxy_result
from local.lambda_limits import LAMBDA_SYNC_PAYLOAD_MAX_BYTES, payload_size

logger = logging.getLogger(__name__)

API_GATEWAY_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
API_GATEWAY_INTEGRATION_TIMEOUT_MS = 29_000

ProxyHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def error_response(status: int, code: str, message: str) -> HttpResponse:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return HttpResponse(status, [("Content-Type", "application/json")], body)


def payload_too_large() -> HttpResponse:
    return error_response(
        413, "PAYLOAD_TOO_LARGE", "request body over API Gateway's 10 MB payload limit"
    )


def integration_timeout() -> HttpResponse:
    return error_response(504, "INTEGRATION_TIMEOUT", "Endpoint request timed out")


def integration_failure() -> HttpResponse:
    return error_response(502, "INTERNAL", "internal error")


def call_integration(
    handler: ProxyHandler, event: dict[str, Any], context: Any, timeout_ms: int
) -> HttpResponse:
    """Call the API handler as API Gateway's Lambda proxy integration would."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = handler(event, context)
        except BaseException as exc:  # the function failed: API Gateway says 502
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="lci-api-integration", daemon=True).start()
    if not done.wait(timeout_ms / 1000):
        logger.warning(
            "API handler still running after %d ms: answered 504 as API Gateway does", timeout_ms
        )
        return integration_timeout()
    if "error" in outcome:
        logger.error("API handler failed", exc_info=outcome["error"])
        return integration_failure()
    result = outcome["result"]
    serialized = payload_size(result)
    if serialized > LAMBDA_SYNC_PAYLOAD_MAX_BYTES:
        logger.warning(
            "API function response of %d bytes is over Lambda's 6 MB limit "
            "(Function.ResponseSizeTooLarge): answered 502",
            serialized,
        )
        return integration_failure()
    response = from_proxy_result(result)
    if len(response.body) > API_GATEWAY_MAX_PAYLOAD_BYTES:
        return integration_failure()
    return response
