"""Robustness of the API through a started local stack, over real HTTP (issue 11).

Errors: every refusal (body too large, wrong method, missing key, unknown path, malformed
request) in the `{"error": {code, message}}` shape with the status API Gateway would give, and
no path of the host. Files: a live worker's workspace follows the session's stored files.
Packages: on-demand installs from the wheelhouse as `make dev` serves it. The sync window,
faults (a killed environment, storage stopped and restarted under the stack, concurrent
executes, retried idempotent requests) are in this module too; each test says what it
attacks.
"""

from __future__ import annotations

import contextlib
import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import TargetStack

pytestmark = pytest.mark.e2e

HOST_PATH_MARKERS = ("/work/", "/root/", "/home/", "/usr/lib/python", "site-packages", '.py"')


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    assert body["error"]["code"] == code, body
    for marker in HOST_PATH_MARKERS:
        assert marker not in response.text, response.text
    return dict(body["error"])


def _raw(stack: TargetStack, request: bytes, body_bytes: int = 0) -> bytes:
    """Send everything before reading the answer (what a naive client does)."""
    url = urlsplit(stack.endpoint)
    with socket.create_connection((url.hostname, url.port), timeout=60) as raw:
        raw.sendall(request)
        chunk = b"a" * (1 << 20)
        sent = 0
        while sent < body_bytes:
            raw.sendall(chunk[: body_bytes - sent])
            sent += min(len(chunk), body_bytes - sent)
        answer = b""
        while data := raw.recv(65536):
            answer += data
            if b"\r\n\r\n" in answer:
                head, _, rest = answer.partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(rest) >= length[0]:
                    break
    return answer


# -- errors (issue 11 item 7, API side) -----------------------------------------------------


def test_a_20_mb_body_gets_413_payload_too_large_in_the_json_shape(local_stack: TargetStack):
    size = 20 * 1024 * 1024
    head = (
        f"POST /v1/execute HTTP/1.1\r\nHost: x\r\nx-api-key: {local_stack.keys[0]}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    )
    answer = _raw(local_stack, head.encode(), size)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # And through an ordinary client.
    too_big = httpx.post(
        local_stack.endpoint + "/v1/execute",
        content=b"{" + b" " * size + b"}",
        headers={"x-api-key": local_stack.keys[0]},
        timeout=60,
    )
    assert_error_shape(too_big, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/sessions", "POST"),
        ("DELETE", "/v1/execute", "POST"),
        ("POST", "/v1/usage", "GET"),
        ("PATCH", "/v1/sessions/abc/files/a/b.txt", "GET, DELETE"),
        ("POST", "/v1/health", "GET"),
    ],
)
def test_a_wrong_method_on_a_known_path_is_405_with_allow(
    local_stack: TargetStack, method: str, path: str, allow: str
):
    response = httpx.request(
        method, local_stack.endpoint + path, headers={"x-api-key": local_stack.keys[0]}
    )
    assert_error_shape(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == allow


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/nothing", "/", "/v1/sessions/x/files/a"])
@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_a_missing_or_unknown_key_is_403_forbidden_on_every_path_but_the_public_ones(
    local_stack: TargetStack, path: str, key: str | None
):
    headers = {"x-api-key": key} if key else {}
    response = httpx.get(local_stack.endpoint + path, headers=headers)
    assert_error_shape(response, 403, "FORBIDDEN")
    assert httpx.get(local_stack.endpoint + "/v1/health", headers=headers).status_code == 200


def test_an_unknown_path_with_a_valid_key_is_404(local_stack: TargetStack):
    for path in ("/v1/nothing", "/", "/v2/sessions"):
        response = httpx.get(
            local_stack.endpoint + path, headers={"x-api-key": local_stack.keys[0]}
        )
        assert_error_shape(response, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 4\r\n"
         b"\r\n\xff\xfe\xfd\xfc", 400, "INVALID_REQUEST"),
        (b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 9\r\n"
         b"\r\n{not json", 400, "INVALID_REQUEST"),
        (b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 17\r\n"
         b"\r\n{\"code\":\"\\ud800\"}", 400, "INVALID_REQUEST"),
        (b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 400009\r\n"
         b"\r\n{\"code\":" + b"[" * 200_000 + b"]" * 200_000 + b"}", 400, "INVALID_REQUEST"),
        (b"BREW /v1/sessions HTTP/1.1\r\nHost: x\r\n\r\n", 501, "NOT_IMPLEMENTED"),
        (b"GET /v1/health HTTP/7.0\r\nHost: x\r\n\r\n", 505, "INVALID_REQUEST"),
        (b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", 400,
         "INVALID_REQUEST"),
    ],
)  # fmt: skip
def test_malformed_requests_get_json_errors_with_no_host_paths(
    local_stack: TargetStack, raw: bytes, status: int, code: str
):
    answer = _raw(local_stack, raw.replace(b"{key}", local_stack.keys[0].encode()))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), answer[:300]
    response = httpx.Response(
        status,
        headers=[tuple(line.split(": ", 1)) for line in head.decode().split("\r\n")[1:]],
        content=body,
    )
    assert_error_shape(response, status, code)


# -- files: the live worker's workspace follows the stored files (issue 11 item 4) ----------


def _run(client, code: str, session_id: str):
    result = client.execute(code, session_id=session_id)
    assert result.success, result.raw
    return result


