"""Hostile code against the executor running as an unprivileged user (as on Lambda, where the
runtime is not root): rlimits, timeouts, process cleanup, output caps, /proc protections and
the scrubbed environment. After each attack the same session must keep working.

Run as root, the code runs as a dedicated sandbox user; run as a normal user (CI without
root), as that user — every defence here holds for any non-root uid, except the fork bomb's
process count, which needs a uid of its own and is skipped loudly."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import UnprivilegedUser
from tests.security.environment import (
    SECRET,
    Driver,
    assert_still_serving,
    environment_processes,
    only_the_environment_survives,
)

pytestmark = [pytest.mark.security, pytest.mark.slow]

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


@pytest.mark.attack(
    "rlimits and timeouts",
    "a busy loop that ignores SIGTERM, SIGXCPU and SIGINT",
    "timeout at the wall clock, the whole tree killed; the environment keeps serving",
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
    assert not only_the_environment_survives(driver)
    assert_still_serving(driver)


@pytest.mark.attack(
    "rlimits and timeouts",
    "allocate 10 GB",
    "memory_exceeded (address-space rlimit); the environment keeps serving",
)
def test_a_huge_allocation_is_memory_exceeded(driver: Driver) -> None:
    result = driver.run("blob = bytearray(10**10)")
    assert result["status"] == "memory_exceeded"
    assert "memory limit" in result["error"]["value"]
    assert_still_serving(driver)


@pytest.mark.attack(
    "rlimits and timeouts",
    "a fork bomb",
    "stopped by the process rlimit and the timeout, every process killed",
)
def test_a_fork_bomb_is_contained(driver: Driver, unprivileged_user: UnprivilegedUser) -> None:
    # `unprivileged_user`: RLIMIT_NPROC counts every process of the uid, so the bomb must not
    # share its uid with the test runner.
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = driver.run(code, within_s=3 + 15, timeout_ms=3000)
    assert result["status"] in ("timeout", "error")
    assert not only_the_environment_survives(driver)
    assert_still_serving(driver)


@pytest.mark.attack(
    "process hygiene",
    "a double-forked `setsid` daemon",
    "killed after the run (orphans land on the zygote, a subreaper)",
)
def test_a_double_forked_setsid_daemon_is_gone_after_the_run(driver: Driver) -> None:
    code = "import os, time\n" + START_SETSID_DAEMON + "int(os.read(r, 32))"
    result = driver.run(code)
    daemon = int(result["result"]["text/plain"])
    assert daemon not in only_the_environment_survives(driver)
    assert_still_serving(driver)


@pytest.mark.attack(
    "process hygiene",
    "a thread that starts a daemon after its cell ended",
    "killed after the next run",
)
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
    while not environment_processes(driver) - expected:
        assert time.monotonic() < deadline, "the background thread never started its daemon"
        time.sleep(0.05)
    assert_still_serving(driver)
    assert not only_the_environment_survives(driver)


@pytest.mark.attack(
    "process hygiene",
    "kill the zygote after starting a daemon",
    "an error for the run, no process left, a new zygote for the next run",
)
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
    assert not only_the_environment_survives(driver)
    assert_still_serving(driver)  # a new zygote
    assert driver.info()["zygote_pid"] != old_zygote


@pytest.mark.attack(
    "output",
    "print 100 MB and write 10 MB straight to fd 1",
    "stdout capped at 1 MB and flagged; the trusted parent grows a few MB at most",
)
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
    assert_still_serving(driver)


@pytest.mark.attack(
    "process hygiene",
    "read `/proc/<pid>/environ`, `mem`, `maps` of the zygote and the trusted parent",
    "denied: both are non-dumpable",
)
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


@pytest.mark.attack(
    "process hygiene",
    "look for AWS credentials or the runtime's variables in `os.environ` and `/proc/self/environ`",
    "none: the zygote starts with a scrubbed environment",
)
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
