"""Hostile code against the executor running as an unprivileged user (as on Lambda, where the
runtime is not root): rlimits, timeouts, process cleanup, output caps, /proc protections and
the scrubbed environment. After each attack the same session must keep working.

Run as root, the code runs as a dedicated sandbox user; run as a normal user (CI without
root), as that user — every defence here holds for any non-root uid, except the fork bomb's
process count, which needs a uid of its own and is skipped loudly."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, UnprivilegedUser
from tests.functional.executor_helpers import checked

pytestmark = [pytest.mark.security, pytest.mark.slow]

SECRET = "AKIA-not-for-user-code"
SESSION = "s-hostile"


# Every wait on the environment is bounded by a deadline of its own: a defence that stops
# working (a timeout that never fires) fails its test in seconds, not at pytest's global
# timeout, and the next test gets a fresh environment instead of a wedged one.
ANSWER_MARGIN_S = 30.0  # beyond a cell's own timeout: result transfer, a busy 2-core box
COLD_START_WITHIN_S = 120.0


class Driver:
    """`python -m lambdas.executor.serve` as the sandbox user: one execution environment."""

    def __init__(self, user: UnprivilegedUser) -> None:
        self.user = user
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
        self._answers: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read_answers, daemon=True).start()

    def _read_answers(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._answers.put(line)
        self._answers.put("")  # end of output: the process is gone

    def alive(self) -> bool:
        return self.process.poll() is None

    def request(self, message: dict[str, Any], within_s: float = ANSWER_MARGIN_S) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        try:
            line = self._answers.get(timeout=within_s)
        except queue.Empty:
            self.kill()
            raise AssertionError(
                f"no answer to {message.get('op')!r} within {within_s:.0f} s "
                "(the environment was killed; the next test starts a new one)"
            ) from None
        assert line, "the environment process exited without answering"
        return json.loads(line)

    def run(self, code: str, within_s: float | None = None, **fields: Any) -> dict[str, Any]:
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
        if within_s is None:
            within_s = event["timeout_ms"] / 1000 + ANSWER_MARGIN_S
        return checked(self.request({"op": "invoke", "event": event}, within_s))["result"]

    def info(self) -> dict[str, Any]:
        return self.request({"op": "info"})

    def kill(self) -> None:
        """SIGKILL the environment's whole tree. `serve` is its tree's child subreaper, so
        even a double-forked daemon is still a descendant."""
        for pid in [*_descendants(self.process.pid), self.process.pid]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def close(self) -> None:
        try:
            if self.alive():
                self.request({"op": "shutdown"})
                self.process.wait(timeout=30)
        except Exception:
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class Environments:
    """One environment shared by the module's tests, replaced when a test had to kill it."""

    def __init__(self, user: UnprivilegedUser) -> None:
        self.user = user
        self.current: Driver | None = None

    def get(self) -> Driver:
        if self.current is None or not self.current.alive():
            if self.current is not None:
                self.current.close()
            self.current = Driver(self.user)
            ready = self.current.run("'ready'", within_s=COLD_START_WITHIN_S)
            assert ready["status"] == "ok", ready
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


@pytest.fixture(scope="module")
def environments(sandbox_user: UnprivilegedUser) -> Iterator[Environments]:
    environments = Environments(sandbox_user)
    try:
        yield environments
    finally:
        environments.close()


@pytest.fixture
def driver(environments: Environments) -> Driver:
    return environments.get()


def _proc_stat(pid: int | str) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(entry)) is not None:
            children.setdefault(stat[1], []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _user_processes(uid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
        except OSError:
            continue
        stat = _proc_stat(entry)
        if stat is not None and stat[0] not in ("Z", "X"):
            found.add(int(entry))
    return found


def _environment_processes(driver: Driver) -> set[int]:
    """Live processes hostile code may have left: every process of a dedicated sandbox uid;
    as the current user (shared with pytest), the environment's tree, which holds everything
    it started (`serve` is a child subreaper)."""
    if driver.user.dedicated:
        return _user_processes(driver.user.uid)
    tree = _descendants(driver.process.pid) | {driver.process.pid}
    return {pid for pid in tree if (stat := _proc_stat(pid)) and stat[0] not in ("Z", "X")}


def _only_the_environment_survives(driver: Driver) -> set[int]:
    """Processes hostile code left that are neither the driver, its zygote, a live worker
    nor the spare worker, after giving SIGKILLed ones time to disappear."""
    info = driver.info()
    expected = {info["pid"], *info["environment_pids"]}
    deadline = time.monotonic() + 15
    while True:
        extra = _environment_processes(driver) - expected
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


def test_a_loop_ignoring_signals_ends_as_timeout(driver: Driver) -> None:
    code = (
        "import signal\n"
        "for sig in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT):\n"
        "    signal.signal(sig, signal.SIG_IGN)\n"
        "while True:\n    pass"
    )
    result = driver.run(code, within_s=2 + 10, timeout_ms=2000, limits={"cpu_seconds": 1})
    assert result["status"] == "timeout"
    assert result["duration_ms"] < 2000 + 1000  # the wall clock, not the loop, decides
    assert not _only_the_environment_survives(driver)
    _assert_still_serving(driver)


def test_a_huge_allocation_is_memory_exceeded(driver: Driver) -> None:
    result = driver.run("blob = bytearray(10**10)")
    assert result["status"] == "memory_exceeded"
    assert "memory limit" in result["error"]["value"]
    _assert_still_serving(driver)


def test_a_fork_bomb_is_contained(driver: Driver, unprivileged_user: UnprivilegedUser) -> None:
    # `unprivileged_user`: RLIMIT_NPROC counts every process of the uid, so the bomb must not
    # share its uid with the test runner.
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = driver.run(code, within_s=3 + 15, timeout_ms=3000)
    assert result["status"] in ("timeout", "error")
    assert not _only_the_environment_survives(driver)
    _assert_still_serving(driver)


def test_a_double_forked_setsid_daemon_is_gone_after_the_run(driver: Driver) -> None:
    code = "import os, time\n" + START_SETSID_DAEMON + "int(os.read(r, 32))"
    result = driver.run(code)
    daemon = int(result["result"]["text/plain"])
    assert daemon not in _only_the_environment_survives(driver)
    _assert_still_serving(driver)


def test_a_daemon_started_between_runs_is_gone_after_the_next_run(driver: Driver) -> None:
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
    while not _environment_processes(driver) - expected:
        assert time.monotonic() < deadline, "the background thread never started its daemon"
        time.sleep(0.05)
    _assert_still_serving(driver)
    assert not _only_the_environment_survives(driver)


def test_killing_the_zygote_leaves_no_daemon_behind(driver: Driver) -> None:
    code = (
        "import os, signal, time\n" + START_SETSID_DAEMON + "daemon = int(os.read(r, 32))\n"
        "time.sleep(0.2)\n"
        "os.kill(os.getppid(), signal.SIGKILL)  # the zygote\n"
        "time.sleep(30)"
    )
    old_zygote = driver.info()["zygote_pid"]
    result = driver.run(code, within_s=20 + 20, timeout_ms=20_000)
    assert result["status"] in ("error", "timeout")
    assert not _only_the_environment_survives(driver)
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
