"""The local stack's environment pool (Lambda tenant-isolation shape), with a light stand-in
worker process: one tenant per environment, warm reuse, scale-out per tenant, LRU and idle
eviction, crash recovery and no process left behind."""

import json
import os
import threading
import time
import uuid

import psutil
import pytest

from lambdas.shared.models import ExecutorInvocation
from local.environments import EnvironmentPool, PoolSettings
from local.isolation import IsolationMode

NO_ISOLATION = IsolationMode(run_as_pool_uids=False, private_mounts=False)


def _pool(tmp_path, **overrides):
    settings = {
        "tmp_root": tmp_path,
        "spares": 0,
        "worker_module": "tests.unit.fake_environment_worker",
        **overrides,
    }
    return EnvironmentPool(PoolSettings(**settings), NO_ISOLATION)


def _run(pool, tenant, code="1"):
    invocation = ExecutorInvocation(
        execution_id=uuid.uuid4().hex, tenant_id=tenant, session_id=tenant, code=code
    )
    response = pool.invoke(invocation)
    if not response.result.success:
        return response.result
    return json.loads(response.result.stdout)


@pytest.fixture
def pool(tmp_path):
    instance = _pool(tmp_path)
    yield instance
    instance.close()


def test_each_tenant_gets_its_own_warm_environment_that_serves_nobody_else(pool):
    first = _run(pool, "session-a")
    assert _run(pool, "session-a")["pid"] == first["pid"]  # warm reuse
    other = _run(pool, "session-b")
    assert other["pid"] != first["pid"]
    assert _run(pool, "session-a")["served"] == ["session-a"]
    assert other["served"] == ["session-b"]


def test_a_busy_tenant_scales_out_to_a_second_environment(tmp_path):
    pool = _pool(tmp_path, per_tenant=2)
    release = tmp_path / "release"
    try:
        first_pid = _run(pool, "principal")["pid"]  # warm
        blocked = threading.Thread(target=_run, args=(pool, "principal", f"wait:{release}"))
        blocked.start()
        deadline = time.monotonic() + 60
        while pool.stats()["busy"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = _run(pool, "principal")  # the first environment is still busy
        release.touch()
        blocked.join()
        assert second["pid"] != first_pid
        assert second["served"] == ["principal"]
        assert pool.stats()["environments"] == 2
    finally:
        release.touch()
        pool.close()


def test_least_recently_used_environment_is_evicted_at_the_cap(tmp_path):
    pool = _pool(tmp_path, max_environments=2)
    try:
        first = _run(pool, "t1")["pid"]
        _run(pool, "t2")
        _run(pool, "t3")  # evicts t1, the least recently used
        assert pool.stats()["environments"] == 2
        _wait_gone(first)
        assert _run(pool, "t1")["pid"] != first  # a new environment, cold
    finally:
        pool.close()


def test_idle_environments_are_stopped(tmp_path):
    pool = _pool(tmp_path, idle_seconds=0.5)
    try:
        pid = _run(pool, "t1")["pid"]
        _wait_gone(pid)
        assert pool.stats()["environments"] == 0
    finally:
        pool.close()


def test_a_crashed_environment_gives_an_error_result_and_is_replaced(pool):
    pid = _run(pool, "t1")["pid"]
    failed = _run(pool, "t1", "crash")
    assert failed.status == "error"
    assert "crashed" in failed.error.value
    _wait_gone(pid)
    assert _run(pool, "t1")["pid"] != pid


def test_a_spare_environment_goes_to_a_new_tenant_and_close_leaves_no_process(tmp_path):
    pool = _pool(tmp_path, spares=1)
    deadline = time.monotonic() + 60
    while pool.stats()["spares"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.stats()["spares"] == 1
    spare_pid = pool._spares[0].info["pid"]
    served = _run(pool, "fresh")
    assert served == {"pid": spare_pid, "served": ["fresh"]}  # no cold start on the call path
    pids = [served["pid"]] + [spare.info["pid"] for spare in pool._spares]
    pool.close()
    for pid in pids:
        _wait_gone(pid)


def _wait_gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive")


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="SKIPPED LOUDLY: two stacks' environments on their own uids need root",
)
def test_two_stacks_as_root_use_disjoint_uids_and_never_kill_each_others_environments(
    tmp_path,
):
    own_uids = IsolationMode(run_as_pool_uids=True, private_mounts=False)
    settings = {"spares": 0, "worker_module": "tests.unit.fake_environment_worker"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    os.chmod(tmp_path, 0o711)
    first = EnvironmentPool(PoolSettings(tmp_root=tmp_path / "a", **settings), own_uids)
    second = EnvironmentPool(PoolSettings(tmp_root=tmp_path / "b", **settings), own_uids)
    try:
        mine = [_run(first, f"a{n}") for n in range(2)]
        theirs = [_run(second, f"b{n}") for n in range(2)]
        assert all("uid" in served for served in mine + theirs), "workers did not drop to a uid"
        assert not {s["uid"] for s in mine} & {s["uid"] for s in theirs}
        first.close()  # releases its uids and kills its environments
        for served in mine:
            _wait_gone(served["pid"])
        for served in theirs:
            assert psutil.pid_exists(served["pid"])
            assert _run(second, served["served"][0])["pid"] == served["pid"]  # still warm
    finally:
        first.close()
        second.close()


def test_lambdas_six_megabyte_limit_holds_for_the_invocation_and_the_response(pool):
    from lambdas.api.adapters.executor import RESULT_TOO_LARGE_MESSAGE
    from lambdas.api.errors import PayloadTooLarge
    from local.lambda_limits import LAMBDA_SYNC_PAYLOAD_MAX_BYTES

    started = pool.stats()["started_total"]
    # What the API's Lambda adapter raises for RequestEntityTooLargeException: a 413.
    with pytest.raises(PayloadTooLarge):
        _run(pool, "t1", "#" + "x" * LAMBDA_SYNC_PAYLOAD_MAX_BYTES)
    assert pool.stats()["started_total"] == started  # refused before any environment ran
    pid = _run(pool, "t1")["pid"]
    answer = _run(pool, "t1", f"big:{LAMBDA_SYNC_PAYLOAD_MAX_BYTES}")
    assert answer.status == "error"
    assert answer.error.value == RESULT_TOO_LARGE_MESSAGE  # Function.ResponseSizeTooLarge
    # The function itself returned normally: its environment stays warm.
    assert _run(pool, "t1", f"big:{LAMBDA_SYNC_PAYLOAD_MAX_BYTES // 2}")["pid"] == pid
