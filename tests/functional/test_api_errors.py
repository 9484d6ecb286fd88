"""Error answers of the API handler beyond the services' own: a known path with another method
(405 + Allow), a body that is not UTF-8, storage that cannot be reached (503). Every one in
the `{"error": {code, message}}` shape (checked by `ApiClient` on every response)."""

from __future__ import annotations

import pytest

from lambdas.shared.routes import ROUTES, allowed_methods
from tests.functional.conftest import ApiClient, api_event

OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _concrete(path: str) -> str:
    return (
        path.replace("{session_id}", "s1")
        .replace("{execution_id}", "e1")
        .replace("{path+}", "dir/a.txt")
    )


@pytest.mark.parametrize("resource", sorted({route.path for route in ROUTES}))
def test_a_known_path_with_another_method_is_405_with_allow(api: ApiClient, resource: str) -> None:
    allowed = allowed_methods(resource)
    for method in OTHER_METHODS:
        if method in allowed:
            continue
        response = api.request(method, _concrete(resource))
        assert response.status == 405, (method, resource, response.text)
        assert response.error_code == "METHOD_NOT_ALLOWED"
        assert response.headers["Allow"] == ", ".join(allowed)


def test_405_still_needs_a_key_on_keyed_paths_but_not_on_public_ones(api: ApiClient) -> None:
    keyed = api.request("PUT", "/v1/sessions", principal=None)
    assert (keyed.status, keyed.error_code) == (403, "FORBIDDEN")
    public = api.request("POST", "/v1/health", principal=None)
    assert (public.status, public.error_code) == (405, "METHOD_NOT_ALLOWED")
    assert public.headers["Allow"] == "GET"


def test_a_body_that_is_not_utf8_is_400_not_500(wired: None) -> None:
    from local.events import HttpRequest, to_proxy_event
    from local.resolvers import threaded_api_handler

    event = api_event("POST", "/v1/sessions", body={})
    request = HttpRequest(
        method="POST",
        target="/v1/sessions",
        headers=[("Content-Type", "application/json")],
        body=b'{"ttl_seconds": "\xff\xfe"}',
    )
    raw_event = to_proxy_event(request, event["requestContext"]["identity"]["apiKeyId"])
    assert raw_event["isBase64Encoded"] is True
    raw = threaded_api_handler()(raw_event, None)
    assert raw["statusCode"] == 400
    assert '"INVALID_REQUEST"' in raw["body"]


@pytest.fixture
def unreachable_storage(aws_env: None, fake_executor: object) -> object:
    """The real API wired to a DynamoDB and S3 endpoint where nothing listens."""
    import socket

    from lambdas.api import container
    from lambdas.api.settings import ApiSettings

    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    settings = ApiSettings(
        TABLE_NAME="t",
        BUCKET_NAME="b",
        EXECUTOR_MODE="local",
        BACKGROUND_MODE="thread",
        S3_ENDPOINT_URL=dead,
        DYNAMODB_ENDPOINT_URL=dead,
    )
    container.reset()
    container.override(settings=settings, executor=fake_executor)  # type: ignore[arg-type]
    yield
    container.reset()


def test_unreachable_storage_is_503_service_unavailable_quickly(unreachable_storage: None) -> None:
    import time

    api = ApiClient()
    for method, path, body in (
        ("POST", "/v1/sessions", None),
        ("GET", "/v1/sessions/s1", None),
        ("POST", "/v1/sessions/s1/execute", {"code": "1"}),
        ("GET", "/v1/usage", None),
    ):
        started = time.monotonic()
        response = api.request(method, path, body)
        assert (response.status, response.error_code) == (503, "SERVICE_UNAVAILABLE"), (
            path,
            response.text,
        )
        # A few connection attempts, not botocore's full retry budget (~25 s for DynamoDB).
        assert time.monotonic() - started < 5


def test_an_inline_run_whose_executor_hangs_still_answers_202_when_the_window_closes(
    api: ApiClient, fake_executor: object
) -> None:
    """The fast path (timeout + margin fits the window) runs inline; an executor that does not
    answer must not hold the call past the window (API Gateway would cut it at 29 s)."""
    import time

    from lambdas.api import container
    from lambdas.api.settings import ApiSettings
    from tests.functional.conftest import BUCKET, TABLE

    container.override(
        settings=ApiSettings(TABLE_NAME=TABLE, BUCKET_NAME=BUCKET, SYNC_WAIT_MS=2500)
    )
    sid = api.new_session()
    fake_executor.block()  # type: ignore[attr-defined]
    started = time.monotonic()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "x = 1", "timeout_ms": 200})
    elapsed = time.monotonic() - started
    assert response.status == 202, response.text
    assert 2.4 <= elapsed <= 3.5, elapsed
    execution_id = response.json()["execution_id"]
    assert api.get(f"/v1/executions/{execution_id}").json()["status"] == "running"
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "1"}).error_code == "SESSION_BUSY"
    fake_executor.release.set()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while api.get(f"/v1/executions/{execution_id}").json()["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert api.get(f"/v1/executions/{execution_id}").json()["status"] == "ok"
    # The run ended: its lease was given back.
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "2", "timeout_ms": 200}).status == 200


@pytest.mark.parametrize(
    "raw_body",
    [
        '{"code": "\\ud800"}',
        '{"code": "1", "env": {"A": "x\\udfff"}}',
        '{"code": "1", "files": [{"path": "\\ud83d.txt", "content_base64": ""}]}',
    ],
)
def test_a_lone_surrogate_in_a_json_string_is_400_not_500(api: ApiClient, raw_body: str) -> None:
    response = api.post("/v1/execute", raw_body=raw_body)
    assert (response.status, response.error_code) == (400, "INVALID_REQUEST"), response.text
    assert "surrogate" in response.json()["error"]["message"]


def test_a_surrogate_pair_is_text_and_runs(api: ApiClient, fake_executor: object) -> None:
    response = api.post("/v1/execute", raw_body='{"code": "print(\\"\\ud83d\\ude00\\")"}')
    assert response.status == 200, response.text


def test_a_body_nested_deeper_than_the_parser_is_400_not_500(api: ApiClient) -> None:
    depth = 200_000
    response = api.post("/v1/execute", raw_body='{"code": ' + "[" * depth + "]" * depth + "}")
    assert (response.status, response.error_code) == (400, "INVALID_REQUEST"), response.text
