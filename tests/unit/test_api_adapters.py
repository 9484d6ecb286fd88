"""Executor and background adapters against stubbed boto3 clients, path validation, and the
error registry."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from lambdas.api.errors import ERROR_REGISTRY, InvalidPath, RateLimited, status_and_code
from lambdas.shared.models import ExecutionResult, ExecutionStatus, ExecutorInvocation


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def _invocation() -> ExecutorInvocation:
    return ExecutorInvocation(execution_id="e1", tenant_id="s1", session_id="s1", code="1+1")


def _body(data: Any) -> StreamingBody:
    raw = json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def test_lambda_executor_invokes_with_tenant_id() -> None:
    from lambdas.api.adapters.executor import LambdaExecutor

    executor = LambdaExecutor("lci-executor", read_timeout_s=400)
    answer = {
        "result": ExecutionResult(
            execution_id="e1", status=ExecutionStatus.OK, success=True, execution_count=1
        ).model_dump(mode="json"),
        "state": {"uploaded": True, "size": 5},
    }
    with Stubber(executor._client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": _body(answer)},
            {
                "FunctionName": "lci-executor",
                "InvocationType": "RequestResponse",
                "TenantId": "s1",
                "Payload": _invocation().model_dump_json().encode(),
            },
        )
        response = executor.invoke(_invocation())
    assert response.result.status == ExecutionStatus.OK and response.state.uploaded


def test_lambda_function_error_is_an_error_result_without_details() -> None:
    from lambdas.api.adapters.executor import LambdaExecutor
    from lambdas.shared.executor_responses import ExecutorFailure

    executor = LambdaExecutor("lci-executor", read_timeout_s=400)
    crash = {
        "errorType": "Runtime.ExitError",
        "errorMessage": "arn:aws:lambda:us-east-1:123456789012:function:lci-executor exited",
    }
    with Stubber(executor._client) as stub:
        stub.add_response(
            "invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _body(crash)}
        )
        response = executor.invoke(_invocation())
    assert isinstance(response, ExecutorFailure)
    assert response.result.status == ExecutionStatus.ERROR
    assert "arn:" not in response.model_dump_json()
    assert "Runtime.ExitError" in response.result.error.value  # type: ignore[union-attr]


def test_lambda_throttle_raises_rate_limited() -> None:
    from lambdas.api.adapters.executor import INVOKE_THROTTLE_ATTEMPTS, LambdaExecutor

    executor = LambdaExecutor("lci-executor", read_timeout_s=400, sleep=lambda _: None)
    with Stubber(executor._client) as stub:
        for _ in range(INVOKE_THROTTLE_ATTEMPTS):  # throttles are retried a few times first
            stub.add_client_error("invoke", "TooManyRequestsException", http_status_code=429)
        with pytest.raises(RateLimited):
            executor.invoke(_invocation())


def test_lambda_background_invokes_itself_asynchronously() -> None:
    from lambdas.api.adapters.background import LambdaBackground

    background = LambdaBackground("lci-api")
    polls = iter([None, None, "done"])
    with Stubber(background._client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 202},
            {
                "FunctionName": "lci-api",
                "InvocationType": "Event",
                "Payload": json.dumps({"lci_background": {"execution_id": "e1"}}).encode(),
            },
        )
        handle = background.submit(
            "e1", run=lambda: pytest.fail("runs remotely"), poll=lambda: next(polls)
        )  # type: ignore[arg-type,return-value]
    assert handle.wait(30) == "done"


def test_polling_handle_gives_up_after_the_window() -> None:
    from lambdas.api.adapters.background import _PollingHandle

    calls: list[float] = []
    handle = _PollingHandle(lambda: None, sleep=calls.append)
    assert handle.wait(0.0) is None


def test_thread_background_wait_returns_the_result_or_none() -> None:
    from lambdas.api.adapters.background import ThreadBackground

    background = ThreadBackground(max_workers=2)
    gate = threading.Event()
    result = ExecutionResult(execution_id="e1", status=ExecutionStatus.OK, success=True)

    def run() -> ExecutionResult:
        gate.wait(30)
        return result

    handle = background.submit("e1", run=run, poll=lambda: None)
    assert handle.wait(0.01) is None
    gate.set()
    assert handle.wait(30) == result
    background.shutdown()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("a.txt", "a.txt"), ("dir/sub/x.csv", "dir/sub/x.csv"), ("a//b/./c", "a/b/c")],
)
def test_valid_paths_are_normalized(raw: str, expected: str) -> None:
    from lambdas.api.service.common import validate_path

    assert validate_path(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", " ", "/etc/passwd", "../x", "a/../../x", "a/..", "a\x00b", "a\nb", "d/", "x" * 513]
)
def test_invalid_paths_raise(raw: str) -> None:
    from lambdas.api.service.common import validate_path

    with pytest.raises(InvalidPath):
        validate_path(raw)


def test_every_spec_error_code_is_registered() -> None:
    codes = {code: status for status, code in ERROR_REGISTRY.values()}
    assert codes["INVALID_REQUEST"] == 400 and codes["PACKAGE_NOT_ALLOWED"] == 400
    assert codes["INVALID_PATH"] == 400 and codes["SESSION_BUSY"] == 409
    assert codes["SESSION_NOT_FOUND"] == codes["EXECUTION_NOT_FOUND"] == 404
    assert codes["FILE_NOT_FOUND"] == 404 and codes["PAYLOAD_TOO_LARGE"] == 413
    assert codes["RATE_LIMITED"] == codes["QUOTA_EXCEEDED"] == 429
    assert status_and_code(RateLimited()) == (429, "RATE_LIMITED")
