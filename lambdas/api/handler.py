"""API function entry: HTTP API v1 (SPEC §3) on Powertools' REST resolver.

Thin on purpose: each route reads the principal and the validated body, calls one service
method and shapes the HTTP answer. Domain errors map to the JSON error shape through the ONE
registry in `errors.py`; validation errors become 400 `INVALID_REQUEST`; unknown routes 404;
anything unexpected 500 `INTERNAL` with a generic message (details go to the log only).

`handler(event, context)` is the stable entry for API Gateway and the local stack. It also runs
background jobs: `{"lci_background": {"execution_id": ...}}` (see adapters/background.py), and
purges expired sessions' objects from the table's DynamoDB stream (`{"Records": [...]}`).
"""

from __future__ import annotations

import os
import queue
import re
import threading
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.metrics import MetricUnit

from lambdas.api import container
from lambdas.api.adapters.background import BACKGROUND_EVENT_KEY
from lambdas.api.errors import (
    ApiError,
    InternalError,
    InvalidRequest,
    RouteNotFound,
    Unauthorized,
    error_body,
    status_and_code,
)
from lambdas.api.models import (
    ErrorBody,
    ExecuteAccepted,
    ExecuteRequest,
    ExecutionResult,
    FileInfo,
    FileList,
    FileUploadRequest,
    FileUploadResponse,
    HealthResponse,
    OneShotExecuteRequest,
    PackageList,
    Session,
    SessionCreateRequest,
    SessionDetail,
    Usage,
)
from lambdas.api.service.executions import ExecuteOutcome
from lambdas.api.settings import ApiSettings

_DEFAULTS = ApiSettings.model_fields
logger = Logger(
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", _DEFAULTS["POWERTOOLS_SERVICE_NAME"].default)
)
metrics = Metrics(
    service=logger.service,
    namespace=os.environ.get(
        "POWERTOOLS_METRICS_NAMESPACE", _DEFAULTS["POWERTOOLS_METRICS_NAMESPACE"].default
    ),
)
# X-Ray matters only on Lambda; importing its SDK costs ~0.3 s, so the local stack skips it.
_ON_LAMBDA = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))

FILE_PATH_PARAM = "file_path"


class _Resolver(APIGatewayRestResolver):
    """Powertools' resolver with two changes:

    - one greedy path parameter (`<file_path>`, like API Gateway's `{path+}`): file paths
      contain slashes, which ordinary parameters never match;
    - the request being resolved is kept per thread. Powertools stores it on a class attribute
      (`BaseRouter.current_event`), i.e. once per process: fine on Lambda (one request at a
      time), but the local stack resolves concurrent requests on several threads.
    """

    _request = threading.local()

    @property  # type: ignore[override]
    def current_event(self) -> Any:
        return _Resolver._request.event

    @current_event.setter
    def current_event(self, value: Any) -> None:
        _Resolver._request.event = value

    @property  # type: ignore[override]
    def lambda_context(self) -> Any:
        return getattr(_Resolver._request, "context", None)

    @lambda_context.setter
    def lambda_context(self, value: Any) -> None:
        _Resolver._request.context = value

    def resolve(self, event: Any, context: Any) -> dict[str, Any]:
        # What APIGatewayRestResolver.resolve does, minus the process-wide class attributes.
        self.current_event = self._to_proxy_event(dict(event))
        self.lambda_context = context
        try:
            return self._build_response(self._resolve())
        finally:
            self.clear_context()

    @staticmethod
    def _compile_regex(rule: str, base_regex: str = "^{}$") -> re.Pattern[str]:
        greedy = f"<{FILE_PATH_PARAM}>"
        if greedy not in rule:
            return APIGatewayRestResolver._compile_regex(rule, base_regex)
        placeholder = "GREEDYPATHPARAMETER"
        compiled = APIGatewayRestResolver._compile_regex(
            rule.replace(greedy, placeholder), base_regex
        )
        return re.compile(compiled.pattern.replace(placeholder, rf"(?P<{FILE_PATH_PARAM}>.+)"))


