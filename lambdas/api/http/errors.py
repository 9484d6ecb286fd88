"""Error mapping: domain errors through the ONE registry in `lambdas/api/errors.py`, validation
errors as 400 `INVALID_REQUEST`, unknown routes 404, a known path's other methods 405 (with
`Allow`), anything unexpected 500 `INTERNAL` with a generic message (details go to the log
only)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from lambdas.api.errors import (
    ApiError,
    InternalError,
    InvalidRequest,
    RouteNotFound,
    error_body,
    status_and_code,
)
from lambdas.api.http.common import json_response
from lambdas.api.telemetry import logger

router = Router()


@router.exception_handler(ApiError)
def api_error(error: ApiError) -> Response[Any]:
    status, code = status_and_code(error)
    return json_response(
        status, error_body(code, error.message, error.details), headers=error.response_headers()
    )


@router.exception_handler(RequestValidationError)
def _validation_error(error: RequestValidationError) -> Response[Any]:
    problems = [
        {"loc": [str(part) for part in e.get("loc", ())], "type": str(e.get("type", ""))}
        for e in error.errors()
    ]
    if any(p["type"] == "json_invalid" for p in problems):
        return api_error(InvalidRequest("the request body is not valid JSON"))
    fields = ", ".join(".".join(p["loc"][1:] or p["loc"]) for p in problems) or "body"
    return api_error(
        InvalidRequest(f"invalid request: check {fields}", details={"errors": problems})
    )


@router.exception_handler(RecursionError)
def _nested_too_deeply(_: RecursionError) -> Response[Any]:
    # Only request data nests without bound here: a body of `[[[[...` deeper than the JSON
    # parser's stack. Logged in full, in case it ever is something else.
    logger.warning("request nested too deeply", exc_info=True)
    return api_error(InvalidRequest("the request body is nested too deeply"))


@router.exception_handler(NotFoundError)
def _route_not_found(_: NotFoundError) -> Response[Any]:
    return api_error(RouteNotFound())


@router.exception_handler(ServiceError)
def _service_error(error: ServiceError) -> Response[Any]:
    if error.status_code == 404:
        return api_error(RouteNotFound())
    if 400 <= error.status_code < 500:
        return api_error(InvalidRequest())
    return api_error(InternalError())


@router.exception_handler(Exception)
def _unexpected(error: Exception) -> Response[Any]:
    logger.exception("unhandled error")
    return api_error(InternalError())


def raw_error(error: ApiError) -> dict[str, Any]:
    """The proxy result for an error answered before (or instead of) the resolver."""
    status, code = status_and_code(error)
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON, **error.response_headers()},
        "body": json.dumps(error_body(code, error.message, error.details)),
        "isBase64Encoded": False,
    }
