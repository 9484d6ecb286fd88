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


# --- item 6: an executor invoke is never re-sent, except when throttled --------------------------


def _invocation() -> Any:
    from lambdas.shared.models import ExecutorInvocation

    return ExecutorInvocation(execution_id="e1", tenant_id="s1", session_id="s1", code="x += 1")


def _ok_payload() -> Any:
    import io
    import json

    from botocore.response import StreamingBody

    from lambdas.shared.models import ExecutionResult, ExecutionStatus

    answer = {
        "result": ExecutionResult(
            execution_id="e1", status=ExecutionStatus.OK, success=True, execution_count=1
        ).model_dump(mode="json")
    }
    raw = json.dumps(answer).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def _transport_failures(error: Exception) -> Any:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    return {
        "read timeout": ReadTimeoutError(endpoint_url="https://lambda.us-east-1.amazonaws.com"),
        "connection reset": ConnectionClosedError(
            endpoint_url="https://lambda.us-east-1.amazonaws.com"
        ),
        "connect failed": EndpointConnectionError(
            endpoint_url="https://lambda.us-east-1.amazonaws.com"
        ),
    }


@pytest.mark.parametrize("failure", ["read timeout", "connection reset", "connect failed"])
def test_a_lost_invoke_response_is_not_retried_so_user_code_runs_once(failure: str) -> None:
    """botocore's standard retries would resend Invoke after a read timeout or a reset
    connection, running the user's code a second time in the session."""
    from lambdas.api.adapters.executor import LambdaExecutor
    from lambdas.shared.executor_responses import ExecutorFailure

    executor = LambdaExecutor("lci-executor", read_timeout_s=400)
    sent: list[Any] = []
    error = _transport_failures(Exception())[failure]

    def transport(request: Any, **kwargs: Any) -> None:
        sent.append(request)
        raise error

    # Stubber answers before botocore's retry loop; the transport hook sits inside it.
    executor._client.meta.events.register("before-send.lambda.Invoke", transport)
    response = executor.invoke(_invocation())
    assert len(sent) == 1, f"Invoke was sent {len(sent)} times"
    assert isinstance(response, ExecutorFailure)


def test_the_lambda_client_keeps_connections_alive_and_never_retries_itself() -> None:
    from lambdas.api.adapters.executor import LambdaExecutor

    config = LambdaExecutor("lci-executor", read_timeout_s=400)._client.meta.config
    # botocore's `max_attempts` counts retries (1 would still resend once); the total is 1.
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert config.tcp_keepalive is True
    assert config.read_timeout == 400


def test_throttled_invokes_are_retried_within_a_bounded_budget() -> None:
    from botocore.stub import Stubber

    from lambdas.api.adapters.executor import INVOKE_THROTTLE_ATTEMPTS, LambdaExecutor
    from lambdas.api.errors import RateLimited

    slept: list[float] = []
    executor = LambdaExecutor("lci-executor", read_timeout_s=400, sleep=slept.append)
    with Stubber(executor._client) as stub:
        stub.add_client_error("invoke", "TooManyRequestsException", http_status_code=429)
        stub.add_response("invoke", {"StatusCode": 200, "Payload": _ok_payload()})
        assert executor.invoke(_invocation()).result.success
        stub.assert_no_pending_responses()
    assert len(slept) == 1
    with Stubber(executor._client) as stub:
        for _ in range(INVOKE_THROTTLE_ATTEMPTS):
            stub.add_client_error(
                "invoke",
                "TooManyRequestsException",
                http_status_code=429,
                service_message="Rate exceeded",
                response_meta={"HTTPHeaders": {"retry-after": "3"}},
            )
        with pytest.raises(RateLimited) as raised:
            executor.invoke(_invocation())
        stub.assert_no_pending_responses()
    assert raised.value.retry_after_seconds >= 1
    assert sum(slept) < 5  # bounded: the sync window is not spent on retries


# --- item 2 (the executor hop) and item 8 (throttles): Lambda's refusals, mapped ------------------


@pytest.mark.parametrize("code", ["RequestEntityTooLargeException", "RequestTooLargeException"])
def test_an_invocation_over_lambdas_request_limit_is_a_413(code: str) -> None:
    from botocore.stub import Stubber

    from lambdas.api.adapters.executor import LambdaExecutor
    from lambdas.api.errors import PayloadTooLarge, status_and_code

    executor = LambdaExecutor("lci-executor", read_timeout_s=400)
    with Stubber(executor._client) as stub:
        stub.add_client_error(
            "invoke",
            code,
            http_status_code=413,
            service_message="6291556 byte payload is too large for the RequestResponse "
            "invocation type (limit 6291456 bytes)",
        )
        with pytest.raises(PayloadTooLarge) as raised:
            executor.invoke(_invocation())
    assert status_and_code(raised.value) == (413, "PAYLOAD_TOO_LARGE")
    assert "6 MB" in raised.value.message


def test_a_response_over_lambdas_limit_is_reported_as_a_result_too_large() -> None:
    import io
    import json

    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    from lambdas.api.adapters.executor import RESULT_TOO_LARGE_MESSAGE, LambdaExecutor
    from lambdas.shared.executor_responses import ExecutorFailure

    executor = LambdaExecutor("lci-executor", read_timeout_s=400)
    error = json.dumps(
        {
            "errorType": "Function.ResponseSizeTooLarge",
            "errorMessage": "Response payload size exceeded maximum allowed payload size "
            "(6291556 bytes).",
        }
    ).encode()
    with Stubber(executor._client) as stub:
        stub.add_response(
            "invoke",
            {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": StreamingBody(io.BytesIO(error), len(error)),
            },
        )
        response = executor.invoke(_invocation())
    assert isinstance(response, ExecutorFailure)
    assert response.result.error is not None
    assert response.result.error.value == RESULT_TOO_LARGE_MESSAGE
    assert "too large" in RESULT_TOO_LARGE_MESSAGE and "6 MB" in RESULT_TOO_LARGE_MESSAGE
