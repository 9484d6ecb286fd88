"""Isolation helpers of the local stack: which directories block other users, what the stack
admits it cannot protect, the kill that takes an environment's whole process tree (escaped
daemons included) and nothing else, and uids that each stack owns while it holds them."""

import os
import subprocess
import sys
import time

import psutil
import pytest

from local.isolation import (
    IsolationMode,
    UidPool,
    blocked_ancestors,
    describe_gaps,
    kill_process_tree,
)


def test_directories_other_users_cannot_traverse_are_found(tmp_path):
    private = tmp_path / "private"
    target = private / "inner" / "python"
    target.mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    private.chmod(0o700)
    assert private in blocked_ancestors(target)
    private.chmod(0o711)  # traverse-only is enough
    assert private not in blocked_ancestors(target)


def test_missing_protections_are_spelled_out():
    full = " ".join(describe_gaps(IsolationMode(run_as_pool_uids=True, private_mounts=True)))
    assert "moto" in full and "signal" not in full
    gaps = " ".join(describe_gaps(IsolationMode(run_as_pool_uids=False, private_mounts=False)))
    assert "signal" in gaps and "/tmp" in gaps


ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="SKIPPED LOUDLY: uid ownership between stacks needs root (run the suite as root)",
)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_dead(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


# A subreaper (as the environment worker is) whose grandchild leaves by double fork + setsid.
_SUBREAPER_WITH_DAEMON = (
    "import ctypes, os, sys, time\n"
    "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        print(os.getpid(), flush=True); time.sleep(300)\n"
    "    os._exit(0)\n"
    "time.sleep(300)\n"
)


def test_killing_an_environment_tree_takes_its_escaped_daemons_and_nothing_else():
    environment = subprocess.Popen(
        [sys.executable, "-c", _SUBREAPER_WITH_DAEMON],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        daemon = int(environment.stdout.readline())
        assert daemon in [p.pid for p in psutil.Process(environment.pid).children(recursive=True)]
        assert kill_process_tree(environment.pid) >= 2
        environment.wait(timeout=30)
        assert _wait_dead(daemon)
        assert _alive(bystander.pid)  # same uid, not in the tree: untouched
    finally:
        for process in (environment, bystander):
            process.kill()
            process.wait()


@ROOT_ONLY
def test_two_stacks_hold_disjoint_uids_and_a_crashed_holder_frees_them(tmp_path):
    first, second = UidPool(3, tmp_path), UidPool(4, tmp_path)
    try:
        mine = [first.acquire() for _ in range(3)]
        theirs = [second.acquire() for _ in range(3)]
        assert not {i.uid for i in mine} & {i.uid for i in theirs}
        assert not {i.name for i in mine} & {i.name for i in theirs}
        first.release(mine[0])
        assert second.acquire().name == mine[0].name  # released: free for anyone
    finally:
        first.close()
        second.close()
    # Closing a pool (or its process dying) drops every lock it held.
    again = UidPool(3, tmp_path)
    try:
        assert again.acquire().name == min((*mine, *theirs), key=_index).name
    finally:
        again.close()


def _index(identity) -> int:
    return int(identity.name.rsplit("-", 1)[1])


@ROOT_ONLY
def test_a_uid_that_still_runs_a_process_is_not_handed_out(tmp_path):
    probe = UidPool(1, tmp_path)
    first = probe.acquire()
    probe.close()
    stray = subprocess.Popen(
        ["sleep", "300"], user=first.uid, group=first.gid, start_new_session=True, cwd="/"
    )
    pool = UidPool(1, tmp_path)
    try:
        assert pool.acquire().name != first.name
        assert stray.poll() is None  # skipped, not killed
    finally:
        pool.close()
        stray.kill()
        stray.wait()
