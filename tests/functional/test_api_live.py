"""Live execution through the API and the real executor, in-process, against a moto server over
HTTP: a running execution's output so far, interrupts that keep the session's state, forks,
and the receipt of every run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.functional.conftest import OTHER_PRINCIPAL, ApiClient
from tests.functional.executor_helpers import serve_api_on_moto_server

pytestmark = pytest.mark.slow

TICKING = (
    "import sys, time\n"
    "for i in range(40):\n"
    "    print('tick', i)\n"
    "    print('tock', i, file=sys.stderr)\n"
    "    time.sleep(0.25)\n"
)


@pytest.fixture(scope="module")
def real_api() -> Iterator[ApiClient]:
    """The API with the in-process executor, on one moto server for the module (moto's state
    is per process: one server, one table)."""
    from moto.server import ThreadedMotoServer

    from lambdas.api import container
    from lambdas.api.settings import get_settings
    from lambdas.executor import handler as executor_handler
    from lambdas.shared.packages.catalog import load_catalog

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "OPENBLAS_NUM_THREADS": "1",
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        patch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
        get_settings.cache_clear()
        try:
            serve_api_on_moto_server(endpoint, load_catalog())
            yield ApiClient()
        finally:
            container.reset()
            executor_handler.shutdown()
            server.stop()
            get_settings.cache_clear()


def _start(api: ApiClient, sid: str, code: str, **body: Any) -> str:
    response = api.post(
        f"/v1/sessions/{sid}/execute", {"code": code, "wait": False, "timeout_ms": 30_000, **body}
    )
    assert response.status == 202, response.text
    return str(response.json()["execution_id"])


def _until(api: ApiClient, execution_id: str, done: Any, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body = api.get(f"/v1/executions/{execution_id}").json()
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_a_running_execution_shows_its_output_so_far_in_order(real_api: ApiClient) -> None:
    api = real_api
    sid = api.new_session()
    execution_id = _start(api, sid, TICKING)
    running = _until(api, execution_id, lambda body: "tick 2" in body["stdout"])
    assert running["status"] == "running" and running["success"] is False
    assert running["stderr"].startswith("tock 0\n")
    assert [(o["name"], o["text"]) for o in running["outputs"][:3]] == [
        ("stdout", "tick 0\n"), ("stderr", "tock 0\n"), ("stdout", "tick 1\n")
    ]  # fmt: skip
    assert running["usage"]["wall_ms"] > 0
    # Interrupt it, so the module does not wait for it.
    assert api.post(f"/v1/executions/{execution_id}/interrupt").status == 202
    _until(api, execution_id, lambda body: body["status"] != "running")


def test_an_interrupt_keeps_every_variable_and_ends_the_run(real_api: ApiClient) -> None:
    api = real_api
    sid = api.new_session()
    first = api.post(f"/v1/sessions/{sid}/execute", {"code": "before = 1"})
    assert first.json()["status"] == "ok", first.text
    execution_id = _start(
        api,
        sid,
        "import time\nduring = 'set'\nprint('started')\n"
        "for step in range(1000):\n    time.sleep(0.05)\n",
    )
    _until(api, execution_id, lambda body: body["stdout"] == "started\n")
    # Another principal's execution does not exist for them.
    foreign = api.post(f"/v1/executions/{execution_id}/interrupt", principal=OTHER_PRINCIPAL)
    assert foreign.status == 404 and foreign.error_code == "EXECUTION_NOT_FOUND"
    requested = time.monotonic()
    accepted = api.post(f"/v1/executions/{execution_id}/interrupt")
    assert accepted.status == 202, accepted.text
    assert accepted.json() == {
        "execution_id": execution_id,
        "session_id": sid,
        "status": "running",
        "interrupt_requested": True,
    }
    ended = _until(api, execution_id, lambda body: body["status"] != "running")
    assert time.monotonic() - requested < 5
    assert ended["status"] == "interrupted" and ended["success"] is False
    assert ended["error"]["name"] == "KeyboardInterrupt"
    assert ended["execution_count"] == 2
    again = api.post(f"/v1/executions/{execution_id}/interrupt")
    assert again.status == 409 and again.error_code == "EXECUTION_FINISHED"
    after = api.post(
        f"/v1/sessions/{sid}/execute", {"code": "print(before, during, step > 0)"}
    ).json()
    assert after["stdout"] == "1 set True\n", after
    # The committed snapshot holds them too (a fresh environment restores from it).
    names = {v["name"] for v in api.get(f"/v1/sessions/{sid}").json()["variables"]}
    assert {"before", "during", "step"} <= names


def test_a_fork_copies_variables_files_and_notebook_then_diverges(real_api: ApiClient) -> None:
    api = real_api
    parent = api.new_session()
    form = api.post(f"/v1/sessions/{parent}/files", {"path": "data/in.txt"}).json()
    requests.post(
        form["upload"]["url"], data=form["upload"]["fields"], files={"file": b"21"}, timeout=30
    ).raise_for_status()
    made = api.post(
        f"/v1/sessions/{parent}/execute",
        {"code": "x = int(open('data/in.txt').read())\nopen('out.txt', 'w').write('parent')"},
    )
    assert made.json()["status"] == "ok", made.text
    forked = api.post(f"/v1/sessions/{parent}/fork", {"ttl_seconds": 600})
    assert forked.status == 201, forked.text
    child = forked.json()["session_id"]
    assert child != parent and forked.json()["execution_count"] == 1
    assert {v["name"] for v in api.get(f"/v1/sessions/{child}").json()["variables"]} >= {"x"}
    files = {f["path"] for f in api.get(f"/v1/sessions/{child}/files").json()["files"]}
    assert files == {"data/in.txt", "out.txt"}
    in_child = api.post(
        f"/v1/sessions/{child}/execute",
        {"code": "x += 1\nopen('out.txt', 'w').write('child')\nprint(x)"},
    ).json()
    assert in_child["stdout"] == "22\n" and in_child["execution_count"] == 2, in_child
    in_parent = api.post(
        f"/v1/sessions/{parent}/execute", {"code": "print(x, open('out.txt').read())"}
    ).json()
    assert in_parent["stdout"] == "21 parent\n", in_parent
    cells = api.get(f"/v1/sessions/{child}/notebook").json()["cells"]
    assert [cell["execution_count"] for cell in cells] == [1, 2]
    # Someone else's session cannot be forked, nor can one that does not exist.
    foreign = api.post(f"/v1/sessions/{parent}/fork", {}, principal=OTHER_PRINCIPAL)
    assert foreign.status == 404 and foreign.error_code == "SESSION_NOT_FOUND"
    assert api.post("/v1/sessions/nope/fork").status == 404


def test_every_result_carries_a_receipt(real_api: ApiClient) -> None:
    api = real_api
    sid = api.new_session()
    result = api.post(
        f"/v1/sessions/{sid}/execute",
        {"code": "import numpy as np\nblock = np.ones(32 * 1024 * 1024 // 8)\nblock.nbytes"},
    ).json()
    assert result["status"] == "ok", result
    assert result["usage"]["peak_memory_mb"] >= 30
    assert result["usage"]["wall_ms"] >= 0 and result["usage"]["cpu_ms"] >= 0
    one_shot = api.post("/v1/execute", {"code": "print(1)"}).json()
    assert set(one_shot["usage"]) == {"wall_ms", "cpu_ms", "peak_memory_mb"}
