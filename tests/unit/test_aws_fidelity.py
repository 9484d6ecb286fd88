"""What the API's AWS-facing code does that only AWS would show (issue 12): X-Ray captures no
responses, presigned URLs name the regional S3 endpoint, executor invokes are never retried
except for throttles, and every commit attempt of different items has its own DynamoDB token."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


# --- item 5: X-Ray ------------------------------------------------------------------------------


class _RecordingSubsegment:
    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}

    def put_metadata(self, key: str, value: Any, namespace: str = "") -> None:
        self.metadata[key] = value

    def put_annotation(self, key: str, value: Any) -> None:
        pass


class _RecordingProvider:
    """A Powertools tracing provider that keeps what would have gone to X-Ray."""

    def __init__(self) -> None:
        self.subsegments: list[_RecordingSubsegment] = []

    @contextlib.contextmanager
    def in_subsegment(self, name: str, **kwargs: Any) -> Iterator[_RecordingSubsegment]:
        subsegment = _RecordingSubsegment()
        self.subsegments.append(subsegment)
        yield subsegment

    def patch(self, modules: Any) -> None:
        pass

    def patch_all(self) -> None:
        pass


@pytest.fixture
def xray(monkeypatch: pytest.MonkeyPatch) -> Iterator[_RecordingProvider]:
    from aws_lambda_powertools import Tracer

    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")  # Powertools traces on Lambda only
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
    provider = _RecordingProvider()
    Tracer._reset_config()
    Tracer(provider=provider, auto_patch=False)  # later Tracer() calls share this config
    try:
        yield provider
    finally:
        Tracer._reset_config()


def test_the_api_handler_traces_without_recording_its_response(
    xray: _RecordingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A response holds user output and presigned URLs carrying the role's session token."""
    from lambdas.api import handler

    monkeypatch.setattr(handler, "_ON_LAMBDA", True)

    def entry(event: Any, context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "body": '{"stdout": "secret", "download_url": "...token"}'}

    traced = handler._traced(entry)
    assert traced({}, None)["statusCode"] == 200
    [subsegment] = xray.subsegments
    assert not any("response" in key for key in subsegment.metadata), subsegment.metadata


# --- item 1: presigned URLs name the regional S3 endpoint ----------------------------------------

BUCKET = "lci-dev-storagebucket-1abcdef"


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-southeast-3"])
def test_presigned_urls_use_the_regional_virtual_hosted_endpoint(
    region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regions opened after March 2019 (ap-southeast-3) refuse the global host, older ones
    redirect new buckets (breaking the signature), and the executor's VPC endpoint serves
    only its own Region: every URL must name `<bucket>.s3.<region>.amazonaws.com`."""
    from urllib.parse import urlsplit

    from lambdas.api.adapters.s3 import S3BlobStore

    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_REGION", region)
    blobs = S3BlobStore(BUCKET)
    expected_host = f"{BUCKET}.s3.{region}.amazonaws.com"
    download = urlsplit(blobs.presigned_get("sessions/s1/files/a.csv", 300))
    assert (download.scheme, download.netloc) == ("https", expected_host)
    assert download.path == "/sessions/s1/files/a.csv"
    assert f"%2F{region}%2Fs3%2Faws4_request" in download.query  # signed for this Region
    upload = blobs.presigned_post(key_prefix="sessions/s1/files/", max_bytes=10, expires_in=60)
    assert urlsplit(upload.url).netloc == expected_host
    assert f"/{region}/s3/aws4_request" in upload.fields["x-amz-credential"]


def test_an_endpoint_override_still_presigns_path_style_against_it() -> None:
    """The local stack's S3 (its verifying front on 127.0.0.1) has no bucket subdomains."""
    from lambdas.api.adapters.s3 import S3BlobStore

    blobs = S3BlobStore(BUCKET, endpoint_url="http://127.0.0.1:9000")
    assert blobs.presigned_get("k.txt", 60).startswith(f"http://127.0.0.1:9000/{BUCKET}/k.txt?")
    post = blobs.presigned_post(key_prefix="p/", max_bytes=1, expires_in=60)
    assert post.url == f"http://127.0.0.1:9000/{BUCKET}"
