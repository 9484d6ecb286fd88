"""What every route shares: the caller (dependencies injected by Powertools' `Depends`), the
JSON response shape and the documented responses (errors from the one registry)."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, cast

from aws_lambda_powertools.event_handler import Request, Response, content_types
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from lambdas.api.errors import (
    ApiError,
    Forbidden,
    InternalError,
    QuotaExceeded,
    RateLimited,
    registered_status_and_code,
)
from lambdas.api.models import ErrorBody
from lambdas.shared.routes import GREEDY_PATH_PARAMETER

# Every route may fail unexpectedly (500). API Gateway answers before the API function runs: on
# a keyed route a missing or unknown key (403), the usage plan's throttle and monthly quota
# (429); on a public route its method throttle (429, infra/rest_api.py).
# `app.openapi_document` adds these to every keyed or public operation.
EVERY_ROUTE_ERRORS: tuple[type[ApiError], ...] = (InternalError,)
KEYED_ROUTE_ERRORS: tuple[type[ApiError], ...] = (Forbidden, RateLimited, QuotaExceeded)
PUBLIC_ROUTE_ERRORS: tuple[type[ApiError], ...] = (RateLimited,)
# The OpenAPI extension on an error response that lists the `error.code` values it may carry.
ERROR_CODES_EXTENSION = "x-error-codes"


def error_responses(errors: Iterable[type[ApiError]]) -> dict[int, Any]:
    """OpenAPI responses for these errors, one per status (from the registry in
    `lambdas/api/errors.py`), each naming its error codes."""
    codes_by_status: dict[int, list[str]] = {}
    for error in errors:
        status, code = registered_status_and_code(error)
        codes = codes_by_status.setdefault(status, [])
        if code not in codes:
            codes.append(code)
    return {
        status: {
            "description": error_description(status, codes),
            "content": {content_types.APPLICATION_JSON: {"model": ErrorBody}},
            ERROR_CODES_EXTENSION: codes,
        }
        for status, codes in sorted(codes_by_status.items())
    }


def error_description(status: int, codes: list[str]) -> str:
    return f"{HTTPStatus(status).phrase} ({', '.join(codes)})"


def responses(
    *success: tuple[int, str, Any], errors: Iterable[type[ApiError]] = ()
) -> dict[int, Any]:
    """A route's OpenAPI responses: its success statuses (status, description, model or None)
    and the errors its service raises (besides `EVERY_ROUTE_ERRORS`)."""
    out = error_responses((*errors, *EVERY_ROUTE_ERRORS))
    for status, description, model in success:
        entry: dict[str, Any] = {"description": description}
        if model is not None:
            entry["content"] = {content_types.APPLICATION_JSON: {"model": model}}
        out[status] = entry
    return out


def _event(request: Request) -> APIGatewayProxyEvent:
    return cast(APIGatewayProxyEvent, request.resolved_event)


def caller(request: Request) -> str:
    """The API key id API Gateway vouched for (Forbidden without one)."""
    identity = _event(request).request_context.identity
    principal = identity.api_key_id if identity else None
    if not principal:
        raise Forbidden()
    return principal


def idempotency_key(request: Request) -> str | None:
    return request.resolved_event.headers.get("idempotency-key")


def greedy_path(request: Request) -> str:
    """The `{path+}` parameter, as API Gateway decoded it into the event's path parameters."""
    return str((_event(request).path_parameters or {}).get(GREEDY_PATH_PARAMETER, ""))


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers=headers or None,
    )
