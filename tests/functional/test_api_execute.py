"""Executions through the API with a fake executor port (moto mock_aws): limits, packages,
the invocation the executor receives, the session lease and state commit, the sync window,
idempotency, one-shot runs, executor failures, quotas and large results."""

from __future__ import annotations

import base64
import threading
from typing import Any

import boto3
import pytest
import requests

from lambdas.api import container
from lambdas.api.errors import RateLimited
from lambdas.api.settings import ApiSettings
from lambdas.shared.models import ExecutorResponse, StateReport
from tests.functional.conftest import (
    BUCKET,
    TABLE,
    ApiClient,
    Clock,
    FakeExecutor,
    ok_result,
    take_over_lease_during_next_run,
    wait_finished,
)

FAST = {"timeout_ms": 2000}  # fits the sync window: the executor is called inline


def _settings(**overrides: Any) -> ApiSettings:
    return ApiSettings(TABLE_NAME=TABLE, BUCKET_NAME=BUCKET, **overrides)


def _session_item(session_id: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb").Table(TABLE)
    return table.get_item(Key={"pk": f"SESSION#{session_id}", "sk": "META"})["Item"]


# --- request validation ------------------------------------------------------------------------


class RemoteBackgroundThatNeverRuns:
    """A background port whose job runs elsewhere (like LambdaBackground) and never reports."""

    runs_remotely = True

    class _Handle:
        def wait(self, timeout_s: float) -> None:
            return None

    def submit(self, execution_id: str, run: Any, poll: Any) -> Any:
        return self._Handle()


def test_code_over_the_limit_is_413(api: ApiClient, fake_executor: FakeExecutor) -> None:
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "x" * (10 * 1024 + 1)})
    assert response.status == 413 and response.error_code == "PAYLOAD_TOO_LARGE"
    one_shot = api.post("/v1/execute", {"code": "é" * 6000})  # 12000 bytes in UTF-8
    assert one_shot.status == 413
    assert fake_executor.invocations == []


@pytest.mark.parametrize(
    "body",
    [
        {"code": "1", "timeout_ms": 300_001},
        {"code": "1", "timeout_ms": 10},
        {"code": "1", "env": {"1BAD": "x"}},
        {"code": "1", "env": {"OK": "a\x00b"}},
        {"code": "1", "unknown": True},
        {"timeout_ms": 1000},
    ],
)
def test_invalid_execute_request_is_400(
    api: ApiClient, fake_executor: FakeExecutor, body: dict[str, Any]
) -> None:
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/execute", body)
    assert response.status == 400 and response.error_code == "INVALID_REQUEST"
    assert fake_executor.invocations == []
    assert _session_item(sid).get("lease_id") is None


def test_packages_outside_whitelist_are_named(api: ApiClient, fake_executor: FakeExecutor) -> None:
    sid = api.new_session()
    response = api.post(
        f"/v1/sessions/{sid}/execute",
        {
            "code": "1",
            "packages": ["numpy", "leftpad"],
            "requirements": "pandas<2  # too old\nscikit-learn\nhttps://evil.example/x.whl\n",
        },
    )
    assert response.status == 400 and response.error_code == "PACKAGE_NOT_ALLOWED"
    offending = response.json()["error"]["details"]["packages"]
    assert "leftpad" in offending and "pandas" in offending
    assert "numpy" not in offending and "scikit-learn" not in offending
    assert len(offending) == 3
    assert fake_executor.invocations == []


def test_whitelisted_packages_reach_the_executor_pinned(
    api: ApiClient, fake_executor: FakeExecutor, catalog: Any
) -> None:
    sid = api.new_session()
    response = api.post(
        f"/v1/sessions/{sid}/execute",
        {"code": "1", "packages": ["numpy>=2"], "requirements": "# deps\nscikit-learn\n", **FAST},
    )
    assert response.status == 200, response.text
    sent = fake_executor.invocations[-1].packages
    numpy, sklearn = catalog.get("numpy"), catalog.get("scikit-learn")
    assert sorted(sent) == sorted([f"numpy=={numpy.version}", f"scikit-learn=={sklearn.version}"])


# --- the invocation and the commit --------------------------------------------------------------


