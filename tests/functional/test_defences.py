"""Defences that only a behaviour test keeps in place (issue 17): each test here failed with
its defence switched off.

1. Idempotency: a retry while a session run is in flight gets 202 with the same execution and
   the code runs once; a replayed key after the quota is exhausted replays the stored result.
2. The handler's outermost catch-all answers a bare `INTERNAL`, never the exception text.
3. An executor invoke that boto3 refuses (its error names an ARN) reaches the user as a generic
   message; the detail goes to the log.
4. Output written straight to fds 1/2 is capped in the trusted parent: ~200 MB of it leaves
   the process hosting the engine a few MB larger at most.

Everything goes through public surfaces: the API handler, the executor's JSON-lines process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lambdas.api import container
from lambdas.api.settings import ApiSettings
from tests.conftest import REPO_ROOT, MotoServer
from tests.functional.conftest import BUCKET, TABLE, ApiClient, FakeExecutor, api_event

FAST = {"timeout_ms": 5000}  # fits the sync window: the executor is called inline
ARN = "arn:aws:sts::123456789012:assumed-role/lci-api-role/lci-api"
GENERIC_500 = {"error": {"code": "INTERNAL", "message": "internal error"}}


def _settings(**overrides: Any) -> ApiSettings:
    return ApiSettings(TABLE_NAME=TABLE, BUCKET_NAME=BUCKET, **overrides)


def _joined(thread: threading.Thread, seconds: float) -> None:
    thread.join(seconds)
    assert not thread.is_alive(), f"the request did not finish within {seconds} s"


# --- 1. idempotency -----------------------------------------------------------------------------


class GatedExecutor:
    """The real executor behind a gate: the test decides when an invocation may start, so a
    retry provably arrives while the first run is in flight."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.started = threading.Event()
        self.release = threading.Event()
        self.invocations = 0

    def invoke(self, invocation: Any) -> Any:
        self.invocations += 1
        self.started.set()
        assert self.release.wait(60), "the test never opened the gate"
        return self.inner.invoke(invocation)


@pytest.fixture
def gated_api(
    aws_env: None, catalog: Any, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ApiClient, GatedExecutor]]:
    """The API on the shared moto server with the real in-process executor behind a gate
    (the sandboxed worker moves snapshots through presigned URLs, so moto must speak HTTP)."""
    from lambdas.api.adapters.background import ThreadBackground
    from lambdas.executor import handler as executor_handler
    from lambdas.shared.storage import table_create_kwargs
    from tests.functional.executor_helpers import InProcessExecutor

    suffix = uuid.uuid4().hex[:8]
    table, bucket = f"{TABLE}-{suffix}", f"{BUCKET}-{suffix}"
    endpoint = moto_server.endpoint_url
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", endpoint)
    moto_server.client("dynamodb").create_table(**table_create_kwargs(table))
    moto_server.client("s3").create_bucket(Bucket=bucket)
    gate = GatedExecutor(InProcessExecutor())
    background = ThreadBackground(max_workers=4)
    settings = ApiSettings(
        TABLE_NAME=table,
        BUCKET_NAME=bucket,
        BACKGROUND_MODE="thread",
        S3_ENDPOINT_URL=endpoint,
        DYNAMODB_ENDPOINT_URL=endpoint,
    )
    container.reset()
    container.override(settings=settings, catalog=catalog, executor=gate, background=background)
    try:
        yield ApiClient(), gate
    finally:
        gate.release.set()
        background.shutdown()
        container.reset()
        executor_handler.shutdown()


@pytest.mark.slow
def test_a_retry_while_a_session_run_is_in_flight_gets_202_and_the_code_runs_once(
    gated_api: tuple[ApiClient, GatedExecutor],
) -> None:
    api, gate = gated_api
    sid = api.new_session()
    headers = {"Idempotency-Key": "session-retry-1"}
    body = {"code": "runs = globals().get('runs', 0) + 1\nruns", "timeout_ms": 20_000}
    first: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: first.update(
            response=api.post(f"/v1/sessions/{sid}/execute", body, headers=headers)
        )
    )
    runner.start()
    try:
        assert gate.started.wait(30), "the first run never reached the executor"
        retry = api.post(f"/v1/sessions/{sid}/execute", body, headers=headers)
    finally:
        gate.release.set()
    _joined(runner, 120)
    assert retry.status == 202, retry.text
    assert retry.json()["status"] == "running"
    done = first["response"]
    assert done.status == 200, done.text
    assert retry.json()["execution_id"] == done.json()["execution_id"]
    assert done.json()["result"] == {"text/plain": "1"}
    # The session's own state shows one run of the cell, not two.
    after = api.post(f"/v1/sessions/{sid}/execute", {"code": "runs", "timeout_ms": 20_000})
    assert after.status == 200, after.text
    assert after.json()["result"] == {"text/plain": "1"}
    assert after.json()["execution_count"] == 2
    assert gate.invocations == 2


