"""The sync window and faults, through a local stack of their own (issue 11): an environment
that hangs (SIGSTOP) or is killed mid-run, storage (moto) stopped and restarted under the
stack, two concurrent executes on one session, a retried request with the same
Idempotency-Key. Each test says what it attacks and what must hold."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest

from .robustness import HOST_PATH_MARKERS, assert_error_shape

pytestmark = [pytest.mark.e2e, pytest.mark.local_only]


FAULT_SYNC_WAIT_MS = 4000  # short, so a held window shows in seconds


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory):
    """A stack of its own (these tests stop its environments and its storage), driven over
    stdin by tests/e2e/stack_control.py."""
    from .conftest import start_stack, stop_stack

    stack = start_stack(
        tmp_path_factory.mktemp("fault-stack"),
        {"SYNC_WAIT_MS": str(FAULT_SYNC_WAIT_MS)},
        module="tests.e2e.stack_control",
    )
    yield stack
    stop_stack(stack)


@pytest.fixture
def fault_client(fault_stack):
    from lci import Client

    with Client(fault_stack.endpoint, fault_stack.keys[0], timeout=120) as api:
        yield api


_commands = iter(range(1, 1_000_000))


def control(stack, command: str, timeout: float = 60) -> None:
    """Send a stack_control command; return once the stack says it took effect."""
    import time

    line = f"{command} {next(_commands)}"
    stack.process.stdin.write(f"{line}\n".encode())
    stack.process.stdin.flush()
    deadline = time.monotonic() + timeout
    while f"done {line}" not in stack.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"stack did not acknowledge {line!r}"
        time.sleep(0.05)


def environment_of(client, session_id: str):
    """The environment process (local.environment_worker) serving a session."""
    import psutil

    worker_pid = int(client.execute("import os\nos.getpid()", session_id=session_id).text)
    for process in psutil.Process(worker_pid).parents():
        if "local.environment_worker" in " ".join(process.cmdline()):
            return process
    raise AssertionError("no environment process above the session's worker")


def wait_finished(client, execution_id: str, timeout: float = 120):
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = client.get_execution(execution_id)
        if not result.running:
            return result
        assert time.monotonic() < deadline, f"{execution_id} still running"
        time.sleep(0.2)


@pytest.mark.parametrize("timeout_ms", [1000, 30_000], ids=["inline", "background"])
@pytest.mark.fault(
    "executor environment",
    "the session's environment frozen (SIGSTOP) mid-run, inline and background runs",
    "202 within the sync window + 1 s; the run finishes once it resumes and frees the lease",
)
def test_the_sync_window_holds_while_the_environment_hangs(fault_client, timeout_ms):
    """SIGSTOP the session's environment: a sync execute still answers 202 within the window
    (+1 s), whether the run was invoked inline (fits the window) or in the background; once
    the environment resumes the run finishes and the lease is free for the next run."""
    import signal
    import time

    session = fault_client.create_session().session_id
    environment = environment_of(fault_client, session)
    environment.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = httpx.post(
            f"{fault_client.endpoint}/v1/sessions/{session}/execute",
            json={"code": "x = 6 * 7", "timeout_ms": timeout_ms},
            headers={"x-api-key": fault_client.api_key},
            timeout=120,
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert elapsed <= FAULT_SYNC_WAIT_MS / 1000 + 1, elapsed
        execution_id = response.json()["execution_id"]
        assert fault_client.get_execution(execution_id).running
        busy = httpx.post(
            f"{fault_client.endpoint}/v1/sessions/{session}/execute",
            json={"code": "1"},
            headers={"x-api-key": fault_client.api_key},
            timeout=120,
        )
        assert_error_shape(busy, 409, "SESSION_BUSY")
    finally:
        environment.send_signal(signal.SIGCONT)
    finished = wait_finished(fault_client, execution_id)
    assert finished.status == "ok", finished.raw
    # The run ended, so its lease was given back: the session takes the next run at once.
    assert fault_client.execute("x", session_id=session).text == "42"


@pytest.mark.fault(
    "executor environment",
    "the environment's whole process tree killed mid-run",
    "a clear error naming the environment, no host path; the next run has the last committed state",
)
def test_an_environment_killed_mid_run_gives_a_clear_error_and_the_last_committed_state(
    fault_client,
):
    import time

    import psutil

    session = fault_client.create_session().session_id
    assert fault_client.execute("x = 41", session_id=session).success
    environment = environment_of(fault_client, session)
    accepted = fault_client.execute(
        "x = 1000\nimport time\ntime.sleep(20)", session_id=session, wait=False
    )
    time.sleep(1.5)  # the cell is running
    for process in [*environment.children(recursive=True), environment]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    result = wait_finished(fault_client, accepted.execution_id, timeout=60)
    assert result.status == "error" and not result.success
    assert result.error and result.error.name, result.raw
    assert "environment" in result.error.value, result.raw
    for marker in HOST_PATH_MARKERS:
        assert marker not in json.dumps(result.raw)
    # The next run works, on the state of the last commit (x = 41, not 1000).
    assert fault_client.execute("x + 1", session_id=session).text == "42"


@pytest.mark.fault(
    "storage",
    "S3 + DynamoDB (moto) stopped, then restarted on its port",
    "503 `SERVICE_UNAVAILABLE` JSON errors at once; nothing committed lost",
)
def test_storage_stopped_and_restarted_under_the_stack(fault_stack, fault_client):
    """moto (S3 + DynamoDB) goes away: clear 503 SERVICE_UNAVAILABLE JSON errors, quickly;
    it comes back on the same port: everything committed before is still there."""
    import time

    session = fault_client.create_session().session_id
    assert fault_client.execute("kept = [1, 2, 3]", session_id=session).success
    fault_client.upload_file(session, b"still here", "kept.txt")
    key = {"x-api-key": fault_stack.keys[0]}
    control(fault_stack, "storage-stop")
    try:
        for method, path, body in (
            ("GET", f"/v1/sessions/{session}", None),
            ("POST", "/v1/sessions", {}),
            ("POST", f"/v1/sessions/{session}/execute", {"code": "kept.append(4)"}),
            ("POST", "/v1/execute", {"code": "1"}),
            ("GET", f"/v1/sessions/{session}/files", None),
            ("GET", "/v1/usage", None),
        ):
            started = time.monotonic()
            response = httpx.request(
                method, fault_stack.endpoint + path, json=body, headers=key, timeout=60
            )
            assert_error_shape(response, 503, "SERVICE_UNAVAILABLE")
            assert time.monotonic() - started < 5, path
        assert httpx.get(fault_stack.endpoint + "/v1/health").status_code == 200
    finally:
        control(fault_stack, "storage-start")
    assert fault_client.execute("kept", session_id=session).text == "[1, 2, 3]"
    assert fault_client.download_file(session, "kept.txt") == b"still here"
    assert fault_client.execute("1 + 1").text == "2"


@pytest.mark.fault(
    "concurrency",
    "two executes on one session at once",
    "one 200, one 409 `SESSION_BUSY`; one run counted",
)
def test_two_concurrent_executes_on_one_session_one_gets_409(fault_stack, fault_client):
    from concurrent.futures import ThreadPoolExecutor

    session = fault_client.create_session().session_id
    assert fault_client.execute("import time", session_id=session).success

    def execute(_: int) -> httpx.Response:
        return httpx.post(
            f"{fault_stack.endpoint}/v1/sessions/{session}/execute",
            json={"code": "time.sleep(1.5)\n'done'"},
            headers={"x-api-key": fault_stack.keys[0]},
            timeout=120,
        )

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(execute, range(2)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409], [r.text for r in responses]
    assert_error_shape(next(r for r in responses if r.status_code == 409), 409, "SESSION_BUSY")
    assert fault_client.get_session(session).execution_count == 2


@pytest.mark.fault(
    "concurrency",
    "the same execute with the same `Idempotency-Key`, three at once and once more after",
    "one execution id; the code ran once",
)
def test_a_retried_request_with_the_same_idempotency_key_runs_once(fault_stack, fault_client):
    from concurrent.futures import ThreadPoolExecutor

    session = fault_client.create_session().session_id
    request = {
        "url": f"{fault_stack.endpoint}/v1/sessions/{session}/execute",
        "json": {"code": "runs = globals().get('runs', 0) + 1\nimport time\ntime.sleep(1)\nruns"},
        "headers": {"x-api-key": fault_stack.keys[0], "Idempotency-Key": "retry-me-1"},
        "timeout": 120,
    }
    with ThreadPoolExecutor(3) as pool:  # a client retrying before the first answer arrived
        concurrent = list(pool.map(lambda _: httpx.post(**request), range(3)))
    later = httpx.post(**request)  # and after it
    answers = [*concurrent, later]
    ids = {r.json().get("execution_id") for r in answers if r.status_code in (200, 202)}
    assert len(ids) == 1, [r.text for r in answers]
    # A duplicate still in flight may be told the session is busy, never run a second time.
    assert all(r.status_code in (200, 202, 409) for r in answers), [r.text for r in answers]
    (execution_id,) = ids
    assert wait_finished(fault_client, execution_id).text == "1"
    assert fault_client.execute("runs", session_id=session).text == "1"
    assert fault_client.get_session(session).execution_count == 2
