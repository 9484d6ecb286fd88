"""Hostile code against the executor running as an unprivileged user (as on Lambda, where the
runtime is not root): rlimits, timeouts, process cleanup, output caps, /proc protections and
the scrubbed environment. After each attack the same session must keep working."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, UnprivilegedUser
from tests.functional.executor_helpers import checked

pytestmark = [pytest.mark.security, pytest.mark.slow]

SECRET = "AKIA-not-for-user-code"
SESSION = "s-hostile"


class Driver:
    """`python -m lambdas.executor.serve` as the sandbox user: one execution environment."""

    def __init__(self, user: UnprivilegedUser) -> None:
        self.root = user.private_dir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO_ROOT),
            "LCI_TMP_ROOT": self.root,
            "OPENBLAS_NUM_THREADS": "1",
            # What a Lambda runtime has in its environment: none of it may reach user code.
            "AWS_ACCESS_KEY_ID": "AKIA0000",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_SESSION_TOKEN": SECRET,
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
            "_HANDLER": "lambdas.executor.handler.handler",
        }
        self.process = subprocess.Popen(
            user.command(sys.executable, "-m", "lambdas.executor.serve"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self.root,
            text=True,
        )
        self._ids = itertools.count(1)

    def request(self, message: dict[str, Any]) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def run(self, code: str, **fields: Any) -> dict[str, Any]:
        count = next(self._ids)
        event = {
            "execution_id": f"hostile-{count}",
            "tenant_id": SESSION,
            "session_id": SESSION,
            "code": code,
            "execution_count": count,
            "timeout_ms": 30_000,
            **fields,
        }
        return checked(self.request({"op": "invoke", "event": event}))["result"]

    def info(self) -> dict[str, Any]:
        return self.request({"op": "info"})

    def close(self) -> None:
        try:
            self.request({"op": "shutdown"})
            self.process.wait(timeout=30)
        except Exception:
            self.process.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(unprivileged_user: UnprivilegedUser) -> Iterator[Driver]:
    driver = Driver(unprivileged_user)
    try:
        assert driver.run("'ready'")["status"] == "ok"
        yield driver
    finally:
        driver.close()


def _user_processes(uid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.add(int(entry))
    return found


def _only_the_environment_survives(driver: Driver, uid: int) -> set[int]:
    """Processes of the sandbox user that are neither the driver, its zygote, a live worker
    nor the spare worker, after giving SIGKILLed ones time to disappear."""
    info = driver.info()
    expected = {info["pid"], *info["environment_pids"]}
    deadline = time.monotonic() + 15
    while True:
        extra = _user_processes(uid) - expected
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)


def _assert_still_serving(driver: Driver) -> None:
    result = driver.run("still_here = 'yes'\nstill_here")
    assert result["result"] == {"text/plain": "'yes'"}


# Double fork + setsid: a daemon in its own session, reparented away from the worker. The
# grandchild writes its pid to `w`; the cell reads it from `r`.
START_SETSID_DAEMON = (
    "r, w = os.pipe()\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        os.write(w, str(os.getpid()).encode())\n"
    "        time.sleep(300)\n"
    "    os._exit(0)\n"
    "os.close(w)\n"
)


def test_a_loop_ignoring_signals_ends_as_timeout(driver: Driver, unprivileged_user) -> None:
    code = (
        "import signal\n"
        "for sig in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT):\n"
        "    signal.signal(sig, signal.SIG_IGN)\n"
        "while True:\n    pass"
    )
    result = driver.run(code, timeout_ms=2000, limits={"cpu_seconds": 1})
    assert result["status"] == "timeout"
    assert result["duration_ms"] < 2000 + 1000  # the wall clock, not the loop, decides
    assert not _only_the_environment_survives(driver, unprivileged_user.uid)
    _assert_still_serving(driver)


def test_a_huge_allocation_is_memory_exceeded(driver: Driver) -> None:
    result = driver.run("blob = bytearray(10**10)")
    assert result["status"] == "memory_exceeded"
    assert "memory limit" in result["error"]["value"]
    _assert_still_serving(driver)


def test_a_fork_bomb_is_contained(driver: Driver, unprivileged_user) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = driver.run(code, timeout_ms=3000)
    assert result["status"] in ("timeout", "error")
    assert not _only_the_environment_survives(driver, unprivileged_user.uid)
    _assert_still_serving(driver)


def test_a_double_forked_setsid_daemon_is_gone_after_the_run(
    driver: Driver, unprivileged_user
) -> None:
    code = "import os, time\n" + START_SETSID_DAEMON + "int(os.read(r, 32))"
    result = driver.run(code)
    daemon = int(result["result"]["text/plain"])
    assert daemon not in _only_the_environment_survives(driver, unprivileged_user.uid)
    _assert_still_serving(driver)


def test_a_daemon_started_between_runs_is_gone_after_the_next_run(
    driver: Driver, unprivileged_user
) -> None:
    # A background thread outlives its cell and starts the daemon while no run is going on.
    started = driver.run(
        "import os, threading, time\n"
        "def later():\n"
        "    time.sleep(0.3)\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(300)\n"
        "        os._exit(0)\n"
        "threading.Thread(target=later, daemon=True).start()"
    )
    assert started["status"] == "ok"
    info = driver.info()
    expected = {info["pid"], *info["environment_pids"]}
    deadline = time.monotonic() + 15
    while not _user_processes(unprivileged_user.uid) - expected:
        assert time.monotonic() < deadline, "the background thread never started its daemon"
        time.sleep(0.05)
    _assert_still_serving(driver)
    assert not _only_the_environment_survives(driver, unprivileged_user.uid)


def test_killing_the_zygote_leaves_no_daemon_behind(driver: Driver, unprivileged_user) -> None:
    code = (
        "import os, signal, time\n" + START_SETSID_DAEMON + "daemon = int(os.read(r, 32))\n"
        "time.sleep(0.2)\n"
        "os.kill(os.getppid(), signal.SIGKILL)  # the zygote\n"
        "time.sleep(30)"
    )
    old_zygote = driver.info()["zygote_pid"]
    result = driver.run(code, timeout_ms=20_000)
    assert result["status"] in ("error", "timeout")
    assert not _only_the_environment_survives(driver, unprivileged_user.uid)
    _assert_still_serving(driver)  # a new zygote
    assert driver.info()["zygote_pid"] != old_zygote


def test_huge_output_is_truncated_and_the_parent_stays_small(driver: Driver) -> None:
    parent = driver.info()["pid"]

    def high_water_kb() -> int:
        with open(f"/proc/{parent}/status") as handle:
            line = next(line for line in handle if line.startswith("VmHWM:"))
        return int(line.split()[1])

    before = high_water_kb()
    result = driver.run("print('A' * 10**8)\nimport os\nos.write(1, b'B' * 10**7)")
    assert result["stdout_truncated"] is True
    assert len(result["stdout"].encode()) <= 1024 * 1024
    assert result["stdout"].startswith("AAAA")
    # 100 MB printed and 10 MB written to the fd; the trusted parent grew by a few MB at most.
    assert high_water_kb() - before < 30 * 1024
    _assert_still_serving(driver)


def test_user_code_cannot_read_the_trusted_processes(driver: Driver) -> None:
    parent = driver.info()["pid"]
    code = (
        "import os\n"
        "denied = []\n"
        f"for pid in (os.getppid(), {parent}):\n"
        "    for name in ('environ', 'mem', 'maps'):\n"
        "        try:\n"
        "            open(f'/proc/{pid}/{name}', 'rb').read(64)\n"
        "        except PermissionError:\n"
        "            denied.append(name)\n"
        "denied"
    )
    result = driver.run(code)
    assert result["status"] == "ok", result["error"]
    assert result["result"]["text/plain"].count("environ") == 2
    assert result["result"]["text/plain"].count("mem") == 2


def test_no_secrets_in_the_user_environment(driver: Driver) -> None:
    code = (
        "import os\n"
        "own = open('/proc/self/environ', 'rb').read().decode()\n"
        "names = sorted(os.environ)\n"
        "print(names)\n"
        "print(any(v.startswith('AWS_') or v.startswith('_HANDLER') for v in own.split('\\0')))"
    )
    result = driver.run(code)
    assert SECRET not in json.dumps(result)
    names = eval(result["stdout"].splitlines()[0])
    assert not [name for name in names if name.startswith("AWS_") or name == "_HANDLER"]
    assert result["stdout"].splitlines()[1] == "False"
