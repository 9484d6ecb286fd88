"""GET /v1/openapi.json: a valid OpenAPI 3.1 document that lists every route, and on every route
exactly the statuses and error codes the API answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from lambdas.api import errors as e
from lambdas.api.errors import ApiError, registered_status_and_code
from lambdas.shared import routes
from lambdas.shared.routes import ROUTES, Route
from tests.functional.conftest import PRINCIPAL, ApiClient

# The greedy `{path+}` of the route table is `{file_path}` in the document.
FILE_PATH_PARAMETER = "file_path"

# What the API answers on each route: its success statuses and the errors its service raises
# (lambdas/api/service/), besides what any route or any keyed route may get (below). Statuses
# and codes come from the one registry in lambdas/api/errors.py.
ROUTE_ANSWERS: dict[Route, tuple[tuple[int, ...], tuple[type[ApiError], ...]]] = {
    routes.PLAYGROUND: ((200,), (e.RouteNotFound,)),  # an unknown `?asset=`
    routes.HEALTH: ((200,), ()),
    routes.OPENAPI: ((200,), ()),
    # a body that is not valid JSON or breaks the model's bounds; any body over 10 MB (gateway);
    # storage that cannot be reached
    routes.CREATE_SESSION: ((201,), (e.InvalidRequest, e.PayloadTooLarge, e.ServiceUnavailable)),
    routes.GET_SESSION: ((200,), (e.SessionNotFound, e.ServiceUnavailable)),
    routes.DELETE_SESSION: ((204,), (e.SessionNotFound, e.ServiceUnavailable)),
    routes.FORK_SESSION: (
        (201,),
        (e.InvalidRequest, e.PayloadTooLarge, e.SessionNotFound, e.ServiceUnavailable),
    ),
    routes.GET_NOTEBOOK: ((200,), (e.SessionNotFound, e.ServiceUnavailable)),
    routes.EXECUTE_IN_SESSION: (
        (200, 202),
        (
            e.InvalidRequest,
            e.PackageNotAllowed,
            e.SessionNotFound,
            e.SessionBusy,
            e.PayloadTooLarge,  # code over MAX_CODE_BYTES
            e.QuotaExceeded,  # the principal's monthly executions or compute
            e.RateLimited,  # the executor throttled
            e.ServiceUnavailable,
        ),
    ),
    routes.EXECUTE_ONE_SHOT: (
        (200, 202),
        (
            e.InvalidRequest,
            e.PackageNotAllowed,
            e.InvalidPath,  # inline `files`
            e.PayloadTooLarge,
            e.QuotaExceeded,
            e.RateLimited,
            e.ServiceUnavailable,
        ),
    ),
    routes.GET_EXECUTION: ((200,), (e.ExecutionNotFound, e.ServiceUnavailable)),
    routes.INTERRUPT_EXECUTION: (
        (202,),
        (e.ExecutionNotFound, e.ExecutionFinished, e.ServiceUnavailable),
    ),
    routes.CREATE_UPLOAD: (
        (200,),
        (
            e.InvalidRequest,
            e.InvalidPath,
            e.SessionNotFound,
            e.TooManyFiles,
            e.PayloadTooLarge,
            e.ServiceUnavailable,
        ),
    ),
    routes.LIST_FILES: ((200,), (e.SessionNotFound, e.ServiceUnavailable)),
    routes.GET_FILE: (
        (200,),
        (e.InvalidPath, e.SessionNotFound, e.FileNotFound, e.ServiceUnavailable),
    ),
    routes.DELETE_FILE: (
        (204,),
        (e.InvalidPath, e.SessionNotFound, e.FileNotFound, e.ServiceUnavailable),
    ),
    routes.LIST_PACKAGES: ((200,), ()),  # the whitelist is in the function's code
    routes.GET_USAGE: ((200,), (e.ServiceUnavailable,)),
    routes.DIAGNOSTICS: ((200,), (e.RateLimited,)),  # the executor throttled
}
# Anything unexpected, on any route.
ANY_ROUTE: tuple[type[ApiError], ...] = (e.InternalError,)
# On a keyed route, before the API function runs (API Gateway, or the local stack in its place):
# a missing or unknown key, the usage plan's throttle and its monthly request quota.
KEYED_ROUTE: tuple[type[ApiError], ...] = (e.Forbidden, e.RateLimited, e.QuotaExceeded)
# On a public route, API Gateway's per-method throttle.
PUBLIC_ROUTE: tuple[type[ApiError], ...] = (e.RateLimited,)


def expected_answers(route: Route) -> dict[int, set[str] | None]:
    """status -> the error codes it carries (None for a success status)."""
    successes, route_errors = ROUTE_ANSWERS[route]
    answers: dict[int, set[str] | None] = {status: None for status in successes}
    for error in (*route_errors, *ANY_ROUTE, *(PUBLIC_ROUTE if route.public else KEYED_ROUTE)):
        status, code = registered_status_and_code(error)
        codes = answers.setdefault(status, set())
        assert codes is not None, f"{route}: {status} is both a success and an error"
        codes.add(code)
    return answers


def documented_answers(document: dict[str, Any], route: Route) -> dict[int, set[str] | None]:
    path = route.path.replace("{path+}", "{" + FILE_PATH_PARAMETER + "}")
    operation = document["paths"][path][route.method.lower()]
    return {
        int(status): (set(response["x-error-codes"]) if "x-error-codes" in response else None)
        for status, response in operation["responses"].items()
    }


@pytest.fixture
def document(api: ApiClient) -> dict[str, Any]:
    response = api.get("/v1/openapi.json", principal=None)
    assert response.status == 200
    return dict(response.json())


def test_openapi_document_is_valid_3_1_and_complete(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)
    listed = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert listed >= {
        (route.method.lower(), route.path.replace("{path+}", "{" + FILE_PATH_PARAMETER + "}"))
        for route in ROUTES
    }
    execute = document["paths"]["/v1/sessions/{session_id}/execute"]["post"]
    assert {"200", "202", "400", "404", "409", "413", "429"} <= set(execute["responses"])
    assert "ExecuteRequest" in document["components"]["schemas"]
    # Results too large for one response link their parts (issue 12, item 2).
    result_fields = document["components"]["schemas"]["ExecutionResult"]["properties"]
    assert {"stdout_url", "stderr_url", "outputs_url"} <= set(result_fields)
    notebook = document["paths"]["/v1/sessions/{session_id}/notebook"]["get"]
    assert "notebook_url" in notebook["description"]
    assert document["paths"]["/v1/usage"]["get"]["security"] == [{"apiKey": []}]
    assert "security" not in document["paths"]["/v1/health"]["get"]
    assert "security" not in document["paths"]["/v1/openapi.json"]["get"]


def test_every_route_is_in_the_table_of_what_the_api_answers() -> None:
    assert set(ROUTE_ANSWERS) == set(ROUTES), "add the new route to ROUTE_ANSWERS"


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{route.method} {route.path}")
def test_documented_statuses_and_codes_are_what_the_route_answers(
    document: dict[str, Any], route: Route
) -> None:
    assert documented_answers(document, route) == expected_answers(route)


def test_no_status_the_api_never_answers_is_documented(document: dict[str, Any]) -> None:
    # Validation errors are 400 INVALID_REQUEST, a missing key is refused before any route.
    statuses = {
        status
        for path in document["paths"].values()
        for op in path.values()
        for status in op["responses"]
    }
    assert "422" not in statuses
    assert "HTTPValidationError" not in document["components"]["schemas"]


# Requests that reach each error path cheaply, to check the answer is the documented one.
_UNKNOWN = {"session_id": "no-such-session", "execution_id": "no-such-execution"}


def _concrete(route: Route) -> str:
    if route == routes.PLAYGROUND:
        return "/?asset=no-such-asset"  # the page itself is HTML: its 200 is checked elsewhere
    return (
        route.path.replace("{session_id}", _UNKNOWN["session_id"])
        .replace("{execution_id}", _UNKNOWN["execution_id"])
        .replace("{path+}", "dir/a.txt")
    )


def _answer(method: str, target: str, principal: str | None, body: str) -> tuple[int, str | None]:
    """(status, error code) of the real handler for a request as API Gateway passes it on."""
    from local.events import HttpRequest, to_proxy_event
    from local.resolvers import threaded_api_handler

    headers = [("Host", "abc123.execute-api.us-east-1.amazonaws.com")]
    if principal is not None:
        headers.append(("x-api-key", f"secret-of-{principal}"))
    request = HttpRequest(method, target, headers, body.encode())
    raw = threaded_api_handler()(to_proxy_event(request, principal), None)
    status = int(raw["statusCode"])
    if status < 400:
        return status, None
    return status, json.loads(raw["body"])["error"]["code"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{route.method} {route.path}")
def test_the_answers_the_api_gives_are_documented_on_their_route(
    api: ApiClient, document: dict[str, Any], route: Route
) -> None:
    documented = documented_answers(document, route)
    # The request as a client with a key sends it; without a key; with a body that is no JSON.
    probes: list[tuple[str | None, str]] = [(PRINCIPAL, "")]
    if not route.public:
        probes.append((None, ""))
    if route.method == "POST":
        probes.append((PRINCIPAL, "{not json"))
    for principal, body in probes:
        status, code = _answer(route.method, _concrete(route), principal, body)
        assert status in documented, (principal, body, status, code)
        codes = documented[status]
        assert codes is None or code in codes, (principal, body, status, code)
