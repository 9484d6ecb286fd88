"""AWS behaviours the API relies on that moto does not reproduce, emulated around the real
adapters (issue 12): DynamoDB's ClientRequestToken idempotency."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from lambdas.api import container
from tests.conftest import EXECUTOR_PROTECTION_CHECKS
from tests.functional.conftest import (
    TABLE,
    ApiClient,
    FakeExecutor,
    ok_result,
    take_over_lease_during_next_run,
)

FAST = {"timeout_ms": 2000}


class StrictTransactionTokens:
    """DynamoDB's rule for `ClientRequestToken` (moto ignores it): a token names one
    transaction for 10 minutes after its first request completed (cancelled or not); the same
    token with other items is IdempotentParameterMismatchException, with the same items a
    no-op."""

    def __init__(self, client: Any) -> None:
        self._send = client.transact_write_items
        self._client = client
        self.calls: list[tuple[str, str]] = []
        self._seen: dict[str, str] = {}

    def __call__(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        token = kwargs.get("ClientRequestToken", "")
        items = json.dumps(kwargs["TransactItems"], sort_keys=True, default=str)
        self.calls.append((token, items))
        if token and token in self._seen:
            if self._seen[token] != items:
                raise ClientError(
                    {
                        "Error": {
                            "Code": "IdempotentParameterMismatchException",
                            "Message": "token reused with different parameters",
                        }
                    },
                    "TransactWriteItems",
                )
            return {}
        try:
            return self._send(**kwargs)
        finally:
            if token:
                self._seen[token] = items


@pytest.fixture
def strict_tokens(api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> StrictTransactionTokens:
    client = container.services().deps.table._client  # type: ignore[attr-defined]
    strict = StrictTransactionTokens(client)
    monkeypatch.setattr(client, "transact_write_items", strict)
    return strict


def test_each_commit_attempt_of_other_items_has_its_own_transaction_token(
    api: ApiClient, fake_executor: FakeExecutor, strict_tokens: StrictTransactionTokens
) -> None:
    """A run whose lease was taken over falls back to writing its record alone: another
    transaction, so another token (the first one's would be refused for 10 minutes)."""
    sid = api.new_session()
    take_over_lease_during_next_run(fake_executor, sid)
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "late", **FAST})
    assert response.status == 200, response.text
    result = response.json()
    assert any("lease expired" in warning for warning in result["warnings"])
    stored = api.get(f"/v1/executions/{result['execution_id']}")
    assert stored.status == 200 and stored.json()["stdout"] == "ran: late\n"
    # The run's start (lease + running record) is a transaction too, then the two commits.
    tokens = [token for token, _ in strict_tokens.calls]
    assert len(tokens) == 3 and len(set(tokens)) == 3, tokens
    assert all(1 <= len(token) <= 36 for token in tokens)


def test_a_retried_commit_of_the_same_items_reuses_its_token(
    api: ApiClient, fake_executor: FakeExecutor, strict_tokens: StrictTransactionTokens
) -> None:
    """A retry after a lost response must be the same transaction: DynamoDB then answers
    success without writing twice."""
    from botocore.exceptions import ClientError

    answered: set[str] = set()
    strict = strict_tokens

    def lose_first_response(**kwargs: Any) -> Any:
        response = strict(**kwargs)
        token = kwargs.get("ClientRequestToken", "")
        if token not in answered:  # written, but the answer is lost on the way back
            answered.add(token)
            raise ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "lost"}},
                "TransactWriteItems",
            )
        return response

    client = container.services().deps.table._client  # type: ignore[attr-defined]
    client.transact_write_items = lose_first_response
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "once", **FAST})
    assert response.status == 200 and response.json()["execution_count"] == 1
    # The run's start (lease + running record) and its commit: each retried as itself.
    calls = strict.calls
    assert len(calls) == 4 and calls[0] == calls[1] and calls[2] == calls[3], calls
    assert calls[0] != calls[2]


# --- item 3: API Gateway's 29 s: the sync window holds on every path ------------------------------


def _settings(**overrides: Any) -> Any:
    from lambdas.api.settings import ApiSettings
    from tests.functional.conftest import BUCKET

    return ApiSettings(TABLE_NAME=TABLE, BUCKET_NAME=BUCKET, **overrides)


