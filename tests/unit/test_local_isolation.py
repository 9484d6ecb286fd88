"""Isolation helpers of the local stack: which directories block other users, what the stack
admits it cannot protect, and the sweep that leaves no process of a retired environment uid."""

import os
import subprocess
import time

import pytest

from local.isolation import IsolationMode, blocked_ancestors, describe_gaps, kill_uid_processes


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


@pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another uid needs root")
def test_retiring_a_uid_kills_every_process_it_still_has():
    uid = 64_999
    detached = subprocess.Popen(
        ["sleep", "300"], user=uid, group=uid, start_new_session=True, cwd="/"
    )
    try:
        assert kill_uid_processes(uid) >= 1
        deadline = time.monotonic() + 30
        while detached.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert detached.returncode == -9
        assert kill_uid_processes(uid) == 0
    finally:
        if detached.poll() is None:
            detached.kill()
