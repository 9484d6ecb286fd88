"""Executor and background adapters against stubbed boto3 clients, the table's items <-> domain
entities, path validation, and the error registry."""

from __future__ import annotations

import io
import json
import threading
import time
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
    assert calls == []


def test_polling_handle_backs_off_to_once_a_second() -> None:
    from lambdas.api.adapters.background import _PollingHandle

    answers = iter([None] * 12 + ["done"])
    sleeps: list[float] = []
    handle = _PollingHandle(lambda: next(answers), sleep=sleeps.append)  # type: ignore[arg-type,return-value]
    assert handle.wait(3600) == "done"
    assert sleeps == pytest.approx([min(0.02 * 1.6**i, 1.0) for i in range(12)])


def test_polling_handle_polls_last_at_the_deadline() -> None:
    from lambdas.api.adapters.background import _PollingHandle

    polls: list[float] = []
    sleeps: list[float] = []

    def poll() -> None:
        polls.append(time.monotonic())

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    started = time.monotonic()
    assert _PollingHandle(poll, sleep=sleep).wait(0.3) is None
    # Full steps would sleep 0.02 + 0.032 + 0.0512 + 0.08192 + 0.131 = 0.316 s: the last sleep
    # is cut short, and the last poll comes at the deadline, not a backoff step after it.
    assert sum(sleeps) <= 0.3 + 1e-9 and len(polls) == len(sleeps) + 1
    assert polls[-1] - started >= 0.3


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


# --- the table's items <-> entities (lambdas/api/adapters/dynamodb_items.py) -------------------


def test_an_execution_record_keeps_its_item_layout() -> None:
    from lambdas.api.adapters.dynamodb_items import entity_from_item, item_attributes
    from lambdas.api.domain import ExecutionRecord, JsonDocument

    running = ExecutionRecord(
        execution_id="e1",
        principal="p",
        status=ExecutionStatus.RUNNING,
        created_at="2025-01-01T00:00:00.000000Z",
        ttl=100,
        lost_after=50,
        job=JsonDocument(s3_key="executions/e1/job.json"),
    )
    item = item_attributes(running)
    assert item == {
        "execution_id": "e1",
        "principal": "p",
        "status": "running",
        "created_at": "2025-01-01T00:00:00.000000Z",
        "ttl": 100,
        "lost_after": 50,
        "job_s3_key": "executions/e1/job.json",
    }
    assert entity_from_item(ExecutionRecord, {"pk": "EXECUTION#e1", "sk": "META", **item}) == (
        running
    )

    finished = running.model_copy(
        update={
            "status": ExecutionStatus.OK,
            "lost_after": None,
            "job": None,
            "session_id": "s1",
            "finished_at": "2025-01-01T00:00:01.000000Z",
            "compute_ms": 7,
            "result": JsonDocument(text='{"a":1}'),
            "spilled": {"stdout": "executions/e1/stdout.txt"},
        }
    )
    item = item_attributes(finished)
    assert item["result"] == '{"a":1}' and "result_s3_key" not in item
    assert item["spilled"] == {"stdout": "executions/e1/stdout.txt"}
    assert {"lost_after", "job", "job_s3_key"}.isdisjoint(item)
    assert entity_from_item(ExecutionRecord, item) == finished


def test_key_fields_stay_in_the_key_and_come_back_from_it() -> None:
    from lambdas.api.adapters.dynamodb_items import entity_from_item, item_attributes
    from lambdas.api.domain import IdempotencyRecord, JsonDocument, NotebookCell

    cell = NotebookCell(
        session_id="s1",
        execution_count=3,
        execution_id="e3",
        code="x = 1",
        created_at="2025-01-01T00:00:00.000000Z",
        ttl=9,
        outputs=JsonDocument(text="[]"),
    )
    item = item_attributes(cell, in_key={"session_id"})
    assert "session_id" not in item and item["outputs"] == "[]"
    assert entity_from_item(NotebookCell, item, session_id="s1") == cell

    claim = IdempotencyRecord(
        principal="p", key_hash="h", execution_id="e1", request_hash="r", ttl=5
    )
    item = item_attributes(claim, in_key={"principal", "key_hash"})
    assert item == {"execution_id": "e1", "request_hash": "r", "ttl": 5}
    assert entity_from_item(IdempotencyRecord, item, principal="p", key_hash="h") == claim


def test_a_session_item_reads_as_plain_python_values() -> None:
    from decimal import Decimal

    from lambdas.api.adapters.dynamodb_items import entity_from_item
    from lambdas.api.domain import SessionRecord

    # What boto3's TypeDeserializer hands back: numbers are Decimals.
    item = {
        "pk": "SESSION#s1",
        "sk": "META",
        "session_id": "s1",
        "principal": "p",
        "created_at": "c",
        "last_used_at": "u",
        "expires_at": Decimal(1000),
        "ttl": Decimal(1000),
        "ttl_seconds": Decimal(600),
        "state_version": Decimal(2),
        "execution_count": Decimal(5),
        "variables": [{"name": "x", "type": "int"}],
        "has_files": False,
        "lease_id": "l1",
        "lease_expires_at": Decimal(900),
    }
    session = entity_from_item(SessionRecord, item)
    assert (session.expires_at, session.state_version, session.execution_count) == (1000, 2, 5)
    assert type(session.expires_at) is int and session.variables == [{"name": "x", "type": "int"}]
    assert session.is_leased(now=900) and not session.is_leased(now=901)
    assert session.is_live(now=1000) and not session.is_live(now=1001)
