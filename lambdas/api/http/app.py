"""The HTTP entry: API Gateway REST proxy event -> checks -> Powertools' resolver -> response.

`build_resolver` assembles one resolver from the routers of this package; `handle` answers one
event with it. The local stack serves requests on several threads and passes its own `resolve`
(a pool of resolvers, see `local/resolvers.py`): Powertools keeps the request being resolved in
process-wide class attributes, which is right on Lambda only.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router

from lambdas.api.errors import (
    ApiError,
    Forbidden,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
)
from lambdas.api.http import account, errors, executions, files, playground, sessions
from lambdas.api.http.common import (
    ERROR_CODES_EXTENSION,
    KEYED_ROUTE_ERRORS,
    PUBLIC_ROUTE_ERRORS,
    error_description,
    error_responses,
    responses,
)
from lambdas.api.models import ErrorBody
from lambdas.api.telemetry import flush_metrics, logger
from lambdas.shared import routes

Resolve = Callable[[dict[str, Any], Any], dict[str, Any]]

_openapi = Router()
_FILE_PATH_PARAMETER = "file_path"  # the greedy parameter's name in the OpenAPI document


@_openapi.get(
    routes.OPENAPI.resolver_rule,
    summary="OpenAPI 3.1 document of this API (no API key needed)",
    responses=responses((200, "OpenAPI 3.1 JSON", None)),
)
def openapi() -> Response[Any]:
    return Response(
        status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_document()
    )


def build_resolver(
    resolver_class: type[APIGatewayRestResolver] = APIGatewayRestResolver,
) -> APIGatewayRestResolver:
    resolver = resolver_class(enable_validation=True)
    for router in (
        errors.router,
        account.router,
        _openapi,
        sessions.router,
        executions.router,
        files.router,
        playground.router,
    ):
        resolver.include_router(router)
    return resolver


_openapi_cache: dict[str, Any] = {}


def openapi_document() -> dict[str, Any]:
    if "doc" not in _openapi_cache:
        schema = build_resolver().get_openapi_json_schema(
            title="Lambda Code Interpreter API",
            version="1.0.0",
            description="Run untrusted Python with Jupyter semantics in isolated Lambda "
            "environments. Authenticate with the x-api-key header. Error responses list the "
            f"`error.code` values they may carry in `{ERROR_CODES_EXTENSION}`.",
            openapi_version="3.1.0",
        )
        document = json.loads(schema)
        document.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
        }
        document["paths"] = {
            _document_path(path): operations for path, operations in document["paths"].items()
        }
        for path, operations in document["paths"].items():
            for operation in operations.values():
                # Validation errors are answered 400 INVALID_REQUEST (http/errors.py), never
                # the 422 Powertools documents for every validated route.
                operation["responses"].pop(str(HTTPStatus.UNPROCESSABLE_ENTITY.value), None)
                if path in routes.PUBLIC_PATHS:
                    _add_error_responses(operation, PUBLIC_ROUTE_ERRORS)
                else:
                    operation["security"] = [{"apiKey": []}]
                    _add_error_responses(operation, KEYED_ROUTE_ERRORS)
                operation["responses"] = dict(sorted(operation["responses"].items()))
                if _FILE_PATH_PARAMETER in path:
                    operation.setdefault("parameters", []).append(
                        {
                            "name": _FILE_PATH_PARAMETER,
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "title": "File Path"},
                        }
                    )
        _drop_unused_schemas(document, _POWERTOOLS_VALIDATION_SCHEMAS)
        _openapi_cache["doc"] = document
    return _openapi_cache["doc"]


def _add_error_responses(operation: dict[str, Any], errors: tuple[type[ApiError], ...]) -> None:
    """Merge these errors into the operation's responses (a status it already documents gets
    their codes too)."""
    documented = operation["responses"]
    schema_ref = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
    for status, response in error_responses(errors).items():
        response["content"] = {content_types.APPLICATION_JSON: {"schema": schema_ref}}
        existing = documented.get(str(status))
        if existing is None:
            documented[str(status)] = response
            continue
        codes = existing.setdefault(ERROR_CODES_EXTENSION, [])
        codes.extend(code for code in response[ERROR_CODES_EXTENSION] if code not in codes)
        existing["description"] = error_description(status, codes)


# What Powertools adds for its 422 responses (removed above).
_POWERTOOLS_VALIDATION_SCHEMAS = (
    "HTTPValidationError",
    "ResponseValidationError",
    "ValidationError",
)


def _drop_unused_schemas(document: dict[str, Any], names: tuple[str, ...]) -> None:
    schemas = document.get("components", {}).get("schemas", {})
    for name in names:
        others = {key: value for key, value in schemas.items() if key != name}
        rest = json.dumps({**document, "components": {**document["components"], "schemas": others}})
        if f'#/components/schemas/{name}"' not in rest:
            schemas.pop(name, None)


def _document_path(resolver_path: str) -> str:
    """The greedy route's regex (`.+`) as a named OpenAPI path parameter."""
    if resolver_path.endswith("/.+"):
        return resolver_path.removesuffix(".+") + "{" + _FILE_PATH_PARAMETER + "}"
    return resolver_path


