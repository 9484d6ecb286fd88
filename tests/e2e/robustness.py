"""Shared by the robustness e2e tests: the error-shape check and a raw HTTP exchange."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx

from tests.conftest import send_request_in_full

from .conftest import TargetStack

HOST_PATH_MARKERS = ("/work/", "/root/", "/home/", "/usr/lib/python", "site-packages", '.py"')


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    assert body["error"]["code"] == code, body
    for marker in HOST_PATH_MARKERS:
        assert marker not in response.text, response.text
    return dict(body["error"])


def raw_exchange(stack: TargetStack, request: bytes, body_bytes: int = 0) -> bytes:
    """Send everything before reading the answer (what a naive client does)."""
    url = urlsplit(stack.endpoint)
    with socket.create_connection((url.hostname, url.port), timeout=60) as raw:
        send_request_in_full(raw, request, body_bytes)
        answer = b""
        while data := raw.recv(65536):
            answer += data
            if b"\r\n\r\n" in answer:
                head, _, rest = answer.partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(rest) >= length[0]:
                    break
    return answer
