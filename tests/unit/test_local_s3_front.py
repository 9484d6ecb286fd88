"""The local stack's S3 front verifies what S3 verifies and moto does not: presigned URL
signatures and expiry, POST policy signatures, expiration, conditions and uncovered fields.
Each rejection has S3's status and error code; valid requests reach moto unchanged."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import httpx
import pytest
from botocore.config import Config

from local.s3_front import S3Credentials, start_in_front_of

BUCKET = "front-test"
CREDENTIALS = S3Credentials("testing", "testing", "us-east-1")


@pytest.fixture(scope="module")
def front(moto_server):
    upstream = urlsplit(moto_server.endpoint_url)
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    instance = start_in_front_of(upstream.hostname, upstream.port, "127.0.0.1", CREDENTIALS)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def s3(front):
    return boto3.client(
        "s3",
        endpoint_url=front.url,
        region_name=CREDENTIALS.region,
        aws_access_key_id=CREDENTIALS.access_key,
        aws_secret_access_key=CREDENTIALS.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def _error(response: httpx.Response) -> tuple[int, str, str]:
    text = response.text
    code = text.split("<Code>")[1].split("</Code>")[0]
    message = text.split("<Message>")[1].split("</Message>")[0]
    return response.status_code, code, message


def _signed_in_the_past(monkeypatch, seconds: int) -> None:
    past = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: past)
    monkeypatch.setattr("botocore.signers.get_current_datetime", lambda: past)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_authorization_header_calls_and_presigned_get_put_head_delete_reach_moto(s3):
    s3.put_object(Bucket=BUCKET, Key="a.txt", Body=b"hello")
    assert s3.get_object(Bucket=BUCKET, Key="a.txt")["Body"].read() == b"hello"
    params = {"Bucket": BUCKET, "Key": "b.txt"}
    put = s3.generate_presigned_url("put_object", Params=params, ExpiresIn=60)
    assert httpx.put(put, content=b"via presigned put").status_code == 200
    get = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    assert httpx.get(get).content == b"via presigned put"
    head = s3.generate_presigned_url("head_object", Params=params, ExpiresIn=60)
    answer = httpx.head(head)
    assert answer.status_code == 200 and answer.headers["content-length"] == "17"
    delete = s3.generate_presigned_url("delete_object", Params=params, ExpiresIn=60)
    assert httpx.delete(delete).status_code == 204
    assert httpx.get(get).status_code == 404


def test_a_tampered_presigned_url_is_refused_with_signature_does_not_match(s3):
    s3.put_object(Bucket=BUCKET, Key="secret.txt", Body=b"secret")
    s3.put_object(Bucket=BUCKET, Key="other.txt", Body=b"other")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "secret.txt"}, ExpiresIn=60
    )
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    for tampered in (
        _with_query(url, **{"X-Amz-Signature": flipped}),
        url.replace("secret.txt", "other.txt"),  # another key, same signature
        _with_query(url, **{"X-Amz-Expires": "600"}),  # a longer life, same signature
    ):
        assert _error(httpx.get(tampered))[:2] == (403, "SignatureDoesNotMatch")
    # A presigned GET does not allow a PUT to the same key.
    assert _error(httpx.put(url, content=b"x"))[:2] == (403, "SignatureDoesNotMatch")
    assert httpx.get(url).content == b"secret"


def test_an_expired_presigned_url_is_refused_as_s3_does(s3, monkeypatch):
    s3.put_object(Bucket=BUCKET, Key="old.txt", Body=b"old")
    _signed_in_the_past(monkeypatch, 120)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "old.txt"}, ExpiresIn=60
    )
    monkeypatch.undo()
    assert _error(httpx.get(url)) == (403, "AccessDenied", "Request has expired")


def test_anonymous_requests_to_the_private_bucket_are_refused(s3):
    s3.put_object(Bucket=BUCKET, Key="private.txt", Body=b"private")
    endpoint = s3.meta.endpoint_url
    assert _error(httpx.get(f"{endpoint}/{BUCKET}/private.txt"))[:2] == (403, "AccessDenied")


def _raw_get(url: str, target: str) -> int:
    """Status of a GET of `target` exactly as written (httpx would normalize `..`)."""
    import http.client

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", target)
        return connection.getresponse().status
    finally:
        connection.close()


def test_anonymous_get_and_head_are_served_under_the_wheelhouse_prefix_only(moto_server, s3):
    """The executor reads the wheelhouse without credentials (SPEC invariant 2's one
    exception); nothing else of the bucket becomes readable that way."""
    upstream = urlsplit(moto_server.endpoint_url)
    front = start_in_front_of(
        upstream.hostname,
        upstream.port,
        "127.0.0.1",
        CREDENTIALS,
        anonymous_read_prefix=f"/{BUCKET}/wheelhouse/",
    )
    try:
        s3.put_object(Bucket=BUCKET, Key="wheelhouse/x86_64/index.json", Body=b"{}")
        s3.put_object(Bucket=BUCKET, Key="sessions/s1/state/1.pkl", Body=b"secret")
        index = f"{front.url}/{BUCKET}/wheelhouse/x86_64/index.json"
        assert httpx.get(index).content == b"{}"
        assert httpx.head(index).headers["content-length"] == "2"
        assert httpx.get(index.replace("index.json", "missing.whl")).status_code == 404
        for refused in (
            f"/{BUCKET}/sessions/s1/state/1.pkl",
            f"/{BUCKET}/wheelhouse/../sessions/s1/state/1.pkl",
            f"/{BUCKET}/wheelhouse/%2e%2e/sessions/s1/state/1.pkl",
            f"/{BUCKET}/wheelhouse/",  # a listing
            f"/{BUCKET}/wheelhouse/x86_64/index.json?acl",
            f"/{BUCKET}?prefix=wheelhouse/",
            "/other-bucket/wheelhouse/x86_64/index.json",
        ):
            assert _raw_get(front.url, refused) == 403, refused
        assert httpx.put(index, content=b"tampered").status_code == 403
        assert httpx.delete(index).status_code == 403
        assert (
            s3.get_object(Bucket=BUCKET, Key="wheelhouse/x86_64/index.json")["Body"].read() == b"{}"
        )
    finally:
        front.stop()


def _post(s3, *, key="uploads/", exact_key=None, max_bytes=100, expires=60, conditions=None):
    target = exact_key or key + "${filename}"
    post = s3.generate_presigned_post(
        Bucket=BUCKET,
        Key=target,
        Conditions=[["content-length-range", 0, max_bytes], *(conditions or [])],
        ExpiresIn=expires,
    )
    fields = dict(post["fields"])
    if exact_key is None:
        fields.pop("key")
    return post["url"], fields


def _upload(url: str, fields: dict[str, str], key: str | None, content: bytes) -> httpx.Response:
    data = dict(fields)
    if key is not None:
        data["key"] = key
    return httpx.post(url, data=data, files={"file": ("f.bin", content)})


def test_a_presigned_post_within_its_policy_is_stored(s3):
    url, fields = _post(s3)
    assert _upload(url, fields, "uploads/ok.bin", b"x" * 100).status_code in (200, 201, 204)
    assert s3.get_object(Bucket=BUCKET, Key="uploads/ok.bin")["Body"].read() == b"x" * 100
    # Fields named x-ignore-* need no condition.
    assert _upload(url, {**fields, "x-ignore-note": "1"}, "uploads/n.bin", b"n").status_code < 300


def test_a_presigned_post_over_the_size_range_is_entity_too_large(s3):
    url, fields = _post(s3, max_bytes=100)
    status, code, _ = _error(_upload(url, fields, "uploads/big.bin", b"x" * 101))
    assert (status, code) == (400, "EntityTooLarge")
    url, fields = _post(s3, conditions=[["content-length-range", 10, 100]])
    assert _error(_upload(url, fields, "uploads/small.bin", b"x"))[:2] == (400, "EntityTooSmall")


def test_a_presigned_post_outside_its_key_or_with_a_tampered_policy_is_refused(s3):
    url, fields = _post(s3)
    status, code, message = _error(_upload(url, fields, "elsewhere/x.bin", b"x"))
    assert (status, code) == (403, "AccessDenied") and "Policy Condition failed" in message
    url, fields = _post(s3, exact_key="pinned/one.bin")
    assert _error(_upload(url, fields, "pinned/two.bin", b"x"))[:2] == (403, "AccessDenied")
    # A policy rewritten to allow more: its signature no longer matches.
    url, fields = _post(s3, max_bytes=100)
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"][0] = ["content-length-range", 0, 10**9]
    forged = {**fields, "policy": base64.b64encode(json.dumps(policy).encode()).decode()}
    status, code, _ = _error(_upload(url, forged, "uploads/forged.bin", b"x" * 1000))
    assert (status, code) == (403, "SignatureDoesNotMatch")


def test_a_presigned_post_with_a_field_no_condition_covers_is_refused(s3):
    url, fields = _post(s3)
    extra = {**fields, "x-amz-meta-owner": "mallory"}
    status, code, message = _error(_upload(url, extra, "uploads/meta.bin", b"x"))
    assert (status, code) == (403, "AccessDenied")
    assert "Extra input fields: x-amz-meta-owner" in message
    pinned_type = [{"Content-Type": "text/csv"}]
    url, fields = _post(s3, conditions=pinned_type)
    wrong = {**fields, "Content-Type": "text/html"}
    assert _error(_upload(url, wrong, "uploads/t.csv", b"a,b"))[:2] == (403, "AccessDenied")
    right = {**fields, "Content-Type": "text/csv"}
    assert _upload(url, right, "uploads/t.csv", b"a,b").status_code < 300


def test_an_expired_presigned_post_is_refused(s3, monkeypatch):
    _signed_in_the_past(monkeypatch, 120)
    url, fields = _post(s3, expires=60)
    monkeypatch.undo()
    status, code, message = _error(_upload(url, fields, "uploads/late.bin", b"x"))
    assert (status, code, message) == (
        403,
        "AccessDenied",
        "Invalid according to Policy: Policy expired.",
    )


def test_stored_post_uploads_are_counted_by_folder_when_asked(front, s3):
    """benchmarks/e2e.py and the e2e tests count what runs upload (local/aws_calls.py)."""
    from local.aws_calls import AwsCallCounter

    front.upload_counter = AwsCallCounter("s3")
    try:
        url, fields = _post(s3, key="sessions/s1/state/")
        assert _upload(url, fields, "sessions/s1/state/1.pkl", b"a").status_code < 300
        assert _upload(url, fields, "sessions/s1/state/2.pkl", b"b").status_code < 300
        assert _upload(url, fields, "elsewhere/3.pkl", b"c").status_code == 403  # not stored
        s3.put_object(Bucket=BUCKET, Key="sessions/s1/state/3.pkl", Body=b"c")  # not a POST form
        assert front.upload_counter.counts() == {"sessions/s1/state/": 2}
    finally:
        front.upload_counter = None
