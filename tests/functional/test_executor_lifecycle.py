"""Environment lifecycle: started from a short-lived thread (as an API background thread or an
HTTP request thread does), it keeps serving; when its parent process dies, every process of
the environment goes with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import REPO_ROOT

SCRIPT = """
import json, os, threading
from lambdas.executor import handler

def event(code):
    return {"execution_id": "e", "tenant_id": "t", "session_id": "s-life", "code": code}

first = {}
thread = threading.Thread(target=lambda: first.update(handler.handler(event("x = 41"), None)))
thread.start()
thread.join()
answer = handler.handler(event("x + 1"), None)
pids = handler._get_engine().environment_pids()
print(json.dumps({"result": answer["result"]["result"], "pids": pids}), flush=True)
os._exit(0)  # dies without any cleanup
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_environment_outlives_its_starting_thread_and_dies_with_its_parent(tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), LCI_TMP_ROOT=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["result"] == {"text/plain": "42"}
    assert len(report["pids"]) >= 2  # zygote and the session worker at least
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in report["pids"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in report["pids"] if _alive(pid)]


def _reaped(pid: int, timeout_s: float = 5.0) -> bool:
    """Gone from the process table: not even a zombie waiting for its parent."""
    deadline = time.monotonic() + timeout_s
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    return not os.path.exists(f"/proc/{pid}")


def test_least_recently_used_worker_is_evicted_and_reaped_at_the_cap(tmp_path) -> None:
    from lambdas.executor.host.engine import Engine
    from lambdas.executor.settings import ExecutorSettings
    from tests.functional.executor_helpers import checked, invocation

    engine = Engine(ExecutorSettings(LCI_TMP_ROOT=str(tmp_path), LCI_MAX_WORKERS=2))
    try:
        for session in ("s-a", "s-b"):
            checked(engine.invoke(invocation("x = 1", session)))
        first = engine.worker_pids()["s-a"]
        checked(engine.invoke(invocation("x = 1", "s-c")))  # a third session: s-a goes
        assert sorted(engine.worker_pids()) == ["s-b", "s-c"]
        assert _reaped(first)  # the zygote reaps it without being asked
        again = checked(engine.invoke(invocation("'back'", "s-a")))
        assert again["result"]["result"] == {"text/plain": "'back'"}
        assert engine.worker_pids()["s-a"] != first and "s-b" not in engine.worker_pids()
    finally:
        engine.shutdown()


def test_a_new_environment_starts_from_the_seeded_font_cache(tmp_path) -> None:
    # An empty /tmp would make matplotlib scan and parse every font while preloading.
    from pathlib import Path

    from lambdas.executor.host.engine import Engine
    from lambdas.executor.sandbox import fontcache
    from lambdas.executor.settings import ExecutorSettings
    from layers.fontcache import write_seed
    from tests.functional.executor_helpers import checked, invocation

    seed_dir = fontcache.seed_directory()
    assert seed_dir is not None
    if not list(Path(seed_dir).glob("fontlist-*.json")):  # `make setup` writes it; else now
        write_seed(sys.executable, [], Path(seed_dir).parent)
    engine = Engine(ExecutorSettings(LCI_TMP_ROOT=str(tmp_path)))
    try:
        code = "import matplotlib.font_manager as fm\nfm.findfont('DejaVu Sans')"
        found = checked(engine.invoke(invocation(code, "s-fonts")))["result"]
        assert "DejaVuSans.ttf" in found["result"]["text/plain"]
        (cached,) = (Path(engine.settings.root) / "config" / "matplotlib").glob("fontlist-*.json")
        # Byte for byte the seed: matplotlib loaded it instead of building (and rewriting) one.
        assert cached.read_bytes() == (Path(seed_dir) / cached.name).read_bytes()
    finally:
        engine.shutdown()