def test_a_replayed_key_after_the_quota_is_exhausted_replays_instead_of_429(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    container.override(settings=_settings(QUOTA_EXECUTIONS=2))
    sid = api.new_session()
    session_run = {"code": "x = 1", **FAST}
    one_shot = {"code": "1", **FAST}
    first = api.post(f"/v1/sessions/{sid}/execute", session_run, headers={"Idempotency-Key": "a"})
    second = api.post("/v1/execute", one_shot, headers={"Idempotency-Key": "b"})
    assert first.status == second.status == 200
    assert api.post("/v1/execute", one_shot).status == 429  # the quota is used up

    replay_first = api.post(
        f"/v1/sessions/{sid}/execute", session_run, headers={"Idempotency-Key": "a"}
    )
    replay_second = api.post("/v1/execute", one_shot, headers={"Idempotency-Key": "b"})
    assert replay_first.status == 200, replay_first.text
    assert replay_first.json() == first.json()
    assert replay_second.status == 200, replay_second.text
    assert replay_second.json() == second.json()
    assert len(fake_executor.invocations) == 2


# --- 2. the handler's outermost catch-all ---------------------------------------------------------


class _Exploding(dict):  # type: ignore[type-arg]
    """A (non-empty, so truthy) mapping that raises, with an ARN in the message, when read."""

    def _boom(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"AccessDenied: User: {ARN} is not authorized to perform this")

    get = __getitem__ = __contains__ = __iter__ = items = keys = values = _boom


def _event_with(**fields: Any) -> dict[str, Any]:
    event = api_event("POST", "/v1/execute", body={"code": "1"})
    event.update(fields)
    return event


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(["not", "an", "event"], id="not-a-mapping"),
        pytest.param(
            _event_with(requestContext=_Exploding(identity={})), id="request-context-raises"
        ),
        pytest.param(_event_with(path=None, httpMethod=None), id="no-path-no-method"),
    ],
)
def test_a_failure_below_routing_is_a_bare_internal_error(wired: None, event: Any) -> None:
    from lambdas.api.handler import handler

    raw = handler(event, None)
    assert raw["statusCode"] == 500
    assert json.loads(raw["body"]) == GENERIC_500