class _RouteTable:
    """Records routes and error handlers with Powertools' decorator syntax and registers them on
    any number of resolvers. A resolver keeps the request it is resolving in `current_event`,
    so one instance must never serve two requests at once; the local stack serves requests on
    many threads, hence a pool of identical resolvers (one per concurrent request)."""

    def __init__(self) -> None:
        self._registrations: list[tuple[str, tuple[Any, ...], dict[str, Any], Any]] = []

    def _record(self, method: str, *args: Any, **kwargs: Any) -> Any:
        def decorator(func: Any) -> Any:
            self._registrations.append((method, args, kwargs, func))
            return func

        return decorator

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("get", *args, **kwargs)

    def post(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("post", *args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("delete", *args, **kwargs)

    def exception_handler(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("exception_handler", *args, **kwargs)

    def not_found(self, func: Any) -> Any:
        self._registrations.append(("not_found", (), {}, func))
        return func

    def build(self) -> _Resolver:
        resolver = _Resolver(enable_validation=True)
        for method, args, kwargs, func in self._registrations:
            if method == "not_found":
                resolver.not_found(func)
            else:
                getattr(resolver, method)(*args, **kwargs)(func)
        return resolver


routes = _RouteTable()
_idle_resolvers: queue.SimpleQueue[_Resolver] = queue.SimpleQueue()
_local = threading.local()


def _current_event() -> Any:
    return _local.resolver.current_event


def _resolve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        resolver = _idle_resolvers.get_nowait()
    except queue.Empty:
        resolver = routes.build()
    _local.resolver = resolver
    try:
        return resolver.resolve(event, context)
    finally:
        _local.resolver = None
        _idle_resolvers.put(resolver)


_ERROR_RESPONSES: dict[int, Any] = {
    status: {
        "description": description,
        "content": {content_types.APPLICATION_JSON: {"model": ErrorBody}},
    }
    for status, description in (
        (400, "Invalid request (INVALID_REQUEST, PACKAGE_NOT_ALLOWED, INVALID_PATH)"),
        (401, "Missing API key (UNAUTHORIZED)"),
        (404, "Not found (SESSION_NOT_FOUND, EXECUTION_NOT_FOUND, FILE_NOT_FOUND)"),
        (409, "Session busy or full (SESSION_BUSY, TOO_MANY_FILES)"),
        (413, "Payload too large (PAYLOAD_TOO_LARGE)"),
        (429, "Too many requests or quota exhausted (RATE_LIMITED, QUOTA_EXCEEDED)"),
        (500, "Internal error (INTERNAL)"),
    )
}


def _responses(*extra: tuple[int, str, Any]) -> dict[int, Any]:
    out = dict(_ERROR_RESPONSES)
    for status, description, model in extra:
        entry: dict[str, Any] = {"description": description}
        if model is not None:
            entry["content"] = {content_types.APPLICATION_JSON: {"model": model}}
        out[status] = entry
    return out


# --- helpers ---------------------------------------------------------------------------------


def _principal() -> str:
    identity = _current_event().request_context.identity
    principal = identity.api_key_id if identity else None
    if not principal:
        raise Unauthorized()
    return principal


def _idempotency_key() -> str | None:
    return _current_event().headers.get("idempotency-key")


def _json(status: int, body: Any) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _execute_response(outcome: ExecuteOutcome) -> Response[Any]:
    metrics.add_metric(name="Executions", unit=MetricUnit.Count, value=1)
    if outcome.result is not None:
        return _json(200, outcome.result.model_dump(mode="json"))
    assert outcome.accepted is not None
    return _json(202, outcome.accepted.model_dump(mode="json"))


# --- error mapping ---------------------------------------------------------------------------


@routes.exception_handler(ApiError)
def _api_error(error: ApiError) -> Response[Any]:
    status, code = status_and_code(error)
    return _json(status, error_body(code, error.message, error.details))


@routes.exception_handler(RequestValidationError)
def _validation_error(error: RequestValidationError) -> Response[Any]:
    problems = [
        {"loc": [str(part) for part in e.get("loc", ())], "type": str(e.get("type", ""))}
        for e in error.errors()
    ]
    if any(p["type"] == "json_invalid" for p in problems):
        return _api_error(InvalidRequest("the request body is not valid JSON"))
    fields = ", ".join(".".join(p["loc"][1:] or p["loc"]) for p in problems) or "body"
    return _api_error(
        InvalidRequest(f"invalid request: check {fields}", details={"errors": problems})
    )


@routes.not_found
def _route_not_found(_: NotFoundError) -> Response[Any]:
    return _api_error(RouteNotFound())


@routes.exception_handler(ServiceError)
def _service_error(error: ServiceError) -> Response[Any]:
    if error.status_code == 404:
        return _api_error(RouteNotFound())
    if 400 <= error.status_code < 500:
        return _api_error(InvalidRequest())
    return _api_error(InternalError())


@routes.exception_handler(Exception)
def _unexpected(error: Exception) -> Response[Any]:
    logger.exception("unhandled error")
    return _api_error(InternalError())


# --- routes ----------------------------------------------------------------------------------


@routes.get("/v1/health", summary="Liveness (no API key needed)")
def health() -> HealthResponse:
    return HealthResponse()


@routes.get(
    "/v1/openapi.json",
    summary="OpenAPI 3.1 document of this API (no API key needed)",
    responses={200: {"description": "OpenAPI 3.1 JSON"}},
)
def openapi() -> Response[Any]:
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=_openapi_document(),
    )


@routes.post(
    "/v1/sessions",
    status_code=201,
    summary="Create a session",
    responses=_responses((201, "Session created", Session)),
)
def create_session(
    body: Annotated[SessionCreateRequest | None, Body()] = None,
) -> Session:
    principal = _principal()
    ttl = body.ttl_seconds if body else None
    return container.services().sessions.create(principal, ttl)


@routes.get(
    "/v1/sessions/<session_id>",
    summary="Get a session and its variables",
    responses=_responses((200, "The session", SessionDetail)),
)
def get_session(session_id: Annotated[str, Path()]) -> SessionDetail:
    return container.services().sessions.get(_principal(), session_id)


@routes.delete(
    "/v1/sessions/<session_id>",
    status_code=204,
    summary="Delete a session, its state and files",
    responses=_responses((204, "Deleted", None)),
)
def delete_session(session_id: Annotated[str, Path()]) -> Response[None]:
    container.services().sessions.delete(_principal(), session_id)
    return Response(status_code=204, body=None)


@routes.post(
    "/v1/sessions/<session_id>/execute",
    summary="Run a cell in the session (Idempotency-Key header supported)",
    responses=_responses(
        (200, "Finished", ExecutionResult),
        (202, "Still running after the sync window, or wait=false", ExecuteAccepted),
    ),
)
def execute_in_session(
    session_id: Annotated[str, Path()], body: Annotated[ExecuteRequest, Body()]
) -> Response[Any]:
    outcome = container.services().executions.execute_in_session(
        _principal(), session_id, body, _idempotency_key()
    )
    return _execute_response(outcome)


@routes.post(
    "/v1/execute",
    summary="One-shot run without a session (Idempotency-Key header supported)",
    responses=_responses(
        (200, "Finished", ExecutionResult),
        (202, "Still running after the sync window, or wait=false", ExecuteAccepted),
    ),
)
def execute_one_shot(body: Annotated[OneShotExecuteRequest, Body()]) -> Response[Any]:
    outcome = container.services().executions.execute_one_shot(
        _principal(), body, _idempotency_key()
    )
    return _execute_response(outcome)


@routes.get(
    "/v1/executions/<execution_id>",
    summary="Get an execution result (status may be running)",
    responses=_responses((200, "The execution", ExecutionResult)),
)
def get_execution(execution_id: Annotated[str, Path()]) -> ExecutionResult:
    return container.services().executions.get(_principal(), execution_id)


@routes.post(
    "/v1/sessions/<session_id>/files",
    summary="Presigned POST to upload a file into the session workspace",
    responses=_responses((200, "Upload form", FileUploadResponse)),
)
def create_upload(
    session_id: Annotated[str, Path()], body: Annotated[FileUploadRequest, Body()]
) -> FileUploadResponse:
    return container.services().files.create_upload(_principal(), session_id, body.path, body.size)


@routes.get(
    "/v1/sessions/<session_id>/files",
    summary="List the session's files",
    responses=_responses((200, "The files", FileList)),
)
def list_files(session_id: Annotated[str, Path()]) -> FileList:
    return container.services().files.list(_principal(), session_id)


@routes.get(
    f"/v1/sessions/<session_id>/files/<{FILE_PATH_PARAM}>",
    summary="Get one file (presigned download URL)",
    responses=_responses((200, "The file", FileInfo)),
)
def get_file(session_id: Annotated[str, Path()], file_path: Annotated[str, Path()]) -> FileInfo:
    return container.services().files.get(_principal(), session_id, file_path)


@routes.delete(
    f"/v1/sessions/<session_id>/files/<{FILE_PATH_PARAM}>",
    status_code=204,
    summary="Delete one file",
    responses=_responses((204, "Deleted", None)),
)
def delete_file(
    session_id: Annotated[str, Path()], file_path: Annotated[str, Path()]
) -> Response[None]:
    container.services().files.delete(_principal(), session_id, file_path)
    return Response(status_code=204, body=None)


@routes.get(
    "/v1/sessions/<session_id>/notebook",
    summary="The session's cells with outputs as an nbformat v4 notebook",
    responses=_responses((200, "nbformat v4 JSON", None)),
)
def get_notebook(session_id: Annotated[str, Path()]) -> Response[Any]:
    return _json(200, container.services().notebook.notebook(_principal(), session_id))


@routes.get(
    "/v1/packages",
    summary="Whitelisted packages",
    responses=_responses((200, "The whitelist", PackageList)),
)
def list_packages() -> PackageList:
    _principal()
    return container.services().packages.listing()


@routes.get(
    "/v1/usage",
    summary="This API key's usage in the current month and its quota",
    responses=_responses((200, "Usage", Usage)),
)
def get_usage() -> Usage:
    return container.services().usage.current(_principal())


_openapi_cache: dict[str, Any] = {}


def _openapi_document() -> dict[str, Any]:
    if "doc" not in _openapi_cache:
        import json

        schema = routes.build().get_openapi_json_schema(
            title="Lambda Code Interpreter API",
            version="1.0.0",
            description="Run untrusted Python with Jupyter semantics in isolated Lambda "
            "environments (SPEC §3). Authenticate with the x-api-key header.",
            openapi_version="3.1.0",
        )
        document = json.loads(schema)
        document.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
        }
        for path, operations in document.get("paths", {}).items():
            for operation in operations.values():
                if path not in _PUBLIC_PATHS:
                    operation["security"] = [{"apiKey": []}]
        _openapi_cache["doc"] = document
    return _openapi_cache["doc"]


# --- entry ------------------------------------------------------------------------------------


def _run_background(event: dict[str, Any]) -> dict[str, Any]:
    execution_id = str(event[BACKGROUND_EVENT_KEY].get("execution_id", ""))
    result = container.services().executions.run_stored_job(execution_id)
    return {"execution_id": execution_id, "ran": result is not None}


_PUBLIC_PATHS = ("/v1/health", "/v1/openapi.json")


def _is_public(event: dict[str, Any]) -> bool:
    path = str(event.get("path") or "").rstrip("/")
    return path.endswith(_PUBLIC_PATHS)


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


def _raw_error(error: ApiError) -> dict[str, Any]:
    import json

    status, code = status_and_code(error)
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps(error_body(code, error.message, error.details)),
        "isBase64Encoded": False,
    }


