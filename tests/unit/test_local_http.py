"""The local stack's HTTP server: keep-alive connections, request bodies handed over intact,
oversized bodies refused before they are read, and a failing app answered with JSON."""

import json
import socket
import threading

import httpx
import pytest

from local.events import HttpRequest, HttpResponse
from local.http_server import MAX_REQUEST_BODY_BYTES, LocalHttpServer


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
