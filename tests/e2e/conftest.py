"""A real local stack (`python -m local`) started once for the e2e tests, over real HTTP.

Smoke mode (`make smoke`: LCI_SMOKE=1 with LCI_ENDPOINT and LCI_API_KEY of a deployed stack):
the same tests run against that endpoint instead; tests marked `local_only` (a second key, the
stack's log, its processes) are skipped, and a short report ends the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from local import aws_calls

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEYS = ("k1", "k2")
STARTUP_TIMEOUT_SECONDS = 180  # generous: a loaded 2-core CI box
SMOKE_ENDPOINT = os.environ.get("LCI_ENDPOINT", "") if os.environ.get("LCI_SMOKE") == "1" else ""
SMOKE_API_KEY = os.environ.get("LCI_API_KEY", "") if SMOKE_ENDPOINT else ""
SMOKE = bool(SMOKE_ENDPOINT and SMOKE_API_KEY)


@dataclass
class TargetStack:
    """Where the e2e tests send their requests: a started local stack or a deployed one."""

    endpoint: str
    keys: tuple[str, ...]

    def env(self, key: str | None = None) -> dict[str, str]:
        """Environment for `lci` / curl subprocesses talking to this stack."""
        bin_dir = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            # The `lci` command on PATH imports this checkout's client, not an installed one.
            "PYTHONPATH": str(REPO_ROOT / "client"),
            "LCI_ENDPOINT": self.endpoint,
            "LCI_API_KEY": key or self.keys[0],
        }


@dataclass
class LocalStack(TargetStack):
    process: subprocess.Popen[bytes]
    log_path: Path
    envs_root: str
    uploads_file: Path  # the stack's count of stored POST uploads by folder (local/aws_calls.py)

    def uploads(self, folder: str) -> int:
        return aws_calls.read_counts(str(self.uploads_file)).get(folder, 0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "local_only: needs the local stack itself (skipped by `make smoke`)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not SMOKE:
        return
    skip = pytest.mark.skip(reason="local stack only (smoke run against a deployed API)")
    for item in items:
        if item.get_closest_marker("local_only"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not SMOKE:
        return
    write = terminalreporter.write_line
    write("")
    write(f"smoke report for {SMOKE_ENDPOINT}")
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") in ("call", "setup") and report.nodeid:
                name = report.nodeid.split("::")[-1]
                write(f"  {outcome:8} {report.duration:7.1f} s  {name}")
    counts = {k: len(terminalreporter.stats.get(k, [])) for k in ("passed", "failed", "skipped")}
    write(f"  {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_stack(
    tmp_dir: Path, extra_env: dict[str, str] | None = None, module: str = "local"
) -> LocalStack:
    """`python -m <module>` (the local stack, or tests/e2e/stack_control.py: the same stack
    driven over stdin) on a free port; returns once it is healthy."""
    port = free_port()
    log_path = tmp_dir / "stack.log"
    uploads_file = tmp_dir / "s3-uploads.json"
    # Not under pytest's 0700 tmp dir: pool uids must be able to reach their directories.
    envs_root = tempfile.mkdtemp(prefix="lci-e2e-")
    env = {
        **os.environ,
        "LCI_PORT": str(port),
        "LCI_API_KEY": ",".join(API_KEYS),
        "LCI_TMP_ROOT": envs_root,
        "OPENBLAS_NUM_THREADS": "1",
        "LCI_WHEELHOUSE_UPLOAD": "off",  # no test here installs packages; keeps CI lean
        aws_calls.UPLOADS_FILE_ENV: str(uploads_file),
        **(extra_env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
        )
    stack = LocalStack(
        f"http://127.0.0.1:{port}", API_KEYS, process, log_path, envs_root, uploads_file
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"local stack exited:\n{log_path.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(stack.endpoint + "/v1/health", timeout=5).status_code == 200:
                return stack
        time.sleep(0.2)
    stop_stack(stack)
    raise RuntimeError(f"local stack not healthy in time:\n{log_path.read_text()}")


def stop_stack(stack: LocalStack, sig: int = signal.SIGTERM) -> list[int]:
    """Stop the stack like Ctrl-C would; return pids of its process tree still alive after."""
    try:
        tree = psutil.Process(stack.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    stack.process.send_signal(sig)
    try:
        stack.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        stack.process.wait()
    _, alive = psutil.wait_procs(tree, timeout=10)
    shutil.rmtree(stack.envs_root, ignore_errors=True)
    return [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetStack]:
    """The stack under test: started here, or the deployed one in smoke mode."""
    if SMOKE:
        yield TargetStack(SMOKE_ENDPOINT.rstrip("/"), (SMOKE_API_KEY,))
        return
    stack = start_stack(tmp_path_factory.mktemp("local-stack"))
    yield stack
    stop_stack(stack)


@pytest.fixture
def client(local_stack: TargetStack) -> Iterator:
    from lci import Client

    with Client(local_stack.endpoint, local_stack.keys[0], timeout=120) as api:
        yield api
