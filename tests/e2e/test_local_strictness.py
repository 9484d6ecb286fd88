"""The local stack is as strict as AWS where it matters to the product: presigned URLs and upload
forms the API hands out are verified like S3 verifies them, a body over API Gateway's 10 MB gets
413 and an integration over its timeout gets 504, both in the API's error shape."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from lci import Client

from .conftest import API_KEYS, start_stack, stop_stack

pytestmark = [pytest.mark.e2e, pytest.mark.local_only]


def _grant(local_stack, session_id: str, path: str, size: int) -> dict:
    answer = httpx.post(
        f"{local_stack.endpoint}/v1/sessions/{session_id}/files",
        json={"path": path, "size": size},
        headers={"x-api-key": local_stack.keys[0]},
        timeout=60,
    )
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["upload"]


def _s3_code(response: httpx.Response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0]


@pytest.mark.attack(
    "presigned URLs",
    "a tampered download signature; an upload over its granted size; a form field the policy does "
    "not cover",
    "403 `SignatureDoesNotMatch`, 400 `EntityTooLarge`, 403 `AccessDenied`, as S3 answers",
)
def test_presigned_downloads_and_upload_forms_from_the_api_are_verified_like_s3(
    local_stack, client
):
    session = client.create_session()
    client.upload_file(session.session_id, b"secret", "secret.txt")
    url = client.file_info(session.session_id, "secret.txt").download_url
    assert httpx.get(url, timeout=60).content == b"secret"
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["X-Amz-Signature"] = "0" * len(query["X-Amz-Signature"])
    tampered = urlunsplit(parts._replace(query=urlencode(query)))
    refused = httpx.get(tampered, timeout=60)
    assert (refused.status_code, _s3_code(refused)) == (403, "SignatureDoesNotMatch")

    upload = _grant(local_stack, session.session_id, "small.txt", 5)
    # More bytes than the grant allows: S3 refuses the upload itself.
    oversize = httpx.post(
        upload["url"], data=upload["fields"], files={"file": ("small.txt", b"x" * 10_000_000)}
    )
    assert (oversize.status_code, _s3_code(oversize)) == (400, "EntityTooLarge")
    # A field the policy does not cover (here: a metadata header smuggled in).
    extra = httpx.post(
        upload["url"],
        data={**upload["fields"], "x-amz-meta-owner": "mallory"},
        files={"file": ("small.txt", b"x")},
    )
    assert (extra.status_code, _s3_code(extra)) == (403, "AccessDenied")


def test_a_body_over_ten_megabytes_is_413_in_the_error_shape(local_stack):
    answer = httpx.post(
        f"{local_stack.endpoint}/v1/execute",
        content=b"x" * (10 * 1024 * 1024 + 1),
        headers={"x-api-key": local_stack.keys[0], "content-type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_an_integration_over_the_gateway_timeout_is_504_in_the_error_shape(tmp_path):
    stack = start_stack(tmp_path, {"LCI_INTEGRATION_TIMEOUT_MS": "3000"})
    try:
        with Client(stack.endpoint, API_KEYS[0], timeout=120) as api:
            session = api.create_session()
            assert api.execute("1", session_id=session.session_id).success  # warm
        started = time.monotonic()
        answer = httpx.post(
            f"{stack.endpoint}/v1/sessions/{session.session_id}/execute",
            json={"code": "import time\ntime.sleep(8)", "wait": True},
            headers={"x-api-key": API_KEYS[0]},
            timeout=60,
        )
        elapsed = time.monotonic() - started
        assert answer.status_code == 504, answer.text
        assert json.loads(answer.content)["error"]["code"] == "INTEGRATION_TIMEOUT"
        assert 3.0 <= elapsed < 6.0
    finally:
        stop_stack(stack)
