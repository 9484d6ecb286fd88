"""HTTP request -> API Gateway REST API proxy event (payload v1) -> HTTP response.

The local stack hands the real API handler exactly what API Gateway would: `resource` is the
matched route template, `pathParameters` its variables, `requestContext.identity.apiKeyId` the
caller's key id (set only after the key was checked, as API Gateway does with
`apiKeyRequired`).
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from lambdas.shared.routes import (
    FORBIDDEN_CODE,
    FORBIDDEN_MESSAGE,
    PROXY_PATH,
    RESOURCE_PATHS,
    ROOT_PATH,
)

LOCAL_ACCOUNT_ID = "000000000000"
LOCAL_API_ID = "local"
LOCAL_STAGE = "local"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # path and query string as sent, e.g. "/v1/sessions?x=1"
    headers: list[tuple[str, str]]
    body: bytes = b""
    source_ip: str = "127.0.0.1"
    protocol: str = "HTTP/1.1"


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def match_route(path: str) -> tuple[str, dict[str, str] | None]:
    """(resource template, path parameters) for a decoded path; the root or the greedy catch-all
    otherwise (infra/rest_api.py gives both an `ANY` method, as every resource)."""
    segments = path.strip("/").split("/") if path.strip("/") else []
    for template in RESOURCE_PATHS:
        params = _match(template, segments)
        if params is not None:
            return template, params or None
    if not segments:
        return ROOT_PATH, None
    return PROXY_PATH, {"proxy": path.lstrip("/")}


def _match(template: str, segments: list[str]) -> dict[str, str] | None:
    parts = template.strip("/").split("/")
    params: dict[str, str] = {}
    for index, part in enumerate(parts):
        if part.startswith("{") and part.endswith("+}"):
            rest = segments[index:]
            if not rest or not all(rest):
                return None
            params[part[1:-2]] = "/".join(rest)
            return params
        if index >= len(segments):
            return None
        if part.startswith("{") and part.endswith("}"):
            if not segments[index]:
                return None
            params[part[1:-1]] = segments[index]
        elif part != segments[index]:
            return None
    return params if len(parts) == len(segments) else None


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    """Last value of a header, case-insensitively (what API Gateway puts into `headers`)."""
    lowered = name.lower()
    value = None
    for key, item in headers:
        if key.lower() == lowered:
            value = item
    return value


def to_proxy_event(request: HttpRequest, api_key_id: str | None) -> dict[str, Any]:
    """Build the REST API (v1) proxy event for one request."""
    split = urlsplit(request.target)
    path = unquote(split.path) or "/"
    resource, path_parameters = match_route(path)

    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for key, value in request.headers:
        headers[key] = value
        multi_headers.setdefault(key, []).append(value)

    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for key, value in parse_qsl(split.query, keep_blank_values=True):
        query[key] = value
        multi_query.setdefault(key, []).append(value)

    body: str | None
    is_base64 = False
    if not request.body:
        body = None
    else:
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            body = base64.b64encode(request.body).decode("ascii")
            is_base64 = True

    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    presented_key = header_value(request.headers, "x-api-key")
    identity: dict[str, Any] = {
        "accessKey": None,
        "accountId": None,
        "apiKey": presented_key if api_key_id else None,
        "apiKeyId": api_key_id,
        "caller": None,
        "cognitoAuthenticationProvider": None,
        "cognitoAuthenticationType": None,
        "cognitoIdentityId": None,
        "cognitoIdentityPoolId": None,
        "principalOrgId": None,
        "sourceIp": request.source_ip,
        "user": None,
        "userAgent": header_value(request.headers, "user-agent") or "",
        "userArn": None,
    }
    return {
        "resource": resource,
        "path": path,
        "httpMethod": request.method.upper(),
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT_ID,
            "apiId": LOCAL_API_ID,
            "domainName": header_value(request.headers, "host") or "127.0.0.1",
            "domainPrefix": LOCAL_API_ID,
            "extendedRequestId": request_id,
            "httpMethod": request.method.upper(),
            "identity": identity,
            "path": f"/{LOCAL_STAGE}{path}",
            "protocol": request.protocol,
            "requestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(time.time() * 1000),
            "resourceId": LOCAL_API_ID,
            "resourcePath": resource,
            "stage": LOCAL_STAGE,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def from_proxy_result(result: dict[str, Any]) -> HttpResponse:
    """Turn the handler's proxy result into an HTTP response (multi-value headers win)."""
    status = int(result.get("statusCode", 500))
    headers: list[tuple[str, str]] = []
    multi = result.get("multiValueHeaders") or {}
    for key, values in multi.items():
        headers.extend((key, str(v)) for v in values)
    for key, value in (result.get("headers") or {}).items():
        if key not in multi:
            headers.append((key, str(value)))
    raw_body = result.get("body") or ""
    body = (
        base64.b64decode(raw_body)
        if result.get("isBase64Encoded")
        else raw_body.encode("utf-8")
        if isinstance(raw_body, str)
        else bytes(raw_body)
    )
    return HttpResponse(status=status, headers=headers, body=body)


def forbidden_response() -> HttpResponse:
    """What the deployed API Gateway answers to a missing or unknown key (its gateway response
    for INVALID_API_KEY is customised to the product's error shape, see infra/rest_api.py)."""
    import json

    document = {"error": {"code": FORBIDDEN_CODE, "message": FORBIDDEN_MESSAGE}}
    return HttpResponse(
        status=403,
        headers=[("Content-Type", "application/json"), ("x-amzn-ErrorType", "ForbiddenException")],
        body=json.dumps(document).encode(),
    )