def _is_public(event: dict[str, Any]) -> bool:
    # `resource` is the matched route template, whatever stage or base path the URL carries.
    resource = event.get("resource")
    if resource:
        return resource in routes.PUBLIC_PATHS
    path = str(event.get("path") or "").rstrip("/")
    return path.endswith(tuple(routes.PUBLIC_PATHS)) if path else routes.PLAYGROUND.public


def _method_not_allowed(event: dict[str, Any]) -> MethodNotAllowed | None:
    """A known resource reached with a method it does not route (its `ANY` method)."""
    allowed = routes.allowed_methods(str(event.get("resource") or ""))
    method = str(event.get("httpMethod") or "").upper()
    if allowed and method and method not in allowed:
        return MethodNotAllowed(method, allowed)
    return None


def _text_body(event: dict[str, Any]) -> dict[str, Any]:
    """The body as text that is Unicode all through (InvalidRequest otherwise; the services
    would fail on it with a 500): a base64 body must decode as UTF-8, and no JSON string may
    hold a lone surrogate (`"\\ud800"` is valid JSON but no text: it cannot be encoded)."""
    if not event.get("body"):
        return event
    text = str(event["body"])
    if event.get("isBase64Encoded"):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("the request body is not UTF-8 JSON") from None
        event = {**event, "body": text, "isBase64Encoded": False}
    if _SURROGATE_ESCAPE.search(text) and _holds_lone_surrogate(text):
        raise InvalidRequest("the request body holds a lone surrogate (\\ud800-\\udfff)")
    return event


# A JSON escape of a UTF-16 surrogate; only bodies with one are decoded to look further.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _holds_lone_surrogate(text: str) -> bool:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False  # not JSON (or too deep to read): the resolver says so
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _event_principal(event: dict[str, Any]) -> str | None:
    identity = (event.get("requestContext") or {}).get("identity") or {}
    return identity.get("apiKeyId") or None


def _as_json_request(event: dict[str, Any]) -> dict[str, Any]:
    """Every body is JSON, whatever Content-Type the client sent (`curl -d` says form data):
    the resolver would otherwise parse forms or reject other types."""
    headers = event.get("headers") or {}
    declared = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if not event.get("body") or str(declared).lower().startswith("application/json"):
        return event
    json_headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    json_headers["Content-Type"] = content_types.APPLICATION_JSON
    multi = {
        k: v
        for k, v in (event.get("multiValueHeaders") or {}).items()
        if k.lower() != "content-type"
    }
    multi["Content-Type"] = [content_types.APPLICATION_JSON]
    return {**event, "headers": json_headers, "multiValueHeaders": multi}


_lambda_resolver: list[APIGatewayRestResolver] = []


def _resolve_on_lambda(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if not _lambda_resolver:
        _lambda_resolver.append(build_resolver())
    return _lambda_resolver[0].resolve(event, context)


def handle(event: dict[str, Any], context: Any, resolve: Resolve | None = None) -> dict[str, Any]:
    try:
        if not _is_public(event) and not _event_principal(event):
            # Before routing and body validation: without a key, nothing else is disclosed.
            return errors.raw_error(Forbidden())
        wrong_method = _method_not_allowed(event)
        if wrong_method is not None:
            return errors.raw_error(wrong_method)
        try:
            event = _text_body(event)
        except InvalidRequest as exc:
            return errors.raw_error(exc)
        return (resolve or _resolve_on_lambda)(_as_json_request(event), context)
    except Exception:
        logger.exception("request could not be resolved")
        return errors.raw_error(InternalError())
    finally:
        flush_metrics()