def test_session_runs_commit_state_and_count(api: ApiClient, fake_executor: FakeExecutor) -> None:
    sid = api.new_session()
    first = api.post(f"/v1/sessions/{sid}/execute", {"code": "x = 1", "env": {"A": "1"}, **FAST})
    assert first.status == 200
    result = first.json()
    assert result["status"] == "ok" and result["success"] is True
    assert result["execution_count"] == 1 and result["session_id"] == sid
    assert result["stdout"] == "ran: x = 1\n"

    invocation = fake_executor.invocations[0]
    assert invocation.tenant_id == sid and invocation.session_id == sid
    assert invocation.env == {"A": "1"}
    assert invocation.state.version == 0 and invocation.state.download_url is None
    assert invocation.state.upload_key == f"sessions/{sid}/state/1.pkl"
    assert invocation.files.upload.key_prefix == f"sessions/{sid}/files/"

    second = api.post(f"/v1/sessions/{sid}/execute", {"code": "x += 1", **FAST})
    assert second.json()["execution_count"] == 2
    invocation = fake_executor.invocations[1]
    assert invocation.execution_count == 2
    assert invocation.state.version == 1
    assert f"sessions/{sid}/state/1.pkl" in invocation.state.download_url
    assert invocation.state.upload_key == f"sessions/{sid}/state/2.pkl"
    assert int(_session_item(sid)["state_version"]) == 2


def test_run_without_snapshot_keeps_the_state_version(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    api.post(f"/v1/sessions/{sid}/execute", {"code": "a", **FAST})
    fake_executor.upload_state = False  # e.g. the worker timed out: nothing new to commit
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "b", **FAST})
    assert response.json()["execution_count"] == 2  # failed cells count too
    item = _session_item(sid)
    assert int(item["state_version"]) == 1 and int(item["execution_count"]) == 2
    assert "lease_id" not in item


def test_an_unchanged_state_report_keeps_the_version_and_the_variables(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    """Issue 16: the worker skipped the upload because nothing changed; the run still counts."""
    sid = api.new_session()
    api.post(f"/v1/sessions/{sid}/execute", {"code": "x = 1", **FAST})
    fake_executor.behaviour = lambda invocation: ExecutorResponse(
        result=ok_result(invocation, session_id=invocation.session_id, duration_ms=1),
        state=StateReport(unchanged=True, size=10, variables=[]),
    )
    for count in (2, 3):
        response = api.post(f"/v1/sessions/{sid}/execute", {"code": "print(x)", **FAST})
        assert response.json()["execution_count"] == count
        # The next run is built from the view this process kept: the same version and key.
        invocation = fake_executor.invocations[-1]
        assert invocation.state.version == 1
        assert invocation.state.upload_key == f"sessions/{sid}/state/2.pkl"
    item = _session_item(sid)
    assert int(item["state_version"]) == 1 and int(item["execution_count"]) == 3
    assert "lease_id" not in item
    detail = api.get(f"/v1/sessions/{sid}").json()
    assert detail["execution_count"] == 3
    assert detail["variables"] == [{"name": "x", "type": "int"}]


def test_session_files_are_passed_to_the_executor(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    api.post(f"/v1/sessions/{sid}/execute", {"code": "before any upload", **FAST})
    assert fake_executor.invocations[0].files.files == []
    form = api.post(f"/v1/sessions/{sid}/files", {"path": "data/in.csv"}).json()["upload"]
    uploaded = requests.post(
        form["url"], data=form["fields"], files={"file": b"a,b\n1,2\n"}, timeout=30
    )
    assert uploaded.status_code in (200, 201, 204)
    fake_executor.invocations.clear()
    api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST})
    (ref,) = fake_executor.invocations[0].files.files
    assert ref.path == "data/in.csv" and ref.size == 8 and ref.etag
    assert f"sessions/{sid}/files/data/in.csv" in ref.download_url


def test_output_files_get_download_urls(api: ApiClient, fake_executor: FakeExecutor) -> None:
    sid = api.new_session()
    fake_executor.output_files = [
        {"path": "out/plot.png", "size": 3, "content_type": "image/png"},
        {"path": "../escape.txt", "size": 1},
    ]
    result = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST}).json()
    (file,) = result["files"]
    assert file["path"] == "out/plot.png"
    assert f"sessions/{sid}/files/out/plot.png" in file["download_url"]
    assert any("invalid path" in w for w in result["warnings"])


