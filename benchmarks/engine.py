"""Engine benchmark (SPEC §6), side by side in one run on this machine.

    python -m benchmarks.engine [--json] [--runs N]

Rows: a warm Jupyter kernel round trip (jupyter_client + ipykernel, `print(2+2)`, timed in
blocks alternating with the engine's warm runs, so both see the same machine), a Jupyter
kernel start (start_kernel until wait_for_ready answers, 5 runs), a cold
`python -c` importing numpy+pandas, the engine's warm execution in a live session worker
(measured at the handler API, p50 over >= 200 runs, once the zygote's preload is complete), a
new session's first execution (worker forked from the zygote, sandbox applied, first cell run)
both before the zygote's preload completed and after, the environment cold start (zygote ready
to fork, then preload complete), a brand-new environment's first result (empty /tmp, nothing
preloaded: `print(2+2)`, and a cell that imports pandas), and a snapshot + restore of a 40 MB
DataFrame (no transfer; the snapshot includes its digest, which a session run computes to skip
the upload when nothing changed, also reported alone). With --json the last stdout line is one
JSON object with the summary keys.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from lambdas.executor.host.engine import Engine
from lambdas.executor.sandbox import snapshot
from lambdas.executor.settings import ExecutorSettings

TARGETS = {
    "warm_exec_p50_ms": 1.5,
    "worker_fork_p50_ms": 15.0,
    "cold_start_ms": 1000.0,
    "cold_first_exec_ms": 300.0,
    "snapshot_40mb_ms": 80.0,
}
WARM_SPEEDUP_TARGET = 8.0  # warm exec vs the Jupyter kernel's round trip, same run
SIDE_BY_SIDE_BLOCK = 100  # warm runs of each, alternately
PANDAS_CELL = (
    "import pandas as pd\n"
    "frame = pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', 'z']})\n"
    "print(int(frame['a'].sum()))"
)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.median(ordered), p95


def _time_ms(action: Callable[[], Any], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _event(code: str, session_id: str | None) -> dict[str, Any]:
    return {
        "execution_id": uuid.uuid4().hex,
        "tenant_id": session_id or "bench",
        "session_id": session_id,
        "code": code,
    }


@contextlib.contextmanager
def jupyter_round_trip() -> Iterator[Callable[[], None]]:
    """A started Jupyter kernel, as one `print(2+2)` round trip to time (execute request until
    its reply and the kernel's idle status)."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)

        def round_trip() -> None:
            msg_id = client.execute("print(2+2)")
            replied = idle = False
            while not (replied and idle):
                if not idle:
                    msg = client.get_iopub_msg(timeout=30)
                    idle = (
                        msg["parent_header"].get("msg_id") == msg_id
                        and msg["msg_type"] == "status"
                        and msg["content"]["execution_state"] == "idle"
                    )
                if not replied and idle:
                    reply = client.get_shell_msg(timeout=30)
                    replied = reply["parent_header"].get("msg_id") == msg_id

        yield round_trip
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def bench_jupyter_start(runs: int) -> list[float]:
    """A fresh Jupyter kernel until it answers (what the engine's worker fork replaces)."""
    from jupyter_client.manager import KernelManager

    samples = []
    for _ in range(runs):
        manager = KernelManager(kernel_name="python3")
        started = time.perf_counter()
        manager.start_kernel()
        client = manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=120)
            samples.append((time.perf_counter() - started) * 1000)
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    return samples


def bench_subprocess(runs: int) -> list[float]:
    command = [sys.executable, "-c", "import numpy, pandas; print(2+2)"]
    return _time_ms(lambda: subprocess.run(command, check=True, capture_output=True), runs)


def _first_execution(engine: Engine, code: str = "print(2+2)", expected: str = "4\n") -> None:
    response = engine.invoke(_event(code, "bench-" + uuid.uuid4().hex[:8]))
    assert response["result"]["stdout"] == expected, response["result"]


def _new_environment_first_result(root: str, code: str, expected: str) -> float:
    """A brand-new environment receives a new session's cell: ms until its result."""
    started = time.perf_counter()
    engine = Engine(ExecutorSettings(LCI_TMP_ROOT=root))
    try:
        _first_execution(engine, code, expected)
        return (time.perf_counter() - started) * 1000
    finally:
        engine.shutdown()


