"""A verifying front for the local stack's S3: what S3 checks and moto does not.

moto's server accepts any presigned URL or POST form: it checks no signature, no expiry and no
POST-policy condition, so a tampered, expired or oversize upload would pass locally and fail on
AWS. This threaded proxy on 127.0.0.1 stands between every client of the local S3 and moto
(`S3_ENDPOINT_URL` points at it) and answers as S3 would before forwarding:

- presigned requests (query-string SigV4): the signature is recomputed with botocore's own
  signer and the stack's credentials; a mismatch is 403 `SignatureDoesNotMatch`, a request past
  `X-Amz-Date` + `X-Amz-Expires` is 403 `AccessDenied` "Request has expired". S3 "Authenticating
  Requests: Using Query Parameters (AWS Signature Version 4)":
  https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
- browser POST uploads (multipart form): the policy's signature (HMAC of the base64 policy with
  the SigV4 signing key), its expiration, every condition (exact / `eq` / `starts-with`,
  `content-length-range` against the file's size: 400 `EntityTooLarge` / `EntityTooSmall`) and
  that every form field is covered by a condition, except `x-amz-signature`, `file`, `policy`
  and fields starting with `x-ignore-`. S3 "Creating a POST Policy":
  https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html and
  "Authenticating Requests in Browser-Based Uploads Using POST":
  https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-UsingHTTPPOST.html
- requests signed with an `Authorization` header (the API function's own boto3 calls) and CORS
  preflights are forwarded as they are;
- an anonymous GET/HEAD of one object under the wheelhouse prefix is served (signed by the
  front for moto): on AWS the executor reads the wheelhouse without credentials through its
  VPC endpoint, which the bucket policy allows for that prefix only (SPEC §1 invariant 2, the
  one exception to "everything through presigned URLs"; infra/network.py);
- anything else is anonymous and, the bucket being private, 403 `AccessDenied`.

With an `upload_counter` (`local/aws_calls.py`) it also counts the POST uploads moto stored, by
the folder of their key, for the benchmarks and tests that check what a run uploads.
"""

from __future__ import annotations

import http.client
import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from local.s3_auth import (
    S3Credentials,
    S3Rejection,
    parse_post_form,
    verify_post_upload,
    verify_presigned_request,
)

if TYPE_CHECKING:
    from local.aws_calls import AwsCallCounter

logger = logging.getLogger(__name__)

_HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}
)
_FORWARD_TIMEOUT_SECONDS = 300