def test_concurrent_executes_one_wins_one_is_busy(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    fake_executor.block()
    first: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: first.update(
            response=api.post(f"/v1/sessions/{sid}/execute", {"code": "slow", **FAST})
        )
    )
    runner.start()
    assert fake_executor.started.wait(30)
    assert api.get(f"/v1/sessions/{sid}").json()["status"] == "busy"
    second = api.post(f"/v1/sessions/{sid}/execute", {"code": "fast", **FAST})
    assert second.status == 409 and second.error_code == "SESSION_BUSY"
    fake_executor.release.set()
    runner.join(60)
    assert first["response"].status == 200
    assert len(fake_executor.invocations) == 1
    item = _session_item(sid)
    assert int(item["state_version"]) == 1 and int(item["execution_count"]) == 1
    assert api.get(f"/v1/sessions/{sid}").json()["status"] == "idle"


def test_expired_lease_does_not_wedge_the_session(
    api: ApiClient, fake_executor: FakeExecutor, clock: Clock
) -> None:
    sid = api.new_session()
    # An API call that crashed mid-run leaves its lease behind.
    boto3.resource("dynamodb").Table(TABLE).update_item(
        Key={"pk": f"SESSION#{sid}", "sk": "META"},
        UpdateExpression="SET lease_id = :l, lease_expires_at = :e",
        ExpressionAttributeValues={":l": "crashed", ":e": int(clock.now) + 40},
    )
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST}).status == 409
    clock.advance(41)
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST})
    assert response.status == 200 and response.json()["execution_count"] == 1


# --- sync window and background ------------------------------------------------------------------


def test_wait_false_returns_202_and_the_result_later(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    fake_executor.block()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "later", "wait": False})
    assert response.status == 202
    accepted = response.json()
    assert accepted["status"] == "running" and accepted["session_id"] == sid
    running = api.get(f"/v1/executions/{accepted['execution_id']}")
    assert running.status == 200 and running.json()["status"] == "running"
    fake_executor.release.set()
    finished = wait_finished(api, accepted["execution_id"])
    assert finished["status"] == "ok" and finished["stdout"] == "ran: later\n"
    assert finished["execution_count"] == 1


def test_run_longer_than_the_sync_window_returns_202(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    container.override(settings=_settings(SYNC_WAIT_MS=50))
    sid = api.new_session()
    fake_executor.block()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "long", "timeout_ms": 60_000})
    assert response.status == 202
    execution_id = response.json()["execution_id"]
    fake_executor.release.set()
    assert wait_finished(api, execution_id)["status"] == "ok"


def test_background_run_that_finishes_in_the_window_returns_200(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()  # default timeout 30 s does not fit the 25 s window: background
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "quick"})
    assert response.status == 200 and response.json()["stdout"] == "ran: quick\n"