def _session_item(session_id: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb").Table(TABLE)
    return table.get_item(Key={"pk": f"SESSION#{session_id}", "sk": "META"})["Item"]


def _execution_item(execution_id: str) -> dict[str, Any] | None:
    table = boto3.resource("dynamodb").Table(TABLE)
    return table.get_item(Key={"pk": f"EXECUTION#{execution_id}", "sk": "META"}).get("Item")


def test_a_slow_cold_start_answers_202_with_an_id_within_the_window(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    """A short run (its timeout fits the window many times) whose environment takes longer
    than the window to start (a new session's cold start, a big state restore): the caller
    gets 202 and an id at the window, never API Gateway's 504 without one."""
    import threading
    import time

    window_ms = 2500
    container.override(settings=_settings(SYNC_WAIT_MS=window_ms))
    sid = api.new_session()
    cold = threading.Event()
    normal = fake_executor.behaviour

    def slow_cold_start(invocation: Any) -> Any:
        cold.wait(8)  # the environment starts (the test ends it early once it saw the 202)
        fake_executor.behaviour = normal
        return fake_executor.invoke(invocation)

    fake_executor.behaviour = slow_cold_start
    started = time.monotonic()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "x = 1", "timeout_ms": 100})
    elapsed = time.monotonic() - started
    assert response.status == 202, response.text
    assert elapsed < window_ms / 1000 + 1.0
    execution_id = response.json()["execution_id"]
    running = api.get(f"/v1/executions/{execution_id}")
    assert running.status == 200 and running.json()["status"] == "running"
    assert "lease_id" in _session_item(sid)  # the run still holds the session
    cold.set()
    deadline = time.monotonic() + 30
    while api.get(f"/v1/executions/{execution_id}").json()["status"] == "running":
        assert time.monotonic() < deadline, "the run never finished"
        time.sleep(0.05)
    finished = api.get(f"/v1/executions/{execution_id}").json()
    assert finished["status"] == "ok" and finished["stdout"] == "ran: x = 1\n"
    item = _session_item(sid)
    assert "lease_id" not in item and int(item["execution_count"]) == 1  # released, committed


def test_the_running_execution_is_recorded_before_the_executor_is_invoked(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    """Even a run that fits the window: if the answer never reaches the caller (a 504, a
    crash), the execution exists, and is reported lost rather than never having existed."""
    seen: list[Any] = []
    normal = fake_executor.behaviour

    def check_record(invocation: Any) -> Any:
        seen.append(_execution_item(invocation.execution_id))
        fake_executor.behaviour = normal
        return fake_executor.invoke(invocation)

    fake_executor.behaviour = check_record
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST})
    assert response.status == 200
    fake_executor.behaviour = check_record
    assert api.post("/v1/execute", {"code": "1", **FAST}).status == 200
    assert len(seen) == 2
    for record in seen:
        assert record is not None, "the executor ran before its execution was recorded"
        assert record["status"] == "running"


@pytest.mark.parametrize("sync_wait_ms", [25_001, 29_000])
def test_the_sync_window_can_not_exceed_25_seconds(sync_wait_ms: int) -> None:
    from pydantic import ValidationError

    from infra.config import StackConfig

    with pytest.raises(ValidationError):
        _settings(SYNC_WAIT_MS=sync_wait_ms)
    with pytest.raises(ValidationError):
        StackConfig(syncWaitMs=sync_wait_ms)


class _RemoteBackground:
    """A background port whose runs happen in another invocation (like LambdaBackground)."""

    runs_remotely = True

    def __init__(self) -> None:
        self.submitted: list[str] = []

    class _Handle:
        def wait(self, timeout_s: float) -> None:
            return None

    def submit(self, execution_id: str, run: Any, poll: Any) -> Any:
        self.submitted.append(execution_id)
        return self._Handle()