def test_a_deleted_file_is_gone_from_the_live_workers_workspace(client):
    session = client.create_session().session_id
    wrote = _run(client, "open('out.csv', 'w').write('a,b\\n1,2\\n')", session)
    assert [f.path for f in wrote.files] == ["out.csv"]
    _run(client, "import os", session)  # the worker has seen out.csv in the stored set
    client.delete_file(session, "out.csv")
    assert client.list_files(session) == []
    assert _run(client, "os.path.exists('out.csv')", session).text == "False"
    # Also right after the run that wrote it (the worker uploaded it, never downloaded it).
    _run(client, "open('fresh.txt', 'w').write('x')", session)
    client.delete_file(session, "fresh.txt")
    assert _run(client, "os.path.exists('fresh.txt')", session).text == "False"


def test_a_replaced_file_has_its_new_content_even_at_the_same_size(client):
    session = client.create_session().session_id
    client.upload_file(session, b"v1 content", "data/in.txt")
    assert _run(client, "open('data/in.txt').read()", session).text == "'v1 content'"
    client.upload_file(session, b"v2 content", "data/in.txt")
    assert _run(client, "open('data/in.txt').read()", session).text == "'v2 content'"
    # A file the worker wrote itself, replaced through the API with as many bytes.
    _run(client, "open('w.txt', 'w').write('AAAA')", session)
    client.upload_file(session, b"BBBB", "w.txt")
    assert _run(client, "open('w.txt').read()", session).text == "'BBBB'"


def test_an_uploaded_file_appears_in_the_live_workers_workspace(client):
    session = client.create_session().session_id
    _run(client, "import os\nx = 1", session)
    client.upload_file(session, b"hello", "late/arrival.txt")
    result = _run(client, "open('late/arrival.txt').read(), x", session)
    assert result.text == "('hello', 1)"


# -- on-demand packages as `make dev` serves them (issue 11 item 5) -------------------------

# The ci layer profile's on-demand package (lambdas/shared/packages/whitelist.toml), not in
# the dev virtualenv: an import that works proves the install from the wheelhouse.
ON_DEMAND_PACKAGE, ON_DEMAND_MODULE = "beautifulsoup4", "bs4"


@pytest.fixture(scope="module")
def wheelhouse_stack(tmp_path_factory: pytest.TempPathFactory):
    """A local stack with a built wheelhouse uploaded to its bucket, no PyPI: what `make dev`
    runs after `make layers` (the ci profile keeps the build to seconds)."""
    from layers import build

    from .conftest import start_stack, stop_stack

    out = tmp_path_factory.mktemp("layers-out")
    cache = tmp_path_factory.getbasetemp() / "layers-cache"  # shared with the layer tests
    assert build.main(["--profile", "ci", "--out", str(out), "--cache-dir", str(cache)]) == 0
    stack = start_stack(
        tmp_path_factory.mktemp("wheelhouse-stack"),
        {
            "LCI_LAYERS_DIR": str(out),
            "LCI_WHEELHOUSE_UPLOAD": "sync",
            "LCI_NETWORK_MODE": "isolated",
        },
    )
    yield stack
    stop_stack(stack)


def test_lci_run_with_package_installs_from_the_wheelhouse(wheelhouse_stack, tmp_path):
    """The README's `lci run job.py --timeout 120 --package ... --json`."""
    import subprocess
    import sys

    job = tmp_path / "job.py"
    job.write_text(
        f"import {ON_DEMAND_MODULE}\n"
        f"print({ON_DEMAND_MODULE}.BeautifulSoup('<p>hi</p>', 'html.parser').p.text)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-m", "lci.cli", "run", str(job), "--timeout", "120",
         "--package", ON_DEMAND_PACKAGE, "--json"],
        env=wheelhouse_stack.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    result = json.loads(completed.stdout)
    assert completed.returncode == 0, (result, completed.stderr)
    assert result["status"] == "ok", result
    assert result["stdout"] == "hi\n"
    assert any(ON_DEMAND_PACKAGE in w for w in result["warnings"]), result["warnings"]


def test_pip_install_in_a_session_installs_from_the_wheelhouse(wheelhouse_stack):
    from lci import Client

    with Client(wheelhouse_stack.endpoint, wheelhouse_stack.keys[0], timeout=300) as api:
        session = api.create_session().session_id
        installed = api.execute(f"%pip install {ON_DEMAND_PACKAGE}", session_id=session)
        assert installed.success, installed.raw
        assert "HTTP Error" not in installed.stdout + installed.stderr, installed.raw
        used = api.execute(
            f"import {ON_DEMAND_MODULE}\n{ON_DEMAND_MODULE}.__version__", session_id=session
        )
        assert used.success, used.raw
        assert used.text.strip("'") == "4.15.0"


# -- the sync window and faults (issue 11: sync window, faults) -----------------------------

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


@pytest.mark.local_only
@pytest.mark.parametrize("timeout_ms", [1000, 30_000], ids=["inline", "background"])
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


@pytest.mark.local_only
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


@pytest.mark.local_only
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


@pytest.mark.local_only
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


@pytest.mark.local_only
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


# -- load: nothing committed is lost (issue 11: load) ----------------------------------------


def test_a_short_load_loses_no_committed_run(local_stack: TargetStack):
    """`python -m benchmarks.e2e`'s load run, short: 4 sessions x 3 s; every session's final
    counter equals the runs its client saw committed."""
    from benchmarks.e2e import run_load

    load = run_load(local_stack.endpoint, sessions=4, seconds=3, api_key=local_stack.keys[0])
    assert load["runs"] > 0
    assert (load["errors"], load["lost"], load["extra"]) == (0, 0, 0), load
