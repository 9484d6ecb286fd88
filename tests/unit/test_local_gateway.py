"""API Gateway's and Lambda's limits in the local stack's front: a body over 10 MB, an
integration over 29 s (configurable), and an API function response over Lambda's 6 MB each get
what the deployed API answers, in the product's error shape."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from local.events import HttpRequest
from local.gateway import API_GATEWAY_MAX_PAYLOAD_BYTES
from local.http_server import LocalHttpServer
from local.keys import KeyRing
from local.lambda_limits import LAMBDA_SYNC_PAYLOAD_MAX_BYTES
from local.stack import build_app

KEY = "k1"


def _request(target="/v1/sessions", body=b"") -> HttpRequest:
    return HttpRequest(method="POST", target=target, headers=[("x-api-key", KEY)], body=body)


def _app(handler, timeout_ms=29_000):
    return build_app(KeyRing.from_env_value(KEY), handler, timeout_ms)


def _ok(body: str) -> dict:
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": body}


@pytest.fixture
def server():
    def app(request):
        return _app(lambda event, context: _ok(json.dumps({"size": len(event["body"] or "")})))(
            request
        )

    instance = LocalHttpServer("127.0.0.1", 0, app)
    threading.Thread(target=instance.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{instance.port}"
    instance.shutdown()
    instance.server_close()


def test_a_body_over_ten_megabytes_gets_413_in_the_error_shape(server):
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        raw.sendall(
            b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nx-api-key: k1\r\n"
            + f"Content-Length: {API_GATEWAY_MAX_PAYLOAD_BYTES + 1}\r\n\r\n".encode()
        )
        answer = b""
        while b"}}" not in answer:
            chunk = raw.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # Just under the limit is API Gateway's to accept (the API function decides what it takes).
    body = b"x" * (9 * 1024 * 1024)
    answer = httpx.post(server + "/v1/execute", content=body, headers={"x-api-key": KEY})
    assert answer.status_code == 200 and answer.json() == {"size": len(body)}


def test_an_integration_over_the_timeout_gets_504_at_the_timeout_and_keeps_running():
    finished = threading.Event()

    def slow(event, context):
        time.sleep(1.5)
        finished.set()
        return _ok("{}")

    started = time.monotonic()
    response = _app(slow, timeout_ms=300)(_request())
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert json.loads(response.body)["error"]["code"] == "INTEGRATION_TIMEOUT"
    assert 0.3 <= elapsed < 1.2
    assert not finished.is_set()
    assert finished.wait(10)  # the handler ran to its end, as the Lambda function would


def test_an_api_response_over_lambdas_six_megabytes_is_a_502_in_the_error_shape():
    # 2 MB of quotes: a 4 MB body, JSON-escaped once more inside the proxy result (~8 MB).
    quotes = json.dumps({"stdout": '"' * 2_000_000})
    assert len(quotes) < LAMBDA_SYNC_PAYLOAD_MAX_BYTES < len(json.dumps(_ok(quotes)))
    response = _app(lambda event, context: _ok(quotes))(_request())
    assert response.status == 502
    assert json.loads(response.body) == {"error": {"code": "INTERNAL", "message": "internal error"}}
    small = _app(lambda event, context: _ok('{"ok": true}'))(_request())
    assert small.status == 200 and json.loads(small.body) == {"ok": True}


def test_a_failing_api_function_is_a_502_as_api_gateway_answers_it():
    def broken(event, context):
        raise RuntimeError("bug")

    response = _app(broken)(_request())
    assert response.status == 502
    assert json.loads(response.body)["error"]["code"] == "INTERNAL"