def test_stored_job_runs_from_the_background_event(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    """What LambdaBackground's asynchronous self-invocation does, driven through the handler."""

    container.override(background=RemoteBackgroundThatNeverRuns())
    sid = api.new_session()
    accepted = api.post(f"/v1/sessions/{sid}/execute", {"code": "bg", "wait": False}).json()
    assert fake_executor.invocations == []
    from lambdas.api.handler import handler

    out = handler({"lci_background": {"execution_id": accepted["execution_id"]}}, None)
    assert out["ran"] is True
    again = handler({"lci_background": {"execution_id": accepted["execution_id"]}}, None)
    assert again["ran"] is False  # a duplicate async delivery does not run it twice
    assert len(fake_executor.invocations) == 1
    assert wait_finished(api, accepted["execution_id"])["stdout"] == "ran: bg\n"


# --- idempotency ------------------------------------------------------------------------------


def test_idempotency_key_replays_without_running(
    api: ApiClient, other_api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    headers = {"Idempotency-Key": "req-1"}
    body = {"code": "x = 1", **FAST}
    first = api.post(f"/v1/sessions/{sid}/execute", body, headers=headers)
    repeat = api.post(f"/v1/sessions/{sid}/execute", body, headers={"idempotency-key": "req-1"})
    assert first.status == repeat.status == 200
    assert repeat.json() == first.json()
    assert len(fake_executor.invocations) == 1

    reused = api.post(f"/v1/sessions/{sid}/execute", {"code": "other"}, headers=headers)
    assert reused.status == 400 and reused.error_code == "INVALID_REQUEST"

    one_shot = {"code": "1", **FAST}
    a = api.post("/v1/execute", one_shot, headers={"Idempotency-Key": "k2"})
    b = api.post("/v1/execute", one_shot, headers={"Idempotency-Key": "k2"})
    assert a.json()["execution_id"] == b.json()["execution_id"]
    # Keys are scoped by principal: the same key from another principal is a new run.
    c = other_api.post("/v1/execute", one_shot, headers={"Idempotency-Key": "k2"})
    assert c.status == 200 and c.json()["execution_id"] != a.json()["execution_id"]
    assert len(fake_executor.invocations) == 3


# --- one-shot runs ------------------------------------------------------------------------------


def test_one_shot_run_with_inline_files(api: ApiClient, fake_executor: FakeExecutor) -> None:
    fake_executor.output_files = [{"path": "result.txt", "size": 2}]
    content = base64.b64encode(b"hello").decode()
    response = api.post(
        "/v1/execute",
        {"code": "open('in.txt').read()", "files": [{"path": "in.txt", "content_base64": content}]},
    )
    assert response.status == 200
    result = response.json()
    assert result["session_id"] is None and result["execution_count"] is None
    invocation = fake_executor.invocations[0]
    assert invocation.tenant_id == "key-alice" and invocation.session_id is None
    assert invocation.state is None
    assert [(f.path, f.content_base64) for f in invocation.inline_files] == [("in.txt", content)]
    prefix = f"executions/{result['execution_id']}/files/"
    assert invocation.files.upload.key_prefix == prefix
    assert prefix + "result.txt" in result["files"][0]["download_url"]


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        ([{"path": "../x", "content_base64": ""}], 400, "INVALID_PATH"),
        ([{"path": "a.txt", "content_base64": "not base64!"}], 400, "INVALID_REQUEST"),
        (
            [
                {
                    "path": "big.bin",
                    "content_base64": base64.b64encode(b"0" * (4 * 2**20 + 1)).decode(),
                }
            ],
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ],
)
def test_bad_inline_files_are_rejected(
    api: ApiClient, fake_executor: FakeExecutor, files: list[Any], status: int, code: str
) -> None:
    response = api.post("/v1/execute", {"code": "1", "files": files})
    assert response.status == status and response.error_code == code
    assert fake_executor.invocations == []


# --- failures -----------------------------------------------------------------------------------


def test_executor_crash_is_an_error_result_and_commits_nothing(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    api.post(f"/v1/sessions/{sid}/execute", {"code": "ok", **FAST})

    def crash(invocation: Any) -> Any:
        raise RuntimeError("environment died")

    fake_executor.behaviour = crash
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "boom", **FAST})
    assert response.status == 200
    result = response.json()
    assert result["status"] == "error" and result["success"] is False
    assert result["execution_count"] is None
    assert "environment died" not in response.text  # internal detail stays in the log
    item = _session_item(sid)
    assert int(item["state_version"]) == 1 and int(item["execution_count"]) == 1
    assert "lease_id" not in item
    assert api.get(f"/v1/executions/{result['execution_id']}").json()["status"] == "error"


def test_throttled_executor_is_429_and_leaves_nothing(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()

    def throttled(invocation: Any) -> Any:
        raise RateLimited("the executor is at its concurrency limit; retry shortly")

    fake_executor.behaviour = throttled
    headers = {"Idempotency-Key": "retry-me"}
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST}, headers=headers)
    assert response.status == 429 and response.error_code == "RATE_LIMITED"
    assert int(response.headers["Retry-After"]) >= 1
    assert "lease_id" not in _session_item(sid)
    fake_executor.behaviour = None
    retry = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST}, headers=headers)
    assert retry.status == 200 and retry.json()["execution_count"] == 1


def test_quota_exceeded_is_429_before_running(api: ApiClient, fake_executor: FakeExecutor) -> None:
    container.override(settings=_settings(QUOTA_EXECUTIONS=2))
    sid = api.new_session()
    for _ in range(2):
        assert api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST}).status == 200
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST})
    assert response.status == 429 and response.error_code == "QUOTA_EXCEEDED"
    assert api.post("/v1/execute", {"code": "1"}).status == 429
    assert len(fake_executor.invocations) == 2
    assert api.get("/v1/usage").json()["quota"]["executions"] == 2