class _FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120
    server_version = "lci-local-s3"
    sys_version = ""
    server: S3VerifyingFront
    upload_key: str | None = None  # of the POST upload being handled, once verified

    def _handle(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            # S3 answers a body without Content-Length with 411 MissingContentLength.
            self._reject(
                S3Rejection(
                    411, "MissingContentLength", "You must provide the Content-Length HTTP header."
                ),
                close=True,
            )
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._reject(S3Rejection(400, "BadRequest", "invalid Content-Length"), close=True)
            return
        body = self.rfile.read(length) if length else b""
        self.upload_key = None
        try:
            self._verify(body)
        except S3Rejection as rejection:
            logger.info(
                "local S3: %s %s rejected: %s",
                self.command,
                urlsplit(self.path).path,
                rejection.code,
            )
            self._reject(rejection)
            return
        self._forward(body)

    def _verify(self, body: bytes) -> None:
        front = self.server
        now = datetime.now(UTC)
        query = urlsplit(self.path).query
        if "X-Amz-Signature=" in query or "X-Amz-Credential=" in query:
            verify_presigned_request(
                self.command, self.path, self.headers.items(), front.credentials, now
            )
            return
        if self.headers.get("Authorization") or self.command == "OPTIONS":
            return
        if self._is_anonymous_read(front.anonymous_read_prefix):
            return
        content_type = self.headers.get("Content-Type", "")
        if self.command == "POST" and content_type.lower().startswith("multipart/form-data"):
            bucket = unquote(urlsplit(self.path).path).strip("/").split("/")[0]
            form = parse_post_form(content_type, body)
            verify_post_upload(bucket, form, front.credentials, now)
            self.upload_key = form.fields.get("key")
            return
        raise S3Rejection(403, "AccessDenied", "Access Denied")

    def _is_anonymous_read(self, prefix: str | None) -> bool:
        """GET/HEAD of one object under `prefix`: no query (no listing, no ACL or other
        subresource), no `.`/`..` segment that could step out of the prefix."""
        if not prefix or self.command not in ("GET", "HEAD"):
            return False
        split = urlsplit(self.path)
        path = unquote(split.path)
        segments = path.split("/")[1:]
        if split.query or any(part in ("", ".", "..") for part in segments):
            return False
        return path.startswith(prefix) and len(path) > len(prefix)

    def _forward(self, body: bytes) -> None:
        front = self.server
        connection = http.client.HTTPConnection(
            front.upstream_host, front.upstream_port, timeout=_FORWARD_TIMEOUT_SECONDS
        )
        try:
            headers = {
                name: value
                for name, value in self.headers.items()
                if name.lower() not in _HOP_BY_HOP_HEADERS and name.lower() != "content-length"
            }
            headers["Content-Length"] = str(len(body))
            if self._is_anonymous_read(front.anonymous_read_prefix) and not any(
                name.lower() == "authorization" for name in headers
            ):
                headers.update(_signed_headers(front, self.command, self.path))
            connection.request(self.command, self.path, body=body, headers=headers)
            upstream = connection.getresponse()
            payload = upstream.read()
            if front.upload_counter is not None and self.upload_key and upstream.status < 300:
                front.upload_counter.add(self.upload_key.rpartition("/")[0] + "/")
            self.send_response_only(upstream.status, upstream.reason)
            for name, value in upstream.getheaders():
                if name.lower() not in _HOP_BY_HOP_HEADERS and name.lower() != "content-length":
                    self.send_header(name, value)
            declared = upstream.getheader("Content-Length")
            # HEAD carries the object's length without its bytes.
            size = declared if self.command == "HEAD" and declared else str(len(payload))
            self.send_header("Content-Length", size)
            self.end_headers()
            if payload and self.command != "HEAD":
                self.wfile.write(payload)
        except OSError as exc:
            logger.warning("local S3: moto did not answer: %s", exc)
            self._reject(
                S3Rejection(503, "ServiceUnavailable", "Please reduce your request rate."),
                close=True,
            )
        finally:
            connection.close()

    def _reject(self, rejection: S3Rejection, close: bool = False) -> None:
        body = rejection.xml()
        self.send_response_only(rejection.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def _signed_headers(front: S3VerifyingFront, method: str, target: str) -> dict[str, str]:
    """SigV4 headers for a request the front makes on behalf of an anonymous wheelhouse read
    (moto, like S3, serves a private bucket's objects to signed requests only)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    credentials = front.credentials
    request = AWSRequest(
        method=method,
        url=f"http://{front.upstream_host}:{front.upstream_port}{target}",
        headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
    )
    S3SigV4Auth(
        Credentials(credentials.access_key, credentials.secret_key), "s3", credentials.region
    ).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


class S3VerifyingFront(ThreadingHTTPServer):
    """The proxy: `url` for clients, moto at `upstream_host:upstream_port` behind it;
    `anonymous_read_prefix` (`/<bucket>/<prefix>`): objects anyone may GET."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        host: str,
        upstream_host: str,
        upstream_port: int,
        credentials: S3Credentials,
        anonymous_read_prefix: str | None = None,
        upload_counter: AwsCallCounter | None = None,
    ) -> None:
        super().__init__((host, 0), _FrontHandler)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.credentials = credentials
        self.anonymous_read_prefix = anonymous_read_prefix
        self.upload_counter = upload_counter
        self._thread = threading.Thread(target=self.serve_forever, name="lci-s3-front", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> S3VerifyingFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def start_in_front_of(
    upstream_host: str,
    upstream_port: int,
    host: str,
    credentials: S3Credentials,
    anonymous_read_prefix: str | None = None,
    upload_counter: AwsCallCounter | None = None,
) -> S3VerifyingFront:
    """A started front on `host` (any free port) verifying requests for moto behind it."""
    front = S3VerifyingFront(
        host, upstream_host, upstream_port, credentials, anonymous_read_prefix, upload_counter
    )
    return front.start()
