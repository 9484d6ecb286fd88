"""The executor says which of its protections hold where it runs (issue 12, "know what a real
deployment does"): checked from a child process as user code would be, as an unprivileged
user as on Lambda, answered to a diagnostics invocation without running any code."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from lambdas.shared.models import ExecutorResponse
from tests.conftest import EXECUTOR_PROTECTION_CHECKS as CHECKS
from tests.conftest import REPO_ROOT, UnprivilegedUser


@pytest.fixture
def runtime_api() -> Iterator[str]:
    """A listening stand-in for Lambda's Runtime API (127.0.0.1:9001 on Lambda)."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def _serve_diagnostics(user: UnprivilegedUser, runtime_api: str) -> dict[str, Any]:
    root = user.private_dir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),
        "LCI_TMP_ROOT": root,
        "OPENBLAS_NUM_THREADS": "1",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
    }
    event = {
        "execution_id": "diag-1",
        "tenant_id": "principal",
        "code": "",
        "diagnostics": True,
    }
    requests = json.dumps({"op": "invoke", "event": event}) + "\n"
    requests += json.dumps({"op": "info"}) + "\n" + json.dumps({"op": "shutdown"}) + "\n"
    try:
        done = subprocess.run(
            user.command(sys.executable, "-m", "lambdas.executor.serve"),
            input=requests,
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    answer, info, _ = (json.loads(line) for line in done.stdout.splitlines())
    assert info["zygote_pid"] is None, "a diagnostics invocation started the environment"
    return dict(answer)


@pytest.mark.attack(
    "process hygiene",
    "a child process probes what `lci doctor` reports: the parent's environ, its own rlimits, "
    "killing its process group, pidfd, the Lambda Runtime API",
    "non-dumpable parent, rlimits, group kill and pidfd hold; the Runtime API is reachable, and "
    "the report says so",
)
def test_an_unprivileged_executor_reports_which_protections_hold(
    sandbox_user: UnprivilegedUser, runtime_api: str
) -> None:
    answer = _serve_diagnostics(sandbox_user, runtime_api)
    response = ExecutorResponse.model_validate(answer)
    assert response.result.success and response.result.outputs == []  # nothing ran
    report = response.diagnostics
    assert report is not None and set(report.checks) == CHECKS
    checks = report.checks
    assert report.uid == sandbox_user.uid
    # The trusted process is non-dumpable and the probe is not root: its environ is closed.
    assert checks["non_dumpable"].ok is True, checks["non_dumpable"].detail
    assert checks["rlimits"].ok is True, checks["rlimits"].detail
    assert checks["process_group_kill"].ok is True, checks["process_group_kill"].detail
    assert checks["pidfd"].ok is True, checks["pidfd"].detail
    assert checks["huge_pages"].ok is not None
    # Nothing here keeps a child off the Runtime API: the report says so, as it would on AWS.
    assert checks["runtime_api_isolated"].ok is False
    assert runtime_api in checks["runtime_api_isolated"].detail


def test_the_runtime_api_check_tells_reachable_from_closed_and_absent(
    monkeypatch: pytest.MonkeyPatch, runtime_api: str
) -> None:
    from lambdas.executor.host import protections

    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", runtime_api)
    assert protections.check()["checks"]["runtime_api_isolated"]["ok"] is False
    with contextlib.closing(socket.create_server(("127.0.0.1", 0))) as closed:
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", f"127.0.0.1:{port}")
    isolated = protections.check()["checks"]["runtime_api_isolated"]
    assert isolated["ok"] is True, isolated
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API")
    assert protections.check()["checks"]["runtime_api_isolated"]["ok"] is None
