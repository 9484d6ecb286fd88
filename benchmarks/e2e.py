"""End-to-end benchmark of the local stack: `python -m benchmarks.e2e [--json]`.

Starts `python -m local` on a free loopback port and measures
- time to a healthy stack (`GET /v1/health` 200) and one environment cold start (first run of
  a new session, with the spare environment disabled for that measurement's stack? no: the
  spare is what users get, so the figure is what a new session costs);
- `print(2+2)` in a live session, through HTTP -> API handler -> DynamoDB/S3 (moto) ->
  environment process -> executor: p50 / p95 over >= 200 runs after warm-up;
- a bounded load run: 16 concurrent sessions for 60 s (`--load-seconds`; a few seconds make a
  smoke check), each cell checking that its session counter advanced by exactly one, and at
  the end each session's counter read back against the runs its client saw committed
  (`lost`: committed runs the session no longer shows; `extra`: runs counted twice);
- first_output_latency_ms: time from a cell's first print to a client polling
  `GET /v1/executions/{id}` seeing it (`--first-output-only` measures just that);
- state_uploads_per_unchanged_run: snapshot uploads the stack's S3 front stored per warm run
  that changes no variable (`print(len(x))` after `x = list(range(1000))`; issue 16: 0;
  `--state-uploads-only` measures just that).
With `--json` the last stdout line is `{"e2e_p50_ms", "e2e_p95_ms", "dynamodb_calls_per_run",
"state_uploads_per_unchanged_run", "load_exec_per_s", "load_errors", "load_runs", "load_lost",
"load_extra", "first_output_latency_ms"}`. Targets (SPEC §6): p50 <= 30 ms, p95 <= 60 ms, <= 2
DynamoDB requests per warm run, 0 snapshot uploads for a run that changes nothing, 0 errors,
0 lost, running output <= 1 s behind the code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from lci import Client, LciError

from local import aws_calls

REPO_ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
HEALTH_TIMEOUT_SECONDS = 180
COUNTER_CELL = "n = globals().get('n', 0) + 1\nn"
UPLOADS_FILE = "s3-uploads.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_stack(tmp_dir: str) -> tuple[subprocess.Popen[bytes], str, float]:
    port = _free_port()
    env = {
        **os.environ,
        "LCI_PORT": str(port),
        "LCI_API_KEY": API_KEY,
        "LCI_TMP_ROOT": tmp_dir,
        "OPENBLAS_NUM_THREADS": "1",
        # print(2+2) needs no packages; keep the one-off 177 MB upload out of the timings.
        "LCI_WHEELHOUSE_UPLOAD": "off",
        # The stack counts its DynamoDB requests into this file (local/aws_calls.py).
        aws_calls.COUNT_ENV: "1",
        aws_calls.FILE_ENV: os.path.join(tmp_dir, "dynamodb-calls.json"),
        # ... and its S3 front the POST uploads it stored, by folder.
        aws_calls.UPLOADS_FILE_ENV: os.path.join(tmp_dir, UPLOADS_FILE),
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "local"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(tmp_dir, "stack.log"), "wb"),  # noqa: SIM115
    )
    endpoint = f"http://127.0.0.1:{port}"
    while time.monotonic() - started < HEALTH_TIMEOUT_SECONDS:
        if process.poll() is not None:
            raise RuntimeError("the local stack exited; see stack.log")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(endpoint + "/v1/health", timeout=5).status_code == 200:
                return process, endpoint, time.monotonic() - started
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the local stack did not become healthy")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_latency(
    endpoint: str, runs: int, warmup: int, calls_file: str | None = None
) -> dict[str, float]:
    with Client(endpoint, API_KEY) as client:
        session = client.create_session().session_id
        started = time.monotonic()
        first = client.execute("print(2+2)", session_id=session)
        cold_ms = (time.monotonic() - started) * 1000
        assert first.stdout == "4\n", first.raw
        for _ in range(warmup):
            client.execute("print(2+2)", session_id=session)
        samples = []
        calls_before = sum(aws_calls.read_counts(calls_file).values()) if calls_file else 0
        for _ in range(runs):
            started = time.perf_counter()
            result = client.execute("print(2+2)", session_id=session)
            samples.append((time.perf_counter() - started) * 1000)
            if result.stdout != "4\n":
                raise RuntimeError(f"wrong output: {result.raw}")
        calls_after = sum(aws_calls.read_counts(calls_file).values()) if calls_file else 0
        health = []
        for _ in range(50):
            started = time.perf_counter()
            client.health()
            health.append((time.perf_counter() - started) * 1000)
        client.delete_session(session)
    return {
        "first_run_ms": cold_ms,
        "p50": statistics.median(samples),
        "p95": percentile(samples, 0.95),
        "max": max(samples),
        "health_p50": statistics.median(health),
        # DynamoDB requests the API made per warm run (the stack's counter; issue 16: <= 2).
        "dynamodb_calls_per_run": (calls_after - calls_before) / runs,
    }


def measure_state_uploads(endpoint: str, runs: int, uploads_file: str) -> float:
    """Snapshot uploads per warm run that changes no variable (issue 16: none)."""
    with Client(endpoint, API_KEY) as client:
        session = client.create_session().session_id
        folder = f"sessions/{session}/state/"
        client.execute("x = list(range(1000))", session_id=session)
        before = aws_calls.read_counts(uploads_file).get(folder, 0)
        for _ in range(runs):
            result = client.execute("print(len(x))", session_id=session)
            if result.stdout != "1000\n":
                raise RuntimeError(f"wrong output: {result.raw}")
        after = aws_calls.read_counts(uploads_file).get(folder, 0)
        client.delete_session(session)
    return (after - before) / runs


FIRST_OUTPUT_CELL = "import time\nprint(time.time(), flush=True)\ntime.sleep(2)\n"
FIRST_OUTPUT_POLL_SECONDS = 0.05


def measure_first_output(endpoint: str, runs: int) -> dict[str, float]:
    """Time from a cell's first print (its own clock, the same machine's) to a client polling
    `GET /v1/executions/{id}` every 50 ms seeing it, in a warm session: p50 over `runs`."""
    samples = []
    with Client(endpoint, API_KEY) as client:
        session = client.create_session().session_id
        client.execute("1", session_id=session)
        for _ in range(runs):
            run = client.start(FIRST_OUTPUT_CELL, session_id=session)
            while True:
                view = client.get_execution(run.execution_id)
                if view.stdout:
                    samples.append((time.time() - float(view.stdout.split()[0])) * 1000)
                    break
                if not view.running:
                    raise RuntimeError(f"the run ended before its output was seen: {view.raw}")
                time.sleep(FIRST_OUTPUT_POLL_SECONDS)
            run.wait()
        client.delete_session(session)
    return {"p50": statistics.median(samples), "max": max(samples), "runs": len(samples)}


def run_load(
    endpoint: str, sessions: int, seconds: float, api_key: str = API_KEY
) -> dict[str, float]:
    """`sessions` clients, each in its own session, run COUNTER_CELL until `seconds` pass; each
    counts the runs the API answered as done. At the end every client reads its session's `n`
    back: a committed run the session no longer shows is lost, one it shows twice (or a run the
    client saw fail that still counted) is extra."""
    errors: list[str] = []
    counts = [0] * sessions
    lost = [0] * sessions
    extra = [0] * sessions
    ready = threading.Barrier(sessions + 1)
    stop = threading.Event()

    def worker(index: int) -> None:
        with Client(endpoint, api_key) as client:
            session = None
            try:
                session = client.create_session().session_id
                client.execute("n = 0", session_id=session)  # pays the cold start before timing
            except LciError as exc:
                errors.append(f"setup: {exc}")
                session = None
            ready.wait()
            committed = 0
            while session and not stop.is_set():
                try:
                    result = client.execute(COUNTER_CELL, session_id=session)
                except LciError as exc:
                    errors.append(str(exc))
                    continue
                if not result.success:
                    errors.append(f"session {index}: {result.raw}")
                    continue
                committed += 1
                shown = result.text or ""
                if shown != str(committed):
                    errors.append(f"session {index}: expected {committed}, got {shown}")
                    committed = int(shown) if shown.isdigit() else committed
                counts[index] += 1
            if not session:
                return
            try:
                final = int(client.execute("n", session_id=session).text or "")
            except (LciError, ValueError) as exc:
                errors.append(f"session {index}: reading n back failed: {exc}")
                lost[index] = committed
                return
            lost[index] = max(0, committed - final)
            extra[index] = max(0, final - committed)
            with contextlib.suppress(LciError):
                client.delete_session(session)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.monotonic()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for error in errors[:5]:
        print(f"load error: {error[:300]}", file=sys.stderr)
    return {
        "exec_per_s": sum(counts) / elapsed,
        "errors": len(errors),
        "runs": sum(counts),
        "lost": sum(lost),
        "extra": sum(extra),
    }


def breakdown(runs: int, warmup: int) -> dict[str, float]:
    """Where one `print(2+2)` goes: the stack started in this process, its layers timed.

    client total = HTTP server + event translation + API handler; API handler = its own code +
    DynamoDB/S3 calls to moto + the executor hop (pipe to the environment process and back)."""
    import botocore.endpoint

    from local import stack as local_stack

    timings: dict[str, list[float]] = {"moto": [], "executor": [], "handler": []}
    per_operation: dict[str, list[float]] = {}
    original_request = botocore.endpoint.Endpoint.make_request

    def timed_request(self, operation_model, request_dict):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return original_request(self, operation_model, request_dict)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            timings["moto"].append(elapsed)
            per_operation.setdefault(operation_model.name, []).append(elapsed)

    botocore.endpoint.Endpoint.make_request = timed_request  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="lci-bench-") as tmp_dir:
        os.environ.update(
            {
                "LCI_PORT": "0",
                "LCI_API_KEY": API_KEY,
                "LCI_TMP_ROOT": tmp_dir,
                "LCI_WHEELHOUSE_UPLOAD": "off",
            }
        )
        stack = local_stack.start()
        try:
            from lambdas.api import container
            from lambdas.api import handler as api

            pool = container.services().deps.executor
            original_invoke = pool.invoke

            def timed_invoke(invocation):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                try:
                    return original_invoke(invocation)
                finally:
                    timings["executor"].append((time.perf_counter() - started) * 1000)

            pool.invoke = timed_invoke  # type: ignore[method-assign]
            original_handler = api.handler

            def timed_handler(event, context):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                try:
                    return original_handler(event, context)
                finally:
                    timings["handler"].append((time.perf_counter() - started) * 1000)

            # A second HTTP server on the same stack, wired to the timed handler.
            from local.http_server import LocalHttpServer

            server = LocalHttpServer(
                "127.0.0.1", 0, local_stack.build_app(stack.keys, timed_handler)
            )
            threading.Thread(target=server.serve_forever, daemon=True).start()
            endpoint = f"http://127.0.0.1:{server.port}"
            totals = []
            with Client(endpoint, API_KEY) as client:
                session = client.create_session().session_id
                for _ in range(warmup):
                    client.execute("print(2+2)", session_id=session)
                for values in timings.values():
                    values.clear()
                per_operation.clear()
                for _ in range(runs):
                    started = time.perf_counter()
                    client.execute("print(2+2)", session_id=session)
                    totals.append((time.perf_counter() - started) * 1000)
            server.shutdown()
            server.server_close()
        finally:
            stack.stop()
            botocore.endpoint.Endpoint.make_request = original_request  # type: ignore[method-assign]
    per_run = {name: sum(values) / runs for name, values in timings.items()}
    total = statistics.mean(totals)
    operations = {
        f"  moto {name} ms (x{len(values) / runs:.2f})": statistics.mean(values)
        for name, values in sorted(per_operation.items())
    }
    return {
        **operations,
        "client_total_ms": total,
        "http_and_event_ms": total - per_run["handler"],
        "api_handler_own_ms": per_run["handler"] - per_run["moto"] - per_run["executor"],
        "moto_calls_ms": per_run["moto"],
        "moto_calls_per_run": len(timings["moto"]) / runs,
        "executor_hop_ms": per_run["executor"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--load-sessions", type=int, default=16)
    parser.add_argument(
        "--breakdown", action="store_true", help="only time the layers of one run (means)"
    )
    parser.add_argument(
        "--first-output-only",
        action="store_true",
        help="only measure first_output_latency_ms (a print seen by a polling client)",
    )
    parser.add_argument("--first-output-runs", type=int, default=10)
    parser.add_argument(
        "--state-uploads-only",
        action="store_true",
        help="only measure state_uploads_per_unchanged_run",
    )
    parser.add_argument("--state-upload-runs", type=int, default=50)
    args = parser.parse_args()
    if args.breakdown:
        parts = breakdown(args.runs, args.warmup)
        for name, value in parts.items():
            print(f"{name:<32}{value:8.2f}")
        if args.json:
            print(json.dumps({k.strip(): round(v, 2) for k, v in parts.items()}))
        return 0

    with tempfile.TemporaryDirectory(prefix="lci-bench-") as tmp_dir:
        process, endpoint, startup = start_stack(tmp_dir)
        uploads_file = os.path.join(tmp_dir, UPLOADS_FILE)
        try:
            if args.state_uploads_only:
                uploads = measure_state_uploads(endpoint, args.state_upload_runs, uploads_file)
                print(f"state uploads per unchanged run {uploads:6.2f}")
                if args.json:
                    print(json.dumps({"state_uploads_per_unchanged_run": round(uploads, 2)}))
                return 0
            first_output = measure_first_output(endpoint, args.first_output_runs)
            if args.first_output_only:
                print(
                    f"first output seen by a client p50 {first_output['p50']:.0f} ms  "
                    f"max {first_output['max']:.0f} ms  ({first_output['runs']:.0f} runs)"
                )
                if args.json:
                    print(json.dumps({"first_output_latency_ms": round(first_output["p50"])}))
                return 0
            latency = measure_latency(
                endpoint, args.runs, args.warmup, os.path.join(tmp_dir, "dynamodb-calls.json")
            )
            uploads = measure_state_uploads(endpoint, args.state_upload_runs, uploads_file)
            load = run_load(endpoint, args.load_sessions, args.load_seconds)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"startup to healthy            {startup:8.2f} s")
    print(f"first run in a new session    {latency['first_run_ms']:8.1f} ms")
    print(f"health round trip p50         {latency['health_p50']:8.2f} ms")
    print(f"DynamoDB requests per run     {latency['dynamodb_calls_per_run']:8.2f}")
    print(f"state uploads per unchanged run {uploads:6.2f}")
    print(
        f"print(2+2) in a session       p50 {latency['p50']:.2f} ms  p95 {latency['p95']:.2f} ms"
        f"  max {latency['max']:.1f} ms  ({args.runs} runs after {args.warmup} warm-up)"
    )
    print(
        f"first output seen by a client p50 {first_output['p50']:.0f} ms  "
        f"max {first_output['max']:.0f} ms"
    )
    print(
        f"load: {args.load_sessions} sessions x {args.load_seconds:.0f} s  "
        f"{load['exec_per_s']:.1f} exec/s  {load['runs']:.0f} runs  {load['errors']:.0f} errors  "
        f"{load['lost']:.0f} lost  {load['extra']:.0f} extra"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "e2e_p50_ms": round(latency["p50"], 2),
                    "e2e_p95_ms": round(latency["p95"], 2),
                    "dynamodb_calls_per_run": round(latency["dynamodb_calls_per_run"], 2),
                    "state_uploads_per_unchanged_run": round(uploads, 2),
                    "load_exec_per_s": round(load["exec_per_s"], 1),
                    "load_errors": int(load["errors"]),
                    "load_runs": int(load["runs"]),
                    "load_lost": int(load["lost"]),
                    "load_extra": int(load["extra"]),
                    "first_output_latency_ms": round(first_output["p50"]),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
