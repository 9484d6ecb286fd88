"""Issue 11's siblings, hunted on purpose: code that forks, spawns, leaves threads and timers
behind, takes over its signals, streams, fds and rlimits, exits in every way, or prints what
nobody expects. Run as the sandbox user (see tests/security/environment.py).

Every run must return exactly one result, `success == (status == "ok")`, a non-ok status
always carries an error with a name, and the session keeps working on the next run — with its
variables where the worker survived. Every wait is bounded by a deadline of its own."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import UnprivilegedUser
from tests.security.environment import Driver, only_the_environment_survives

pytestmark = [pytest.mark.security, pytest.mark.slow]

STATUSES = ("ok", "error", "timeout", "memory_exceeded", "interrupted")


def answer(result: dict[str, Any]) -> dict[str, Any]:
    """The invariants every run keeps, whatever the code did."""
    assert result["status"] in STATUSES, result
    assert result["success"] == (result["status"] == "ok"), result
    if result["status"] != "ok":
        assert result["error"] is not None and result["error"]["name"], result
    return result


def run(driver: Driver, code: str, **fields: Any) -> dict[str, Any]:
    return answer(driver.run(code, **fields))


def keeps_working(driver: Driver, kept: str | None = None) -> None:
    """The next run answers `print(1)` correctly; `kept` (a variable's repr) is still there
    when the worker survived the attack."""
    follow = run(driver, "print(1)")
    assert follow["status"] == "ok" and follow["stdout"] == "1\n", follow
    if kept is not None:
        assert run(driver, "kept")["result"] == {"text/plain": kept}


def error_name(result: dict[str, Any]) -> str:
    return str(result["error"]["name"]) if result["error"] else ""


# -- forks ------------------------------------------------------------------------------------


@pytest.mark.attack(
    "process hygiene",
    "`os.fork()` whose child returns from the cell",
    "only the worker answers; later runs and the variables are right",
)
def test_a_forked_child_that_returns_from_the_cell_never_answers(driver: Driver) -> None:
    run(driver, "kept = 'before the fork'")
    forked = run(driver, "import os, time\nif os.fork():\n    time.sleep(0.3)\n'worker'")
    assert forked["result"] == {"text/plain": "'worker'"}, forked
    for code, value in (("21 * 2", "42"), ("'next'", "'next'")):
        assert run(driver, code)["result"] == {"text/plain": value}
    keeps_working(driver, kept="'before the fork'")


@pytest.mark.attack(
    "worker protocol",
    "a libc `fork()` (no at-fork hook) whose child keeps the worker's channel and answers first",
    "its frame is refused (the parent checks the sender); the worker's answer counts",
)
def test_a_fork_that_bypasses_python_cannot_answer_for_the_worker(driver: Driver) -> None:
    # libc's fork runs no at-fork hook: the child keeps the channel, so only the parent's
    # check of who sent a frame keeps its answer out (the worker answers later on purpose).
    run(driver, "kept = 'before the fork'")
    code = (
        "import ctypes, time\n"
        "child = ctypes.CDLL(None).fork() == 0\n"
        "if not child:\n    time.sleep(0.5)\n"
        "'child' if child else 'worker'"
    )
    assert run(driver, code)["result"] == {"text/plain": "'worker'"}
    assert run(driver, "'next'")["result"] == {"text/plain": "'next'"}
    keeps_working(driver, kept="'before the fork'")


@pytest.mark.attack(
    "rlimits and timeouts",
    "fork until `OSError`, then finish the cell",
    "the cell ends ok, every child killed; the next run is right, variables kept",
)
def test_a_fork_bomb_until_oserror_leaves_the_next_run_correct(
    driver: Driver, unprivileged_user: UnprivilegedUser
) -> None:
    # `unprivileged_user`: RLIMIT_NPROC counts every process of the uid.
    run(driver, "kept = 'before the bomb'")
    code = "import os\ntry:\n    while True:\n        os.fork()\nexcept OSError:\n    pass\n'over'"
    bomb = run(driver, code, within_s=10 + 30, timeout_ms=10_000)
    assert bomb["status"] == "ok" and bomb["result"] == {"text/plain": "'over'"}, bomb
    assert not only_the_environment_survives(driver)
    keeps_working(driver, kept="'before the bomb'")


@pytest.mark.attack(
    "process hygiene",
    "multiprocessing pools with fork, spawn and forkserver, twice",
    "they work; their helpers are killed after each run",
)
def test_multiprocessing_pools_work_with_every_start_method(driver: Driver) -> None:
    code = (
        "import multiprocessing as mp\n"
        "def square(x):\n    return x * x\n"
        "found = {}\n"
        "with mp.get_context('fork').Pool(2) as pool:\n"
        "    found['fork'] = pool.map(square, [1, 2, 3])\n"
        "for method in ('spawn', 'forkserver'):\n"
        "    with mp.get_context(method).Pool(2) as pool:\n"
        "        found[method] = pool.map(abs, [-1, -2, -3])\n"
        "found"
    )
    expected = "{'fork': [1, 4, 9], 'spawn': [1, 2, 3], 'forkserver': [1, 2, 3]}"
    for _ in range(2):  # the helpers the first run started were killed after it
        pools = run(driver, code, within_s=60, timeout_ms=30_000)
        assert pools["result"] == {"text/plain": expected}, pools
        assert pools["stderr"] == "", pools["stderr"]
    assert not only_the_environment_survives(driver)
    keeps_working(driver)


FIND_CHANNEL = (
    "import json, os, struct, time\n"
    "def channel():\n"
    "    for fd in os.listdir('/proc/self/fd'):\n"
    "        try:\n"
    "            if os.readlink(f'/proc/self/fd/{fd}').startswith('socket:'):\n"
    "                return int(fd)\n"
    "        except OSError:\n"
    "            pass\n"
)


@pytest.mark.attack(
    "worker protocol",
    "write a forged result frame or garbage into the worker's channel, or close it",
    "a forged frame never answers a later run; garbage or a closed channel is a `WorkerCrashed` "
    "error within seconds; the session goes on",
)
def test_a_cell_that_writes_into_or_closes_its_own_channel(driver: Driver) -> None:
    # The worker is the user's own process: it can lie about its own run, but never make a
    # later run take an earlier run's answer, nor leave the session answering out of step.
    run(driver, "kept = 'channel'")
    forged = (
        "frame = json.dumps({'kind': 'result', 'cell': {'status': 'ok', 'stdout': 'forged'}})\n"
        "os.write(channel(), struct.pack('!I', len(frame)) + frame.encode())\n"
        "time.sleep(0.5)\nprint('real')"
    )
    assert run(driver, FIND_CHANNEL + forged)["stdout"] == "real\n"
    assert run(driver, "'in step'")["result"] == {"text/plain": "'in step'"}
    garbage = run(driver, FIND_CHANNEL + "os.write(channel(), b'garbage, not a frame')")
    assert error_name(garbage) == "WorkerCrashed" and "not valid" in garbage["error"]["value"]
    keeps_working(driver)
    closed = run(driver, FIND_CHANNEL + "os.close(channel())\ntime.sleep(5)")
    assert error_name(closed) == "WorkerCrashed", closed
    assert "closed its channel" in closed["error"]["value"], closed
    assert closed["duration_ms"] < 3000
    keeps_working(driver)


# -- leftovers of a cell: threads, timers, signal handlers ---------------------------------------


@pytest.mark.attack(
    "process hygiene",
    "threads that keep printing after their cell; a timer that exits the worker between runs",
    "later runs answer right, variables kept; a dead worker is replaced",
)
def test_threads_still_running_after_the_cell(driver: Driver) -> None:
    run(driver, "kept = 'threads'")
    started = run(
        driver,
        "import os, threading, time\n"
        "def chatter():\n"
        "    for i in range(100):\n"
        "        print('thread', i)\n"
        "        os.write(2, b'fd ')\n"
        "        time.sleep(0.01)\n"
        "threading.Thread(target=chatter, daemon=True).start()",
    )
    assert started["status"] == "ok"
    for _ in range(3):
        follow = run(driver, "print(1)")
        assert follow["status"] == "ok" and "1\n" in follow["stdout"]
    assert run(driver, "kept")["result"] == {"text/plain": "'threads'"}
    # A thread that ends the worker between runs: the next run gets a working worker.
    run(driver, "import os, threading, time\nthreading.Timer(0.2, os._exit, (3,)).start()")
    time.sleep(0.6)
    keeps_working(driver)


@pytest.mark.attack(
    "process hygiene",
    "`signal.alarm`, handlers for SIGTERM and SIGINT, SIGUSR1 ignored, an alarm left running",
    "handled as the code says; the timeout still ends the run with its output; a left-over alarm "
    "never rings in a later cell",
)
def test_alarms_and_signal_handlers_of_user_code(driver: Driver) -> None:
    run(driver, "kept = 'signals'")
    handled = run(
        driver,
        "import signal, time\n"
        "def ring(*_):\n    raise RuntimeError('alarm rang')\n"
        "signal.signal(signal.SIGALRM, ring)\n"
        "signal.signal(signal.SIGTERM, lambda *_: None)\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "signal.alarm(1)\ntime.sleep(5)",
    )
    assert handled["status"] == "error" and error_name(handled) == "RuntimeError", handled
    # A timer the cell left running does not go off in a later cell.
    run(driver, "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_DFL)\nsignal.alarm(1)")
    later = run(driver, "import time\ntime.sleep(1.5)\nkept")
    assert later["result"] == {"text/plain": "'signals'"}, later
    # The signal the parent uses to collect a timed-out cell's output, ignored.
    ignored = run(
        driver,
        "import signal, time\nsignal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
        "print('before')\ntime.sleep(60)",
        within_s=2 + 20,
        timeout_ms=2000,
    )
    assert ignored["status"] == "timeout" and ignored["stdout"] == "before\n", ignored
    assert ignored["duration_ms"] < 2000 + 1500
    # The default action of SIGALRM ends the worker: said so, by its signal.
    rang = run(driver, "import signal, time\nsignal.alarm(1)\ntime.sleep(5)")
    assert error_name(rang) == "WorkerCrashed" and "SIGALRM" in rang["error"]["value"], rang
    keeps_working(driver)


@pytest.mark.attack(
    "process hygiene",
    "the cell sends SIGKILL, SIGTERM or SIGSEGV to its worker, or SIGKILL to its process group",
    "a `WorkerCrashed` error naming the signal; the next run works",
)
def test_a_cell_that_kills_its_own_worker(driver: Driver) -> None:
    for sig in ("SIGKILL", "SIGTERM", "SIGSEGV"):
        killed = run(driver, f"import os, signal\nos.kill(os.getpid(), signal.{sig})")
        assert killed["status"] == "error", killed
        assert error_name(killed) == "WorkerCrashed" and sig in killed["error"]["value"], killed
        keeps_working(driver)
    group = run(driver, "import os, signal\nos.killpg(0, signal.SIGKILL)")
    assert error_name(group) == "WorkerCrashed", group
    keeps_working(driver)


# -- the process's own state: streams, fds, rlimits, recursion ------------------------------------


@pytest.mark.attack(
    "process hygiene",
    "replace, close or set to None `sys.stdout` / `sys.stderr`",
    "the next run's output is captured again, variables kept",
)
def test_stdout_replaced_or_closed(driver: Driver) -> None:
    run(driver, "kept = 'streams'")
    for attack in (
        "import io, sys\nsys.stdout = io.StringIO()\nprint('swallowed')",
        "import sys\nsys.stdout.close()",
        "import sys\nsys.stdout = None\nsys.stderr = None",
    ):
        run(driver, attack)
        follow = run(driver, "import sys\nprint(1)\nprint(2, file=sys.stderr)")
        assert follow["stdout"] == "1\n" and follow["stderr"] == "2\n", (attack, follow)
    keeps_working(driver, kept="'streams'")


@pytest.mark.attack(
    "process hygiene",
    "`dup2` /dev/null over fds 0, 1 and 2, or close them",
    "the next run's output (Python and subprocesses) is captured again",
)
def test_dup2_over_the_standard_fds(driver: Driver) -> None:
    run(driver, "kept = 'fds'")
    for attack in (
        "import os\nnull = os.open(os.devnull, os.O_WRONLY)\n"
        "os.dup2(null, 1)\nos.dup2(null, 2)\nos.dup2(null, 0)",
        "import os\nos.close(0)\nos.close(1)\nos.close(2)",
    ):
        run(driver, attack)
        follow = run(driver, "import os\nos.system('echo out; echo err >&2')\nprint('py')")
        assert "out\n" in follow["stdout"] and "py\n" in follow["stdout"], (attack, follow)
        assert "err\n" in follow["stderr"], (attack, follow)
    keeps_working(driver, kept="'fds'")


@pytest.mark.attack(
    "rlimits and timeouts",
    "raise RLIMIT_AS, NPROC, NOFILE, FSIZE back to unlimited; lower them",
    "raising fails (`ValueError`), memory stays capped; lowered limits end with the cell",
)
def test_rlimits_cannot_be_raised_back_and_lowered_ones_do_not_break_the_worker(
    driver: Driver,
) -> None:
    run(driver, "kept = 'rlimits'")
    for name in ("RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_FSIZE"):
        raised = run(
            driver,
            f"import resource\nresource.setrlimit(resource.{name}, "
            "(resource.RLIM_INFINITY, resource.RLIM_INFINITY))",
        )
        assert raised["status"] == "error" and error_name(raised) == "ValueError", (name, raised)
    assert run(driver, "blob = bytearray(10**10)")["status"] == "memory_exceeded"
    lowered = run(
        driver,
        "import resource\n"
        "for name, soft in (('RLIMIT_NOFILE', 4), ('RLIMIT_FSIZE', 0), ('RLIMIT_AS', 1 << 20)):\n"
        "    limit = getattr(resource, name)\n"
        "    resource.setrlimit(limit, (soft, resource.getrlimit(limit)[1]))\n"
        "'lowered'",
    )
    assert lowered["status"] in ("ok", "memory_exceeded", "error"), lowered
    follow = run(driver, "handles = [open(f'f{i}.txt', 'w') for i in range(8)]\n'opened'")
    assert follow["result"] == {"text/plain": "'opened'"}, follow
    keeps_working(driver, kept="'rlimits'")


@pytest.mark.attack(
    "rlimits and timeouts",
    "recursion limit raised to 100,000 and recursed into, or lowered to nothing",
    "a `RecursionError` with a short traceback; the worker lives",
)
def test_the_recursion_limit_raised_or_lowered(driver: Driver) -> None:
    run(driver, "kept = 'recursion'")
    deep = run(
        driver,
        "import sys\nsys.setrecursionlimit(100_000)\ndef down(n):\n    return down(n + 1)\ndown(0)",
        within_s=30 + 30,
    )
    assert deep["status"] == "error" and error_name(deep) == "RecursionError", deep
    assert len(deep["error"]["traceback"]) < 40
    low = run(driver, "import inspect, sys\nsys.setrecursionlimit(len(inspect.stack()) + 8)")
    assert low["status"] in ("ok", "error"), low
    keeps_working(driver, kept="'recursion'")


# -- every way out -------------------------------------------------------------------------------


@pytest.mark.attack(
    "process hygiene",
    "`sys.exit()`, `SystemExit(3)`, `os._exit(1)`",
    "each a clear error (`SystemExit` keeps the worker; `os._exit` is `WorkerCrashed` with what "
    "it printed)",
)
def test_every_way_to_exit_is_a_clear_result(driver: Driver) -> None:
    run(driver, "kept = 'exits'")
    for code, value in (("import sys\nsys.exit()", ""), ("raise SystemExit(3)", "3")):
        result = run(driver, code)
        assert result["status"] == "error" and error_name(result) == "SystemExit", result
        assert result["error"]["value"] == value
        assert result["stderr"] == "", result["stderr"]  # no terminal advice, no host path
        assert run(driver, "kept")["result"] == {"text/plain": "'exits'"}  # the worker lives
    exited = run(driver, "import os\nprint('bye')\nos._exit(1)")
    assert error_name(exited) == "WorkerCrashed" and "code 1" in exited["error"]["value"]
    assert exited["stdout"] == "bye\n"
    keeps_working(driver)


# -- output nobody expects -------------------------------------------------------------------------


@pytest.mark.attack(
    "output",
    "one 50 MB line through `print`, `sys.stdout.write` and `os.write`",
    "capped at 1 MB and flagged, within seconds",
)
def test_a_fifty_megabyte_line_to_stdout(driver: Driver) -> None:
    run(driver, "kept = 'big line'")
    for code in (
        "print('x' * 50_000_000)",
        "import sys\nsys.stdout.write('y' * 50_000_000)",
        "import os\nos.write(1, b'z' * 50_000_000)",
    ):
        started = time.monotonic()
        result = run(driver, code, within_s=60)
        assert result["status"] == "ok" and result["stdout_truncated"] is True, code
        assert 0 < len(result["stdout"].encode()) <= 1024 * 1024
        assert time.monotonic() - started < 30
    keeps_working(driver, kept="'big line'")


@pytest.mark.attack(
    "output",
    "output that is not valid UTF-8: raw bytes, lone surrogates, in streams and display data",
    "an ok result, the text kept readable",
)
def test_output_that_is_not_valid_utf8(driver: Driver) -> None:
    result = run(
        driver,
        "import os, sys\nfrom IPython.display import display\n"
        "os.write(1, b'\\xff\\xfe raw\\n')\n"
        "print('lone \\udcff surrogate')\n"
        "sys.stderr.write('\\ud800 err\\n')\n"
        "display({'text/plain': 'shown \\udc80'}, raw=True)\n"
        "b'\\xff\\xfe'",
    )
    assert result["status"] == "ok", result
    assert "raw" in result["stdout"] and "surrogate" in result["stdout"]
    assert result["result"] == {"text/plain": "b'\\xff\\xfe'"}
    keeps_working(driver)


@pytest.mark.attack(
    "output",
    "1000 `display()` calls",
    "all 1000 outputs, in order",
)
def test_a_thousand_display_calls(driver: Driver) -> None:
    code = "from IPython.display import display\nfor i in range(1000):\n    display(i)"
    result = run(driver, code)
    assert result["status"] == "ok"
    shown = [o for o in result["outputs"] if o["output_type"] == "display_data"]
    assert len(shown) == 1000 and shown[-1]["data"] == {"text/plain": "999"}
    keeps_working(driver)


@pytest.mark.attack(
    "output",
    "an endless generator written to stdout",
    "timeout at the wall clock, output capped at 1 MB",
)
def test_a_generator_of_endless_output(driver: Driver) -> None:
    for code in (
        "import sys\ndef forever():\n    while True:\n        yield 'x' * 1000 + '\\n'\n"
        "sys.stdout.writelines(forever())",
        "def forever():\n    n = 0\n    while True:\n        n += 1\n        yield n\n"
        "for n in forever():\n    print(n)",
    ):
        result = run(driver, code, within_s=2 + 20, timeout_ms=2000)
        assert result["status"] == "timeout" and result["stdout"], result["error"]
        # Capped (how much a busy box prints in 2 s varies): never more than the cap.
        assert len(result["stdout"].encode()) <= 1024 * 1024
        assert result["duration_ms"] < 2000 + 1500
    keeps_working(driver)