def test_large_results_are_stored_and_served(api: ApiClient, fake_executor: FakeExecutor) -> None:
    big = "y" * (600 * 1024)

    def large(invocation: Any) -> Any:
        return ExecutorResponse(
            result=ok_result(
                invocation,
                stdout=big,
                outputs=[{"output_type": "stream", "name": "stdout", "text": big}],
            )
        )

    fake_executor.behaviour = large
    sid = api.new_session()
    result = api.post(f"/v1/sessions/{sid}/execute", {"code": "print(big)", **FAST}).json()
    stored = api.get(f"/v1/executions/{result['execution_id']}")
    assert stored.status == 200 and stored.json()["stdout"] == big
    notebook = api.get(f"/v1/sessions/{sid}/notebook").json()
    assert notebook["cells"][0]["outputs"][0]["text"] == big


def test_executions_are_private_to_their_principal(api: ApiClient, other_api: ApiClient) -> None:
    sid = api.new_session()
    execution_id = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST}).json()[
        "execution_id"
    ]
    assert api.get(f"/v1/executions/{execution_id}").status == 200
    foreign = other_api.get(f"/v1/executions/{execution_id}")
    assert foreign.status == 404 and foreign.error_code == "EXECUTION_NOT_FOUND"
    missing = api.get("/v1/executions/does-not-exist")
    assert missing.status == 404 and missing.error_code == "EXECUTION_NOT_FOUND"


def test_a_run_that_lost_its_lease_commits_nothing(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    take_over_lease_during_next_run(fake_executor, sid)
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "late", **FAST})
    assert response.status == 200
    result = response.json()
    assert any("lease expired" in w for w in result["warnings"])
    item = _session_item(sid)
    assert int(item["state_version"]) == 0 and int(item["execution_count"]) == 0
    assert item["lease_id"] == "someone-else"
    assert api.get(f"/v1/sessions/{sid}/notebook").json()["cells"] == []
    stored = api.get(f"/v1/executions/{result['execution_id']}").json()
    assert stored["warnings"] == result["warnings"]
    assert api.get("/v1/usage").json()["executions"] == 1


def test_retry_during_the_run_gets_202_with_the_same_execution(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    fake_executor.block()
    headers = {"Idempotency-Key": "slow-1"}
    body = {"code": "slow", **FAST}
    first: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: first.update(response=api.post("/v1/execute", body, headers=headers))
    )
    runner.start()
    assert fake_executor.started.wait(30)
    retry = api.post("/v1/execute", body, headers=headers)
    assert retry.status == 202 and retry.json()["status"] == "running"
    fake_executor.release.set()
    runner.join(60)
    assert first["response"].json()["execution_id"] == retry.json()["execution_id"]
    assert len(fake_executor.invocations) == 1


def test_a_run_lost_with_its_process_is_reported_as_an_error(
    api: ApiClient, fake_executor: FakeExecutor, clock: Clock
) -> None:
    # the process running it died: nothing ever finishes the record
    container.override(background=RemoteBackgroundThatNeverRuns())
    sid = api.new_session()
    accepted = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", "wait": False}).json()
    path = f"/v1/executions/{accepted['execution_id']}"
    assert api.get(path).json()["status"] == "running"
    clock.advance(30 + 30 + 300 + 1)  # timeout + lease grace + LOST_RUN_AFTER_SECONDS
    lost = api.get(path).json()
    assert lost["status"] == "error" and lost["error"]["name"] == "ExecutionLost"
    from lambdas.api.handler import handler

    late = handler({"lci_background": {"execution_id": accepted["execution_id"]}}, None)
    assert late["ran"] is False and fake_executor.invocations == []
    # The session is usable again: its lease expired with the lost run.
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "2", **FAST}).status == 200


def test_concurrent_sessions_each_commit_all_their_runs(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    # One principal per session: moto's in-process UpdateItem is not atomic across threads
    # (DynamoDB's is), so a shared usage counter could lose increments here, not in production.
    clients = [ApiClient(principal=f"key-{i}") for i in range(6)]
    sessions = [client.new_session() for client in clients]
    failures: list[str] = []

    def drive(client: ApiClient, sid: str) -> None:
        for n in range(1, 4):
            response = client.post(f"/v1/sessions/{sid}/execute", {"code": f"step {n}"})
            if response.status != 200 or response.json()["execution_count"] != n:
                failures.append(f"{sid} run {n}: {response.status} {response.text[:200]}")

    threads = [
        threading.Thread(target=drive, args=(client, sid))
        for client, sid in zip(clients, sessions, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    for client, sid in zip(clients, sessions, strict=True):
        item = _session_item(sid)
        assert int(item["state_version"]) == 3 and int(item["execution_count"]) == 3
        assert client.get("/v1/usage").json()["executions"] == 3
