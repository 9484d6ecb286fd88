"""Fixtures shared across test folders.

- `moto_server`: one real moto server over HTTP on 127.0.0.1 for the whole session (presigned
  POST/GET transfers are real HTTP requests, as in production).
- `sandbox_user`: who hostile-code tests run code as: a dedicated system user when the tests
  run as root (rlimits such as RLIMIT_NPROC and /proc protections only bite for a normal
  user), else the current non-root user. `unprivileged_user`: the dedicated user only, for
  tests that account for every process of its uid (skipped loudly when not root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SANDBOX_USER = "lci-sandbox"
# The executor's protection checks as `GET /v1/diagnostics` names them (SPEC's diagnostics).
EXECUTOR_PROTECTION_CHECKS = {
    "non_dumpable",
    "rlimits",
    "process_group_kill",
    "pidfd",
    "huge_pages",
    "runtime_api_isolated",
}


@dataclass(frozen=True)
class MotoServer:
    endpoint_url: str
    region: str = "us-east-1"

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoServer(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@dataclass(frozen=True)
class UnprivilegedUser:
    name: str
    uid: int
    gid: int
    # True: a system user only sandboxed code runs as (created by a root run). False: the
    # non-root user running the tests, which shares its uid with the test runner.
    dedicated: bool = True

    def command(self, *argv: str) -> list[str]:
        """argv run as this user with no supplementary groups."""
        if not self.dedicated:
            return list(argv)
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--",
            *argv,
        ]

    def private_dir(self) -> str:
        """A fresh temp directory owned by this user (removed by the caller)."""
        path = tempfile.mkdtemp(prefix="lci-sec-", dir="/tmp")
        if self.dedicated:
            os.chown(path, self.uid, self.gid)
        return path


def skip_loudly(reason: str) -> NoReturn:
    """Skip with a warning as well as the skip reason, so a run that did not test a defence
    says so in its warnings summary, not only in `-ra`."""
    warnings.warn(pytest.PytestWarning(f"NOT TESTED: {reason}"), stacklevel=2)
    pytest.skip(f"NOT TESTED: {reason}")


def _grant_traverse(path: Path) -> None:
    """Let other users traverse (not list) the directories above `path`, e.g. /root when the
    interpreter lives under /root/.pyenv on a CI box."""
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _dedicated_user() -> UnprivilegedUser:
    """The system user SANDBOX_USER (created when missing); only root can switch to it."""
    if shutil.which("setpriv") is None:
        skip_loudly("setpriv (util-linux) is not installed: cannot drop root for hostile code")
    try:
        entry = pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SANDBOX_USER],
            check=True,
            capture_output=True,
        )  # fmt: skip
        entry = pwd.getpwnam(SANDBOX_USER)
    user = UnprivilegedUser(SANDBOX_USER, entry.pw_uid, entry.pw_gid)
    probe = user.command(sys.executable, "-c", "import lambdas.executor.host.engine")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT)}
    if subprocess.run(probe, env=env, capture_output=True, cwd="/").returncode != 0:
        _grant_traverse(Path(os.path.realpath(sys.executable)).parent)
        _grant_traverse(REPO_ROOT)
        result = subprocess.run(probe, env=env, capture_output=True, cwd="/")
        if result.returncode != 0:
            skip_loudly(f"{SANDBOX_USER} cannot run the executor: {result.stderr[-300:]!r}")
    return user


@pytest.fixture(scope="session")
def unprivileged_user() -> UnprivilegedUser:
    """A uid used by nothing but the sandboxed code: tests that count or kill every process
    of the uid need it. Root creates it; a non-root run cannot, and skips them loudly."""
    if os.geteuid() != 0:
        skip_loudly(
            "needs root to create and switch to a dedicated sandbox user (this test counts "
            "every process of the sandbox uid, which a non-root run shares with pytest)"
        )
    return _dedicated_user()


@pytest.fixture(scope="session")
def sandbox_user() -> UnprivilegedUser:
    """Who hostile code runs as: the dedicated user when the tests run as root (root would
    make rlimits and /proc protections meaningless), else the current non-root user — the
    defences tested with it (timeouts, rlimits, the non-dumpable parent, the scrubbed
    environment) hold for any non-root uid."""
    if os.geteuid() == 0:
        return _dedicated_user()
    return UnprivilegedUser(
        pwd.getpwuid(os.getuid()).pw_name, os.getuid(), os.getgid(), dedicated=False
    )


def send_request_in_full(raw: socket.socket, request: bytes, body_bytes: int = 0) -> None:
    """Send a raw HTTP request head, then `body_bytes` of body in 1 MiB pieces, before reading
    any answer (what a naive client does)."""
    raw.sendall(request)
    chunk = b"a" * (1 << 20)
    sent = 0
    while sent < body_bytes:
        raw.sendall(chunk[: body_bytes - sent])
        sent += min(len(chunk), body_bytes - sent)
