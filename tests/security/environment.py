"""One execution environment (`python -m lambdas.executor.serve`) run as the sandbox user, and
what the hostile-code tests look at around it: its processes, and whether it still serves."""

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
from typing import Any

from tests.conftest import REPO_ROOT, UnprivilegedUser
from tests.functional.executor_helpers import checked

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
        for pid in [*descendants(self.process.pid), self.process.pid]:
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


def proc_stat(pid: int | str) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(entry)) is not None:
            children.setdefault(stat[1], []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def user_processes(uid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
        except OSError:
            continue
        stat = proc_stat(entry)
        if stat is not None and stat[0] not in ("Z", "X"):
            found.add(int(entry))
    return found


def environment_processes(driver: Driver) -> set[int]:
    """Live processes hostile code may have left: every process of a dedicated sandbox uid;
    as the current user (shared with pytest), the environment's tree, which holds everything
    it started (`serve` is a child subreaper)."""
    if driver.user.dedicated:
        return user_processes(driver.user.uid)
    tree = descendants(driver.process.pid) | {driver.process.pid}
    return {pid for pid in tree if (stat := proc_stat(pid)) and stat[0] not in ("Z", "X")}


def only_the_environment_survives(driver: Driver) -> set[int]:
    """Processes hostile code left that are neither the driver, its zygote, a live worker
    nor the spare worker, after giving SIGKILLed ones time to disappear."""
    info = driver.info()
    expected = {info["pid"], *info["environment_pids"]}
    deadline = time.monotonic() + 15
    while True:
        extra = environment_processes(driver) - expected
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)


def assert_still_serving(driver: Driver) -> None:
    result = driver.run("still_here = 'yes'\nstill_here")
    assert result["result"] == {"text/plain": "'yes'"}