@pytest.mark.attack(
    "error messages",
    "a service that raises with internals in its message",
    "a bare 500 `INTERNAL`; the detail only in the log",
)
def test_a_failing_service_is_a_bare_internal_error(
    wired: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable() -> Any:
        raise RuntimeError(f"User: {ARN} is not authorized to perform: dynamodb:GetItem")

    monkeypatch.setattr(container, "services", unavailable)
    from lambdas.api.handler import handler

    raw = handler(api_event("POST", "/v1/execute", body={"code": "1"}), None)
    assert raw["statusCode"] == 500
    assert json.loads(raw["body"]) == GENERIC_500


# --- 3. executor invoke failures ----------------------------------------------------------------


@pytest.fixture
def denied_lambda(aws: None, catalog: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The API with its real boto3 Lambda client, every invoke answered by botocore's Stubber
    with the AccessDeniedException AWS gives a role that may not invoke the function."""
    import boto3
    from botocore.stub import Stubber

    from lambdas.api.adapters.background import ThreadBackground

    stubs: list[Any] = []
    real_client = boto3.client

    def client(service: str, *args: Any, **kwargs: Any) -> Any:
        made = real_client(service, *args, **kwargs)  # type: ignore[call-overload]
        if service == "lambda":
            stub = Stubber(made)
            for _ in range(4):
                stub.add_client_error(
                    "invoke",
                    "AccessDeniedException",
                    f"User: {ARN} is not authorized to perform: lambda:InvokeFunction on "
                    "resource: arn:aws:lambda:us-east-1:123456789012:function:lci-executor",
                    http_status_code=403,
                )
            stub.activate()
            stubs.append(stub)
        return made

    monkeypatch.setattr(boto3, "client", client)
    background = ThreadBackground(max_workers=4)
    container.reset()
    container.override(
        settings=_settings(EXECUTOR_MODE="lambda", EXECUTOR_FUNCTION_NAME="lci-executor"),
        background=background,
        catalog=catalog,
    )
    try:
        yield stubs
    finally:
        background.shutdown()
        container.reset()


@pytest.mark.attack(
    "error messages",
    "an executor invoke refused by IAM (its error names an ARN)",
    "a generic error for the user; the ARN only in the log",
)
def test_an_executor_invoke_refused_by_iam_reaches_no_one_with_its_arn(
    denied_lambda: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    api = ApiClient()
    sid = api.new_session()
    with caplog.at_level(logging.ERROR):
        in_session = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", **FAST})
        one_shot = api.post("/v1/execute", {"code": "1", **FAST})
    assert len(denied_lambda) == 1 and len(denied_lambda[0]._queue) == 2  # two invokes stubbed
    for response in (in_session, one_shot):
        assert response.status == 200, response.text
        result = response.json()
        assert result["status"] == "error" and result["error"]["name"] == "ExecutorError"
        assert result["error"]["value"] == "the executor could not be invoked"
        api.get(f"/v1/executions/{result['execution_id']}")
    api.get(f"/v1/sessions/{sid}")
    api.get(f"/v1/sessions/{sid}/notebook")
    assert api.responses and all("arn:" not in r.text for r in api.responses)
    # The operator still sees what happened.
    assert "AccessDeniedException" in caplog.text and ARN in caplog.text


# --- 4. output straight to fds 1/2 --------------------------------------------------------------

# Written with os.write, past print() and IPython: only the trusted parent's per-fd cap
# (lambdas/executor/host/channel.py reads the worker's fds) stands between this and its memory.
FD_FLOOD = (
    "import os\n"
    "chunk = b'F' * (1 << 20)\n"
    "for _ in range(100):\n"
    "    os.write(1, chunk)\n"
    "    os.write(2, chunk)\n"
    "'flooded'"
)


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1])


class EngineProcess:
    """`python -m lambdas.executor.serve`: a process that hosts only the executor engine."""

    def __init__(self, root: str) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO_ROOT),
            "LCI_TMP_ROOT": root,
            "OPENBLAS_NUM_THREADS": "1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lambdas.executor.serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=root,
            text=True,
        )
        self._answers: list[str] = []
        self._answered = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._answered:
                self._answers.append(line)
                self._answered.notify_all()

    def request(self, message: dict[str, Any], within_s: float) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        with self._answered:
            answered = self._answered.wait_for(lambda: self._answers, timeout=within_s)
            assert answered, f"the engine process did not answer within {within_s} s"
            return json.loads(self._answers.pop(0))

    def close(self) -> None:
        try:
            self.request({"op": "shutdown"}, within_s=30)
            self.process.wait(timeout=30)
        except Exception:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.attack(
    "output",
    "~200 MB written straight to fds 1 and 2",
    "capped in the trusted parent, which grows a few MB at most",
)
def test_output_flooding_fds_1_and_2_is_capped_in_the_trusted_parent(tmp_path: Any) -> None:
    host = EngineProcess(str(tmp_path))
    try:
        event = {"execution_id": "flood-0", "tenant_id": "s-flood", "session_id": "s-flood"}
        warm = host.request(
            {"op": "invoke", "event": {**event, "code": "'ready'", "timeout_ms": 60_000}}, 120
        )
        assert warm["result"]["status"] == "ok", warm
        parent = host.request({"op": "info"}, 30)["pid"]
        before = _peak_rss_kb(parent)
        started = time.monotonic()
        flood = {**event, "execution_id": "flood-1", "code": FD_FLOOD, "timeout_ms": 60_000}
        result = host.request({"op": "invoke", "event": flood}, 120)["result"]
        grown_mb = (_peak_rss_kb(parent) - before) / 1024
    finally:
        host.close()
    assert result["status"] == "ok", result.get("error")
    assert result["result"] == {"text/plain": "'flooded'"}
    assert result["stdout_truncated"] is True and result["stderr_truncated"] is True
    assert len(result["stdout"].encode()) <= 1024 * 1024
    assert len(result["stderr"].encode()) <= 1024 * 1024
    # 200 MB went through the pipes; the parent keeps at most the capped streams.
    assert grown_mb < 30, f"the parent's peak RSS grew by {grown_mb:.0f} MB"
    assert time.monotonic() - started < 60
