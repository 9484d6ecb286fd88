"""A small threaded HTTP/1.1 server (keep-alive, no Nagle) in front of a request callable.

The stdlib server is enough here: one thread per connection, and the per-request work is the
API handler itself. The server parses, the `app` callable answers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local.events import HttpRequest, HttpResponse
from local.gateway import API_GATEWAY_MAX_PAYLOAD_BYTES, error_response, payload_too_large

logger = logging.getLogger(__name__)

App = Callable[[HttpRequest], HttpResponse]
MAX_REQUEST_BODY_BYTES = API_GATEWAY_MAX_PAYLOAD_BYTES  # refused before it is read, as AWS does
MAX_DRAINED_BODY_BYTES = 64 * 1024 * 1024
DRAIN_TIMEOUT_SECONDS = 10
IDLE_CONNECTION_TIMEOUT_SECONDS = 120
_STDLIB_ERROR_CODES: dict[int, str] = {
    HTTPStatus.REQUEST_URI_TOO_LONG: "PAYLOAD_TOO_LARGE",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "PAYLOAD_TOO_LARGE",
    HTTPStatus.NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    HTTPStatus.REQUEST_TIMEOUT: "REQUEST_TIMEOUT",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body go out without a 40 ms delayed-ACK stall
    timeout = IDLE_CONNECTION_TIMEOUT_SECONDS
    server_version = "lci-local"
    sys_version = ""
    app: App

    def _handle(self) -> None:
        length_header = self.headers.get("Content-Length")
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        try:
            length = int(length_header) if length_header else 0
        except ValueError:
            length = -1
        if length < 0 or (chunked and length_header):
            bad = error_response(400, "INVALID_REQUEST", "invalid Content-Length header")
            self._write(bad, close=True)
            return
        if length > MAX_REQUEST_BODY_BYTES:
            self._refuse_oversized_body(length)
            return
        if chunked:
            try:
                chunks = self._read_chunked()
            except ValueError:
                bad = error_response(400, "INVALID_REQUEST", "invalid chunked body")
                self._write(bad, close=True)
                return
            if chunks is None:
                self._write(payload_too_large(), close=True)
                return
            body = b"".join(chunks)
        else:
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
            response = error_response(500, "INTERNAL", "internal error")
        self._write(response)

    def _refuse_oversized_body(self, length: int) -> None:
        """413 without reading the body, then read (and drop) up to a bound of it before
        closing: a client that sends its whole body before reading the answer would otherwise
        get a connection reset instead of the 413."""
        self._write(payload_too_large(), close=True)
        remaining = min(length, MAX_DRAINED_BODY_BYTES)
        with contextlib.suppress(OSError):
            self.connection.settimeout(DRAIN_TIMEOUT_SECONDS)
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)

    def _read_chunked(self) -> list[bytes] | None:
        """A chunked body (None once it passes the payload limit)."""
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            size = int(size_line, 16) if size_line else 0
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return chunks
            total += size
            if total > MAX_REQUEST_BODY_BYTES:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)  # the CRLF after each chunk

    def handle_expect_100(self) -> bool:
        # `Expect: 100-continue` (curl's default for large bodies): refuse before the body.
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_REQUEST_BODY_BYTES:
            self._write(payload_too_large(), close=True)
            return False
        return super().handle_expect_100()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the stdlib answers itself (a malformed request line, headers too long, an
        unknown method) in the product's JSON shape, like every other error."""
        status = HTTPStatus(code)
        # An unparsable request line leaves HTTP/0.9, which would answer without a status line.
        self.request_version = self.protocol_version
        error = error_response(
            code,
            _STDLIB_ERROR_CODES.get(code, "INVALID_REQUEST"),
            status.phrase.lower(),
        )
        self._write(error, close=True)

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