def test_on_lambda_a_run_is_inline_only_when_its_timeout_leaves_room_for_a_cold_start(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    """On Lambda the API function can not answer 202 while it still waits for an inline
    invoke: only a run whose timeout plus a cold start and state transfer fit the window is
    invoked inline; a 15 s run in a 25 s window goes to the background invocation."""
    from lambdas.shared import limits

    background = _RemoteBackground()
    container.override(background=background)
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", "timeout_ms": 15_000})
    assert response.status == 202
    assert background.submitted == [response.json()["execution_id"]]
    assert fake_executor.invocations == []
    inline_ms = limits.DEFAULT_SYNC_WAIT_MS - limits.SYNC_INLINE_ALLOWANCE_MS
    other = api.new_session()
    response = api.post(f"/v1/sessions/{other}/execute", {"code": "2", "timeout_ms": inline_ms})
    assert response.status == 200 and len(fake_executor.invocations) == 1


def test_on_lambda_an_inline_run_whose_executor_hangs_answers_202_when_the_window_closes(
    api: ApiClient, fake_executor: FakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inline invoke runs on a thread of the API invocation: an executor that hangs past
    the cold-start allowance still lets the caller have 202 and the id at the window (API
    Gateway would cut the call at 29 s without one); the run finishes behind it."""
    import time

    from lambdas.shared import limits

    window_ms = 2500
    monkeypatch.setattr(limits, "SYNC_INLINE_ALLOWANCE_MS", 1000)  # a short window stays inline
    background = _RemoteBackground()
    container.override(settings=_settings(SYNC_WAIT_MS=window_ms), background=background)
    sid = api.new_session()
    fake_executor.block()
    started = time.monotonic()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "x = 1", "timeout_ms": 200})
    elapsed = time.monotonic() - started
    assert response.status == 202, response.text
    assert window_ms / 1000 - 0.1 <= elapsed < window_ms / 1000 + 1.0, elapsed
    assert background.submitted == []  # invoked inline, not by another invocation
    execution_id = response.json()["execution_id"]
    assert api.get(f"/v1/executions/{execution_id}").json()["status"] == "running"
    fake_executor.release.set()
    deadline = time.monotonic() + 30
    while api.get(f"/v1/executions/{execution_id}").json()["status"] == "running":
        assert time.monotonic() < deadline, "the run never finished"
        time.sleep(0.05)
    assert api.get(f"/v1/executions/{execution_id}").json()["status"] == "ok"
    assert "lease_id" not in _session_item(sid)


# --- item 2: Lambda's 6 MB after the proxy's second encoding ------------------------------------


def _quotes_executor(fake_executor: FakeExecutor, size: int) -> None:
    from lambdas.shared.models import ExecutorResponse

    def loud(invocation: Any) -> Any:
        text = '"' * size + "\n"
        return ExecutorResponse(
            result=ok_result(
                invocation,
                stdout=text,
                outputs=[{"output_type": "stream", "name": "stdout", "text": text}],
            )
        )

    fake_executor.behaviour = loud


def _proxy_bytes(text: str) -> int:
    return len(json.dumps({"statusCode": 200, "body": text}))


def test_a_result_over_the_response_budget_links_its_parts_and_the_notebook_keeps_all(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    import requests

    from lambdas.shared import limits

    size = 2 * 1024 * 1024
    _quotes_executor(fake_executor, size)
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "print(q)", **FAST})
    assert response.status == 200
    assert _proxy_bytes(response.text) <= limits.API_RESPONSE_BUDGET_BYTES
    result = response.json()
    assert result["stdout"].startswith('"' * 1000) and "stdout_url" in result["stdout"]
    assert requests.get(result["stdout_url"], timeout=30).text == '"' * size + "\n"
    outputs = requests.get(result["outputs_url"], timeout=30).json()
    assert outputs[0]["text"] == '"' * size + "\n"
    stored = api.get(f"/v1/executions/{result['execution_id']}")
    assert _proxy_bytes(stored.text) <= limits.API_RESPONSE_BUDGET_BYTES
    assert requests.get(stored.json()["stdout_url"], timeout=30).text == '"' * size + "\n"

    fake_executor.behaviour = None
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "tail", **FAST}).status == 200
    notebook = api.get(f"/v1/sessions/{sid}/notebook")
    assert notebook.status == 200
    assert _proxy_bytes(notebook.text) <= limits.API_RESPONSE_BUDGET_BYTES
    document = notebook.json()
    whole = requests.get(document["metadata"]["lci"]["notebook_url"], timeout=30).json()
    assert [cell["source"] for cell in whole["cells"]] == ["print(q)", "tail"]
    assert whole["cells"][0]["outputs"][0]["text"] == '"' * size + "\n"


# --- know what a real deployment does: GET /v1/diagnostics ----------------------------------------


def test_diagnostics_ask_the_executor_which_protections_hold_and_run_nothing(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    from tests.functional.executor_helpers import InProcessExecutor

    container.override(executor=InProcessExecutor())
    response = api.get("/v1/diagnostics")
    assert response.status == 200, response.text
    report = response.json()
    checks = report["executor"]["checks"]
    assert set(checks) == EXECUTOR_PROTECTION_CHECKS
    assert all(check["ok"] in (True, False, None) and check["detail"] for check in checks.values())
    assert report["api"]["sync_wait_ms"] == 25_000 and "botocore" in report["api"]
    assert api.get("/v1/usage").json()["executions"] == 0  # nothing ran, nothing counted
    anonymous = api.get("/v1/diagnostics", principal=None)
    assert (anonymous.status, anonymous.error_code) == (403, "FORBIDDEN")  # the one key rule


def test_diagnostics_say_why_the_executor_could_not_report(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    from lambdas.shared.executor_responses import failed_response

    fake_executor.behaviour = lambda invocation: failed_response(
        invocation, "the executor could not be invoked"
    )
    report = api.get("/v1/diagnostics").json()
    assert report["executor"] is None
    assert report["executor_error"] == "the executor could not be invoked"
    assert fake_executor.invocations[-1].diagnostics is True


def test_a_background_that_cannot_take_the_run_leaves_the_session_free(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    class Unavailable(_RemoteBackground):
        def submit(self, execution_id: str, run: Any, poll: Any) -> Any:
            raise RuntimeError("the asynchronous invoke failed")

    container.override(background=Unavailable())
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", "timeout_ms": 60_000})
    assert response.status == 500 and response.error_code == "INTERNAL"
    assert "lease_id" not in _session_item(sid)
    assert fake_executor.invocations == []
