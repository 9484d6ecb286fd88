"""The local stack's HTTP server: keep-alive connections, request bodies handed over intact,
oversized bodies refused before they are read, and a failing app answered with JSON."""

import json
import socket
import threading

import httpx
import pytest

from local.events import HttpRequest, HttpResponse
from local.http_server import MAX_REQUEST_BODY_BYTES, LocalHttpServer
from tests.conftest import send_request_in_full


class _CountingServer(LocalHttpServer):
    connections = 0

    def process_request(self, request, client_address):
        self.connections += 1
        super().process_request(request, client_address)


@pytest.fixture
def server():
    seen: list[tuple[HttpRequest, int]] = []

    def app(request: HttpRequest) -> HttpResponse:
        if request.target == "/boom":
            raise RuntimeError("bug")
        seen.append(request)
        body = json.dumps({"method": request.method, "size": len(request.body)}).encode()
        return HttpResponse(200, [("Content-Type", "application/json")], body)

    instance = _CountingServer("127.0.0.1", 0, app)
    thread = threading.Thread(target=instance.serve_forever, daemon=True)
    thread.start()
    yield instance, seen
    instance.shutdown()
    instance.server_close()


def test_requests_share_one_keep_alive_connection_and_bodies_arrive_intact(server):
    instance, seen = server
    with httpx.Client(base_url=f"http://127.0.0.1:{instance.port}") as client:
        first = client.post("/v1/execute?x=1", content=b"a" * 5000)
        second = client.get("/v1/health")
    assert first.json() == {"method": "POST", "size": 5000}
    assert second.json() == {"method": "GET", "size": 0}
    assert seen[0].target == "/v1/execute?x=1"
    assert seen[0].body == b"a" * 5000
    assert instance.connections == 1  # the second request reused the connection


def test_oversized_body_is_refused_and_app_errors_become_json(server):
    instance, seen = server
    url = f"http://127.0.0.1:{instance.port}"
    with socket.create_connection(("127.0.0.1", instance.port), timeout=30) as raw:
        raw.sendall(
            b"POST /v1/execute HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {MAX_REQUEST_BODY_BYTES + 1}\r\n\r\n".encode()
        )
        assert raw.recv(100).startswith(b"HTTP/1.1 413")
    boom = httpx.get(url + "/boom")
    assert boom.status_code == 500
    assert boom.json()["error"]["code"] == "INTERNAL"
    assert seen == []


def _exchange(port: int, request: bytes, body_bytes: int = 0) -> bytes:
    """Send a request (and `body_bytes` of body) in full before reading the whole answer, as
    a simple client does."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        send_request_in_full(raw, request, body_bytes)
        raw.shutdown(socket.SHUT_WR)
        answer = b""
        while data := raw.recv(65536):
            answer += data
    return answer


def test_an_oversized_body_sent_in_full_still_gets_the_413_json(server):
    instance, seen = server
    size = 20 * 1024 * 1024
    answer = _exchange(
        instance.port,
        f"POST /v1/execute HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode(),
        size,
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert seen == []


def test_expect_100_continue_with_an_oversized_length_is_refused_before_the_body(server):
    instance, _ = server
    with socket.create_connection(("127.0.0.1", instance.port), timeout=30) as raw:
        raw.sendall(
            b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {MAX_REQUEST_BODY_BYTES + 1}\r\n\r\n".encode()
        )
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")


def test_chunked_bodies_arrive_intact(server):
    instance, seen = server
    with httpx.Client(base_url=f"http://127.0.0.1:{instance.port}") as client:
        response = client.post("/v1/execute", content=iter([b"ab", b"c" * 70_000, b"d"]))
    assert response.json() == {"method": "POST", "size": 70_003}
    assert seen[-1].body == b"ab" + b"c" * 70_000 + b"d"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501),  # a method nobody serves
        (b"GET /x HTTP/9.9\r\nHost: x\r\n\r\n", 505),
        (b"GET " + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
        (b"POST /x HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
)
def test_requests_the_server_refuses_itself_get_json_errors(server, request_bytes, status):
    instance, seen = server
    answer = _exchange(instance.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"}
    assert seen == []
