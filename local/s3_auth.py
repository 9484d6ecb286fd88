"""What S3 verifies of a request, for the local stack's S3 front (`local/s3_front.py`).

Presigned requests (query-string SigV4, recomputed with botocore's own signer: S3
"Authenticating Requests: Using Query Parameters (AWS Signature Version 4)",
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html) and browser POST
uploads (policy signature, expiration, conditions and uncovered fields: S3 "Creating a POST
Policy", https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html).
A failed check is an `S3Rejection` carrying S3's status, code and message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

SIGNING_ALGORITHM = "AWS4-HMAC-SHA256"
SIGV4_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_PRESIGNED_EXPIRES_SECONDS = 604_800  # seven days: S3's ceiling for X-Amz-Expires
# POST form fields no condition has to cover (the POST Policy page, "Conditions").
POST_FIELDS_EXEMPT_FROM_CONDITIONS = frozenset({"x-amz-signature", "file", "policy"})
POST_IGNORED_FIELD_PREFIX = "x-ignore-"
_QUERY_AUTH_PARAMETERS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_POST_AUTH_FIELDS = ("policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date")


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str
    region: str


class S3Rejection(Exception):
    """What S3 would answer instead of serving the request."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def xml(self) -> bytes:
        request_id = uuid.uuid4().hex[:16].upper()
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{escape(self.message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()


def _signature_mismatch() -> S3Rejection:
    return S3Rejection(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


def _policy_failure(detail: str) -> S3Rejection:
    return S3Rejection(403, "AccessDenied", f"Invalid according to Policy: {detail}")


def _signer(credentials: S3Credentials) -> Any:
    """botocore's own S3 SigV4 signer (query-string flavour: UNSIGNED-PAYLOAD, raw paths)."""
    from botocore.auth import S3SigV4QueryAuth
    from botocore.credentials import Credentials

    return S3SigV4QueryAuth(
        Credentials(credentials.access_key, credentials.secret_key), "s3", credentials.region
    )


def _parse_timestamp(value: str, name: str) -> datetime:
    try:
        return datetime.strptime(value, SIGV4_TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise S3Rejection(
            400, "AuthorizationQueryParametersError", f"{name} must be in the ISO8601 format"
        ) from None


def _check_credential_scope(
    credential: str, timestamp: str, credentials: S3Credentials, error_code: str
) -> None:
    parts = credential.split("/")
    if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
        raise S3Rejection(400, error_code, "the credential is malformed")
    access_key, date, region = parts[0], parts[1], parts[2]
    if access_key != credentials.access_key:
        raise S3Rejection(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    if region != credentials.region:
        raise S3Rejection(
            400, error_code, f"the region '{region}' is wrong; expecting '{credentials.region}'"
        )
    if date != timestamp[:8]:
        raise S3Rejection(400, error_code, "the credential date does not match X-Amz-Date")


# -- presigned URLs ------------------------------------------------------------------------


def verify_presigned_request(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    credentials: S3Credentials,
    now: datetime,
) -> None:
    """Raise `S3Rejection` unless `target` carries a valid, unexpired query-string SigV4."""
    from botocore.awsrequest import AWSRequest

    path, _, query = target.partition("?")
    pairs = [pair.partition("=") for pair in query.split("&") if pair]
    params = {unquote(name): unquote(value) for name, _, value in pairs}
    missing = [name for name in _QUERY_AUTH_PARAMETERS if name not in params]
    if missing:
        raise S3Rejection(
            400,
            "AuthorizationQueryParametersError",
            f"Query-string authentication version 4 requires the {', '.join(missing)} parameters",
        )
    if params["X-Amz-Algorithm"] != SIGNING_ALGORITHM:
        raise S3Rejection(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Algorithm only supports AWS4-HMAC-SHA256",
        )
    timestamp = params["X-Amz-Date"]
    signed_at = _parse_timestamp(timestamp, "X-Amz-Date")
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        expires = -1
    if not 0 < expires <= MAX_PRESIGNED_EXPIRES_SECONDS:
        raise S3Rejection(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be a number between 1 and 604800 seconds",
        )
    _check_credential_scope(
        params["X-Amz-Credential"], timestamp, credentials, "AuthorizationQueryParametersError"
    )
    signed_names = params["X-Amz-SignedHeaders"].split(";")
    if "host" not in signed_names:
        raise _signature_mismatch()
    present: dict[str, list[str]] = {}
    for name, value in headers:
        present.setdefault(name.lower(), []).append(value)
    signed_headers = [(name, value) for name in signed_names for value in present.get(name, [])]
    # The canonical query string is every parameter, as sent, except the signature itself.
    unsigned_query = "&".join(
        f"{name}={value}" if sep else name
        for name, sep, value in pairs
        if unquote(name) != "X-Amz-Signature"
    )
    host = present.get("host", [""])[0]
    request = AWSRequest(method=method, url=f"http://{host}{path}?{unsigned_query}")
    for name, value in signed_headers:
        request.headers[name] = value
    request.context["timestamp"] = timestamp
    signer = _signer(credentials)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        raise _signature_mismatch()
    if (now - signed_at).total_seconds() > expires:
        raise S3Rejection(403, "AccessDenied", "Request has expired")


# -- POST uploads --------------------------------------------------------------------------


@dataclass(frozen=True)
class PostForm:
    fields: dict[str, str]  # lower-cased names -> values, in form order, `file` excluded
    names: list[str]  # field names as sent
    file_size: int


def parse_post_form(content_type: str, body: bytes) -> PostForm:
    """The fields and file size of a multipart/form-data body (fields after `file` are ignored,
    as S3 does)."""
    boundary = _boundary(content_type)
    if boundary is None:
        raise S3Rejection(
            400,
            "MalformedPOSTRequest",
            "The body of your POST request is not well-formed multipart/form-data.",
        )
    delimiter = b"--" + boundary
    sections = body.split(delimiter)
    fields: dict[str, str] = {}
    names: list[str] = []
    file_size: int | None = None
    for section in sections[1:]:
        if section.startswith(b"--"):
            break
        head, separator, content = section.partition(b"\r\n\r\n")
        if not separator:
            raise S3Rejection(400, "MalformedPOSTRequest", "a form part has no header")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        name = _part_name(head.decode("utf-8", "replace"))
        if name is None:
            continue
        if name.lower() == "file":
            file_size = len(content)
            break
        names.append(name)
        fields[name.lower()] = content.decode("utf-8", "replace")
    if file_size is None:
        raise S3Rejection(
            400, "InvalidArgument", "POST requires exactly one file upload per request."
        )
    return PostForm(fields=fields, names=names, file_size=file_size)


def _boundary(content_type: str) -> bytes | None:
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != "multipart/form-data":
        return None
    for parameter in parameters.split(";"):
        key, _, value = parameter.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode()
    return None


def _part_name(head: str) -> str | None:
    for line in head.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        for parameter in value.split(";"):
            name, _, quoted = parameter.strip().partition("=")
            if name.lower() == "name":
                return quoted.strip('"')
    return None


def verify_post_upload(
    bucket: str, form: PostForm, credentials: S3Credentials, now: datetime
) -> None:
    """Raise `S3Rejection` unless the form is signed by the stack and meets its policy."""
    missing = [name for name in (*_POST_AUTH_FIELDS, "x-amz-signature") if name not in form.fields]
    if missing:
        if "policy" in missing:
            raise S3Rejection(403, "AccessDenied", "Access Denied")
        raise S3Rejection(
            400, "InvalidArgument", f"Bucket POST must contain a field named '{missing[0]}'."
        )
    if "key" not in form.fields:
        raise S3Rejection(400, "InvalidArgument", "Bucket POST must contain a field named 'key'.")
    if form.fields["x-amz-algorithm"] != SIGNING_ALGORITHM:
        raise S3Rejection(400, "InvalidArgument", "x-amz-algorithm only supports AWS4-HMAC-SHA256")
    timestamp = form.fields["x-amz-date"]
    _parse_timestamp(timestamp, "x-amz-date")
    _check_credential_scope(
        form.fields["x-amz-credential"], timestamp, credentials, "InvalidArgument"
    )
    encoded_policy = form.fields["policy"]
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url="http://local/")
    request.context["timestamp"] = timestamp
    # The POST signature is the SigV4 signing key's HMAC of the base64 policy itself.
    expected = _signer(credentials).signature(encoded_policy, request)
    if not hmac.compare_digest(expected, form.fields["x-amz-signature"]):
        raise _signature_mismatch()
    try:
        policy = json.loads(base64.b64decode(encoded_policy, validate=True))
        expiration = datetime.fromisoformat(str(policy["expiration"]).replace("Z", "+00:00"))
        conditions = list(policy["conditions"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise S3Rejection(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from None
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=UTC)
    if now > expiration:
        raise _policy_failure("Policy expired.")
    covered = _check_conditions(bucket, form, conditions)
    extra = [
        name
        for name in form.names
        if name.lower() not in covered
        and name.lower() not in POST_FIELDS_EXEMPT_FROM_CONDITIONS
        and not name.lower().startswith(POST_IGNORED_FIELD_PREFIX)
    ]
    if extra:
        raise _policy_failure(f"Extra input fields: {', '.join(extra)}")


def _check_conditions(bucket: str, form: PostForm, conditions: list[object]) -> set[str]:
    """Check every condition; return the (lower-cased) field names they cover."""
    covered: set[str] = set()

    def actual(name: str) -> str | None:
        return bucket if name == "bucket" else form.fields.get(name)

    for condition in conditions:
        if isinstance(condition, dict) and len(condition) == 1:
            ((name, expected),) = condition.items()
            name = str(name).lower()
            covered.add(name)
            if actual(name) != str(expected):
                raise _policy_failure(f'Policy Condition failed: ["eq", "${name}", "{expected}"]')
            continue
        if not isinstance(condition, list) or len(condition) != 3:
            raise S3Rejection(400, "InvalidPolicyDocument", "Invalid Policy: Invalid Condition.")
        operator = str(condition[0]).lower()
        if operator == "content-length-range":
            low, high = int(condition[1]), int(condition[2])  # type: ignore[call-overload]
            if form.file_size > high:
                raise S3Rejection(
                    400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
                )
            if form.file_size < low:
                raise S3Rejection(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size",
                )
            continue
        name = str(condition[1]).lower().removeprefix("$")
        expected = str(condition[2])
        covered.add(name)
        value = actual(name)
        if operator == "eq":
            ok = value == expected
        elif operator == "starts-with":
            # Content-Type may list several values: each must start with the prefix.
            values = value.split(",") if value is not None and name == "content-type" else [value]
            ok = all(v is not None and v.strip().startswith(expected) for v in values)
        else:
            raise S3Rejection(400, "InvalidPolicyDocument", "Invalid Policy: Invalid Condition.")
        if not ok:
            raise _policy_failure(
                f'Policy Condition failed: ["{operator}", "${name}", "{expected}"]'
            )
    return covered


# -- the proxy -----------------------------------------------------------------------------
