"""Fixtures shared across test folders.

- `moto_server`: one real moto server over HTTP on 127.0.0.1 for the whole session (presigned
  POST/GET transfers are real HTTP requests, as in production).
- `unprivileged_user`: a system user for hostile-code tests (CI runs as root; rlimits such as
  RLIMIT_NPROC and /proc protections only bite for a normal user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SANDBOX_USER = "lci-sandbox"


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

    def command(self, *argv: str) -> list[str]:
        """argv run as this user with no supplementary groups."""
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
        os.chown(path, self.uid, self.gid)
        return path


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


@pytest.fixture(scope="session")
def unprivileged_user() -> UnprivilegedUser:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
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
            pytest.skip(f"{SANDBOX_USER} cannot run the executor: {result.stderr[-300:]!r}")
    return user