def bench_engine(runs: int, root: str) -> dict[str, list[float]]:
    engine = Engine(ExecutorSettings(LCI_TMP_ROOT=root))
    try:
        started = time.perf_counter()
        engine.warm_up()
        cold = [(time.perf_counter() - started) * 1000]
        assert engine.wait_until_preloaded()
        preloaded = [(time.perf_counter() - started) * 1000]

        session = "bench-warm"
        event = _event("print(2+2)", session)
        assert engine.invoke(event)["result"]["stdout"] == "4\n"
        # Side by side with the Jupyter kernel, in alternating blocks: a machine that gets
        # busier or quieter during the run slows or speeds both alike, so the ratio holds.
        warm: list[float] = []
        jupyter: list[float] = []
        with jupyter_round_trip() as round_trip:
            _time_ms(round_trip, 20)
            _time_ms(lambda: engine.invoke(event), 50)
            for _ in range(-(-runs // SIDE_BY_SIDE_BLOCK)):
                jupyter.extend(_time_ms(round_trip, SIDE_BY_SIDE_BLOCK))
                warm.extend(_time_ms(lambda: engine.invoke(event), SIDE_BY_SIDE_BLOCK))

        with_spare = []
        for _ in range(30):
            time.sleep(0.1)  # a gap between sessions lets the spare worker get ready
            with_spare.extend(_time_ms(lambda: _first_execution(engine), 1))
        one_shot = []
        for _ in range(30):
            time.sleep(0.1)
            one_shot.extend(_time_ms(lambda: engine.invoke(_event("print(2+2)", None)), 1))
    finally:
        engine.shutdown()
    # The fork itself: no spare, every new session forks its worker on demand from the zygote
    # with everything preloaded and its memory shaped.
    engine = Engine(ExecutorSettings(LCI_TMP_ROOT=root, LCI_PREFORK_WORKER=False))
    try:
        engine.warm_up()
        assert engine.wait_until_preloaded()
        fork = _time_ms(lambda: _first_execution(engine), 30)
        pandas_preloaded = _time_ms(lambda: _first_execution(engine, PANDAS_CELL, "6\n"), 10)
    finally:
        engine.shutdown()
    # Brand-new environments (empty /tmp, nothing preloaded), each with a new session at once.
    fork_early: list[float] = []
    first_exec: list[float] = []
    first_pandas: list[float] = []
    for index in range(5):
        base = os.path.join(root, f"new-{index}")
        first_exec.append(_new_environment_first_result(base + "-print", "print(2+2)", "4\n"))
        first_pandas.append(_new_environment_first_result(base + "-pandas", PANDAS_CELL, "6\n"))
        # A new session's worker forked by a zygote that is ready but has preloaded nothing.
        engine = Engine(ExecutorSettings(LCI_TMP_ROOT=base + "-early", LCI_PREFORK_WORKER=False))
        try:
            engine.warm_up()
            started = time.perf_counter()
            _first_execution(engine)
            fork_early.append((time.perf_counter() - started) * 1000)
        finally:
            engine.shutdown()
    for index in range(2):  # more cold starts: ready to fork, then preload complete
        engine = Engine(ExecutorSettings(LCI_TMP_ROOT=os.path.join(root, f"cold-{index}")))
        try:
            started = time.perf_counter()
            engine.warm_up()
            cold.append((time.perf_counter() - started) * 1000)
            assert engine.wait_until_preloaded()
            preloaded.append((time.perf_counter() - started) * 1000)
        finally:
            engine.shutdown()
    return {
        "warm": warm,
        "jupyter": jupyter,
        "fork": fork,
        "fork_early": fork_early,
        "with_spare": with_spare,
        "one_shot": one_shot,
        "cold": cold,
        "preloaded": preloaded,
        "first_exec": first_exec,
        "first_pandas": first_pandas,
        "pandas_preloaded": pandas_preloaded,
    }


def bench_snapshot(runs: int) -> dict[str, list[float]]:
    """Snapshot + restore excluding transfer: dump (no array copies) and its digest over every
    byte (sandbox/worker.py compares it with the committed snapshot's), then restore from the
    bytes the download would have filled. The second series also counts building those bytes
    in memory (one 40 MB fill, which in production is the network receive); the third is the
    digest alone."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(np.random.default_rng(1).random((1_000_000, 5)), columns=list("abcde"))
    assert frame.memory_usage(index=False).sum() == 40_000_000
    pure: list[float] = []
    with_fill: list[float] = []
    digest: list[float] = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        dumped = snapshot.dump_namespace({"df": frame}, {})
        digest_started = time.perf_counter()
        dumped.digest()
        dumped_at = time.perf_counter()
        blob = dumped.to_bytes()  # stands in for the downloaded bytearray
        filled_at = time.perf_counter()
        restored, problems = snapshot.load_namespace(blob)
        done = time.perf_counter()
        assert not dumped.dropped and not problems and restored["df"].shape == frame.shape
        pure.append(((dumped_at - started) + (done - filled_at)) * 1000)
        with_fill.append((done - started) * 1000)
        digest.append((dumped_at - digest_started) * 1000)
    return {"pure": pure[1:], "with_fill": with_fill[1:], "digest": digest[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a JSON summary last")
    parser.add_argument("--runs", type=int, default=300, help="warm runs (>= 200)")
    args = parser.parse_args()
    runs = max(args.runs, 200)

    with tempfile.TemporaryDirectory(prefix="lci-bench-") as root:
        engine = bench_engine(runs, root)
    jupyter = engine["jupyter"]
    jupyter_start = bench_jupyter_start(5)
    cold_python = bench_subprocess(10)
    snap = bench_snapshot(7)

    rows = [
        ("Jupyter kernel, warm round trip print(2+2)", jupyter),
        ("Jupyter kernel start (start_kernel + wait_for_ready)", jupyter_start),
        ("cold python -c, import numpy+pandas", cold_python),
        ("engine: warm exec print(2+2), live session worker", engine["warm"]),
        ("engine: new session first exec, worker forked now", engine["fork"]),
        ("  same, forked before the zygote's preload", engine["fork_early"]),
        ("  same, a cell importing pandas (preloaded)", engine["pandas_preloaded"]),
        ("engine: new session first exec, spare worker", engine["with_spare"]),
        ("engine: one-shot run (spare worker, discarded)", engine["one_shot"]),
        ("engine: environment cold start (zygote ready)", engine["cold"]),
        ("engine: environment cold start (preload complete)", engine["preloaded"]),
        ("engine: new environment, first print(2+2) result", engine["first_exec"]),
        ("engine: new environment, first pandas cell result", engine["first_pandas"]),
        ("snapshot + digest + restore, 40 MB DataFrame", snap["pure"]),
        ("  same, plus filling the 40 MB download buffer", snap["with_fill"]),
        ("  the digest alone (SHA-256 over 40 MB)", snap["digest"]),
    ]
    print(f"{'measurement':<52} {'p50 ms':>9} {'p95 ms':>9} {'n':>5}")
    for label, samples in rows:
        p50, p95 = _percentiles(samples)
        print(f"{label:<52} {p50:>9.2f} {p95:>9.2f} {len(samples):>5}")
    summary = {
        "warm_exec_p50_ms": round(_percentiles(engine["warm"])[0], 3),
        "worker_fork_p50_ms": round(_percentiles(engine["fork"])[0], 3),
        "worker_fork_before_preload_ms": round(_percentiles(engine["fork_early"])[0], 3),
        "first_pandas_cell_preloaded_ms": round(_percentiles(engine["pandas_preloaded"])[0], 2),
        "cold_start_ms": round(_percentiles(engine["cold"])[0], 1),
        "preload_complete_ms": round(_percentiles(engine["preloaded"])[0], 1),
        "cold_first_exec_ms": round(_percentiles(engine["first_exec"])[0], 1),
        "cold_first_pandas_ms": round(_percentiles(engine["first_pandas"])[0], 1),
        "snapshot_40mb_ms": round(_percentiles(snap["pure"])[0], 2),
        "snapshot_digest_40mb_ms": round(_percentiles(snap["digest"])[0], 2),
        "jupyter_warm_p50_ms": round(_percentiles(jupyter)[0], 3),
        "jupyter_start_ms": round(_percentiles(jupyter_start)[0], 1),
        "subprocess_numpy_pandas_p50_ms": round(_percentiles(cold_python)[0], 1),
    }
    speedup = summary["jupyter_warm_p50_ms"] / max(summary["warm_exec_p50_ms"], 1e-9)
    summary["warm_speedup_vs_jupyter"] = round(speedup, 2)
    print(
        f"warm exec is {speedup:.1f}x faster than the Jupyter kernel "
        f"(target >= {WARM_SPEEDUP_TARGET:g}x)"
    )
    fork_speedup = summary["jupyter_start_ms"] / max(summary["worker_fork_p50_ms"], 1e-9)
    print(
        f"a new session is {fork_speedup:.1f}x faster than a Jupyter kernel start (target >= 30x)"
    )
    for key, target in TARGETS.items():
        verdict = "ok" if summary[key] <= target else "MISSED"
        print(f"target {key} <= {target}: {summary[key]} {verdict}")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
