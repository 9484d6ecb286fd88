"""What every route shares: the caller (dependencies injected by Powertools' `Depends`), the
JSON response shape and the documented error responses."""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools.event_handler import Request, Response, content_types
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from lambdas.api.errors import Forbidden
from lambdas.api.models import ErrorBody
from lambdas.shared.routes import GREEDY_PATH_PARAMETER

ERROR_RESPONSES: dict[int, Any] = {
    status: {
        "description": description,
        "content": {content_types.APPLICATION_JSON: {"model": ErrorBody}},
    }
    for status, description in (
        (400, "Invalid request (INVALID_REQUEST, PACKAGE_NOT_ALLOWED, INVALID_PATH)"),
        (403, "Missing or unknown API key (FORBIDDEN)"),
        (404, "Not found (SESSION_NOT_FOUND, EXECUTION_NOT_FOUND, FILE_NOT_FOUND)"),
        (405, "Method not allowed on this path (METHOD_NOT_ALLOWED; see the Allow header)"),
        (409, "Conflict (SESSION_BUSY, TOO_MANY_FILES, EXECUTION_FINISHED)"),
        (413, "Payload too large (PAYLOAD_TOO_LARGE)"),
        (429, "Too many requests or quota exhausted (RATE_LIMITED, QUOTA_EXCEEDED)"),
        (500, "Internal error (INTERNAL)"),
        (503, "Storage unreachable; retry shortly (SERVICE_UNAVAILABLE)"),
    )
}


def responses(*extra: tuple[int, str, Any]) -> dict[int, Any]:
    out = dict(ERROR_RESPONSES)
    for status, description, model in extra:
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
