"""API fixtures: moto `mock_aws` with the real table/bucket definitions, a fake executor port,
and a client that sends API Gateway REST proxy (v1) events, built by the local stack's emulation
(`local/events.py`), to the real handler.

Every response that passes through `ApiClient` is checked for leaks: no server stack trace, no
ARN, and no bucket name outside presigned URLs/forms (SPEC §3 "never a stack trace, an AWS ARN
or a bucket name").
"""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest

TABLE = "lci-test-table"
BUCKET = "lci-test-bucket-secretname"
PRINCIPAL = "key-alice"
OTHER_PRINCIPAL = "key-bob"


def api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    raw_body: str | None = None,
    principal: str | None = PRINCIPAL,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST API proxy event, built by the local stack's emulation of API Gateway
    (`local/events.py`) for a caller whose key API Gateway mapped to `principal`."""
    from local.events import HttpRequest, to_proxy_event

    all_headers = {
        "Accept": "application/json",
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "lci-tests/1.0",
        "X-Forwarded-Proto": "https",
    }
    if principal is not None:
        all_headers["x-api-key"] = f"secret-of-{principal}"
    if body is not None or raw_body is not None:
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    text = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
    request = HttpRequest(
        method=method,
        target=quote(path),
        headers=list(all_headers.items()),
        body=(text or "").encode(),
        source_ip="203.0.113.7",
    )
    return to_proxy_event(request, principal)


_URL_KEYS = {
    "url",
    "download_url",
    "fields",
    "upload",
    "stdout_url",
    "stderr_url",
    "outputs_url",
    "notebook_url",
}
# User-visible run output may legitimately contain tracebacks of the user's own code.
_USER_CONTENT_KEYS = {"traceback", "outputs", "stderr", "stdout", "cells", "error"}


def _strings_outside(value: Any, skip: set[str], key: str | None = None) -> Iterator[str]:
    if key in skip:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings_outside(v, skip, k)
    elif isinstance(value, list):
        for v in value:
            yield from _strings_outside(v, skip, key)
    elif isinstance(value, str):
        yield value


def assert_no_leaks(status: int, text: str) -> None:
    lowered = text.lower()
    assert "arn:aws" not in lowered and '"arn:' not in lowered, text[:500]
    assert 'file "/' not in lowered or status < 400, text[:500]
    try:
        data = json.loads(text) if text else None
    except ValueError:
        raise AssertionError(f"response body is not JSON: {text[:200]!r}") from None
    if status >= 400:
        assert BUCKET not in text, text[:500]
        assert "traceback" not in lowered, text[:500]
        assert isinstance(data, dict) and set(data) == {"error"}, text[:500]
        assert {"code", "message"} <= set(data["error"]), text[:500]
        return
    for string in _strings_outside(data, _URL_KEYS | _USER_CONTENT_KEYS):
        assert BUCKET not in string, string[:300]
        assert "Traceback (most recent call last)" not in string, string[:300]
        assert "lambdas/api" not in string, string[:300]


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None

    @property
    def error_code(self) -> str | None:
        data = self.json()
        return data.get("error", {}).get("code") if isinstance(data, dict) else None


@functools.cache
def _threaded_api_handler() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The local stack's entry to the real API handler: tests send requests from many threads."""
    from local.resolvers import threaded_api_handler

    return threaded_api_handler()