def _purge_removed_sessions(event: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB stream of the table: when a session item disappears (TTL expiry or DELETE),
    delete its S3 objects and notebook cells, so expired sessions leave nothing behind."""
    purged = 0
    for record in event.get("Records", []):
        if record.get("eventSource") != "aws:dynamodb" or record.get("eventName") != "REMOVE":
            continue
        keys = (record.get("dynamodb") or {}).get("Keys") or {}
        pk = (keys.get("pk") or {}).get("S", "")
        sk = (keys.get("sk") or {}).get("S", "")
        if pk.startswith("SESSION#") and sk == "META":
            container.services().sessions.purge(pk.removeprefix("SESSION#"))
            purged += 1
    return {"purged": purged}


def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and BACKGROUND_EVENT_KEY in event:
        return _run_background(event)
    if isinstance(event, dict) and "Records" in event:
        return _purge_removed_sessions(event)
    try:
        if not _is_public(event) and not _event_principal(event):
            # Before routing and body validation: without a key, nothing else is disclosed.
            return _raw_error(Unauthorized())
        return _resolve(_as_json_request(event), context)
    except Exception:
        logger.exception("request could not be resolved")
        return _raw_error(InternalError())
    finally:
        _flush_metrics()


def _flush_metrics() -> None:
    if not metrics.metric_set:
        return
    try:
        metrics.flush_metrics()
    except Exception:  # metrics must never cost a user their response
        logger.warning("could not publish metrics", exc_info=True)
    finally:
        metrics.clear_metrics()  # also when disabled: Powertools would print them at 100


def _traced(entry: Any) -> Any:
    if not _ON_LAMBDA:
        return entry
    from aws_lambda_powertools import Tracer

    return Tracer().capture_lambda_handler(entry)


handler = _traced(_handle)
