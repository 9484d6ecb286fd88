"""A small threaded HTTP/1.1 server (keep-alive, no Nagle) in front of a request callable.

The stdlib server is enough here: one thread per connection, and the per-request work is the
API handler itself. The server parses, the `app` callable answers.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local.events import HttpRequest, HttpResponse
from local.gateway import API_GATEWAY_MAX_PAYLOAD_BYTES, error_response, payload_too_large

logger = logging.getLogger(__name__)

App = Callable[[HttpRequest], HttpResponse]
MAX_REQUEST_BODY_BYTES = API_GATEWAY_MAX_PAYLOAD_BYTES  # refused before it is read, as AWS does
IDLE_CONNECTION_TIMEOUT_SECONDS = 120


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body go out without a 40 ms delayed-ACK stall
    timeout = IDLE_CONNECTION_TIMEOUT_SECONDS
    server_version = "lci-local"
    sys_version = ""
    app: App

    def _handle(self) -> None:
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header else 0
        except ValueError:
            length = -1
        if length > MAX_REQUEST_BODY_BYTES:
            self._write(payload_too_large(), close=True)
            return
        if length < 0:
            bad = error_response(400, "INVALID_REQUEST", "invalid Content-Length header")
            self._write(bad, close=True)
            return
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._write(HttpResponse(411, [], b""), close=True)
            return
        body = self.rfile.read(length) if length else b""
        request = HttpRequest(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
            protocol=self.request_version,
        )
        try:
            response = self.app(request)
        except Exception:
            logger.exception("local stack: request failed")
            response = HttpResponse(
                500,
                [("Content-Type", "application/json")],
                b'{"error":{"code":"INTERNAL","message":"internal error"}}',
            )
        self._write(response)

    def _write(self, response: HttpResponse, close: bool = False) -> None:
        self.send_response_only(response.status)
        self.send_header("Date", self.date_time_string())
        for key, value in response.headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if response.body and self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: object) -> None:
        # Request lines carry no user code, but keep the default per-request log quiet.
        logger.debug("%s " + format, self.address_string(), *args)


class LocalHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, app: App) -> None:
        handler = type("BoundHandler", (_Handler,), {"app": staticmethod(app)})
        super().__init__((host, port), handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()

    @property
    def port(self) -> int:
        return int(self.server_address[1])
