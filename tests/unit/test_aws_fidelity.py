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