@dataclass
class ApiClient:
    principal: str | None = PRINCIPAL
    responses: list[ApiResponse] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: str | None = None,
        principal: str | None = ...,  # type: ignore[assignment]
        headers: dict[str, str] | None = None,
    ) -> ApiResponse:
        who = self.principal if principal is ... else principal
        event = api_event(
            method, path, body=body, raw_body=raw_body, principal=who, headers=headers
        )
        raw = _threaded_api_handler()(event, None)
        assert set(raw) >= {"statusCode", "body"}, raw
        text = raw["body"] or ""
        if raw.get("isBase64Encoded"):
            text = base64.b64decode(text).decode()
        headers = dict(raw.get("headers") or {})
        # Powertools' REST resolver answers with multiValueHeaders, as API Gateway reads them.
        headers.update({k: v[-1] for k, v in (raw.get("multiValueHeaders") or {}).items() if v})
        response = ApiResponse(int(raw["statusCode"]), headers, text)
        assert_no_leaks(response.status, text)
        self.responses.append(response)
        return response

    def get(self, path: str, **kwargs: Any) -> ApiResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> ApiResponse:
        return self.request("POST", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> ApiResponse:
        return self.request("DELETE", path, **kwargs)

    def new_session(self, **body: Any) -> str:
        response = self.post("/v1/sessions", body or None)
        assert response.status == 201, response.text
        return str(response.json()["session_id"])


# --- fake executor ---------------------------------------------------------------------------


class FakeExecutor:
    """Stands in for the executor: 'runs' a cell by echoing it, reports a snapshot upload, and
    can block on an Event (to hold a session lease) or report chosen output files."""

    def __init__(self) -> None:
        self.invocations: list[Any] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.upload_state = True
        self.output_files: list[dict[str, Any]] = []
        self.variables: list[dict[str, str]] = [{"name": "x", "type": "int"}]
        self.behaviour: Callable[[Any], Any] | None = None
        self._lock = threading.Lock()

    def block(self) -> None:
        self.release.clear()

    def invoke(self, invocation: Any) -> Any:
        from lambdas.shared.models import ExecutorResponse, OutputFile, StateReport

        with self._lock:
            self.invocations.append(invocation)
        self.started.set()
        assert self.release.wait(60), "test never released the fake executor"
        if self.behaviour is not None:
            return self.behaviour(invocation)
        stdout = f"ran: {invocation.code}\n"
        result = ok_result(
            invocation,
            session_id=invocation.session_id,
            stdout=stdout,
            outputs=[{"output_type": "stream", "name": "stdout", "text": stdout}],
            files=[OutputFile(**f) for f in self.output_files],
            duration_ms=1,
        )
        uploaded = self.upload_state and invocation.state is not None
        return ExecutorResponse(
            result=result,
            state=StateReport(
                uploaded=uploaded, size=10 if uploaded else 0, variables=self.variables
            ),
        )


def ok_result(invocation: Any, **fields: Any) -> Any:
    """A successful `ExecutionResult` answering `invocation`, with `fields` (stdout, outputs…)."""
    from lambdas.shared.models import ExecutionResult, ExecutionStatus

    return ExecutionResult(
        execution_id=invocation.execution_id,
        status=ExecutionStatus.OK,
        success=True,
        execution_count=invocation.execution_count,
        **fields,
    )


def take_over_lease_during_next_run(fake_executor: FakeExecutor, session_id: str) -> None:
    """While the next run is in flight its lease expires and another run takes the session."""
    import boto3

    table = boto3.resource("dynamodb").Table(TABLE)
    normal = fake_executor.behaviour

    def lease_taken_over(invocation: Any) -> Any:
        table.update_item(
            Key={"pk": f"SESSION#{session_id}", "sk": "META"},
            UpdateExpression="SET lease_id = :other",
            ExpressionAttributeValues={":other": "someone-else"},
        )
        fake_executor.behaviour = normal
        return fake_executor.invoke(invocation)

    fake_executor.behaviour = lease_taken_over


def wait_finished(api: ApiClient, execution_id: str) -> dict[str, Any]:
    """The execution's record once it is no longer running (a minute at the most)."""
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = api.get(f"/v1/executions/{execution_id}").json()
        if body["status"] != "running":
            return dict(body)
        time.sleep(0.05)
    raise AssertionError("execution never finished")


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "TABLE_NAME": TABLE,
        "BUCKET_NAME": BUCKET,
        "EXECUTOR_MODE": "local",
        "BACKGROUND_MODE": "thread",
        "POWERTOOLS_METRICS_NAMESPACE": "LciTests",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "OPENBLAS_NUM_THREADS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("S3_ENDPOINT_URL", "DYNAMODB_ENDPOINT_URL", "AWS_LAMBDA_FUNCTION_NAME"):
        monkeypatch.delenv(name, raising=False)
    from lambdas.api.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    import boto3
    from moto import mock_aws

    from lambdas.shared.storage import BUCKET_CORS_RULES, table_create_kwargs
    from local import moto_tuning

    # The local stack's moto patch: transactions back up only the items they touch. Stock moto
    # backs up and restores whole tables, so one thread's rollback undoes another thread's
    # writes — a moto artefact that concurrent-session tests would otherwise trip over.
    moto_tuning.install()
    with mock_aws():
        boto3.client("dynamodb").create_table(**table_create_kwargs(TABLE))
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": BUCKET_CORS_RULES})
        yield


class Clock:
    """A settable clock (epoch seconds) so TTL behaviour is tested without sleeping."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_executor() -> FakeExecutor:
    return FakeExecutor()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def catalog() -> Any:
    """The real whitelist (lambdas/shared/packages/whitelist.toml through its catalog)."""
    from lambdas.shared.packages.catalog import load_catalog

    return load_catalog()


@pytest.fixture
def wired(aws: None, fake_executor: FakeExecutor, clock: Clock, catalog: Any) -> Iterator[None]:
    """The real API wired to moto, the fake executor, thread background, a settable clock."""
    from lambdas.api import container
    from lambdas.api.adapters.background import ThreadBackground

    background = ThreadBackground(max_workers=8)
    container.reset()
    container.override(executor=fake_executor, background=background, clock=clock, catalog=catalog)
    yield
    fake_executor.release.set()
    background.shutdown()
    container.reset()


@pytest.fixture
def api(wired: None) -> ApiClient:
    return ApiClient()


@pytest.fixture
def other_api(wired: None) -> ApiClient:
    return ApiClient(principal=OTHER_PRINCIPAL)


@pytest.fixture(scope="module")
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One executor environment per test module (its own temp root, so modules never share
    workers), shut down after the module's last test."""
    from lambdas.executor.host.engine import Engine
    from lambdas.executor.settings import ExecutorSettings

    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    instance = Engine(ExecutorSettings(LCI_TMP_ROOT=str(root)))
    yield instance
    instance.shutdown()
