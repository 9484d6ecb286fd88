"""Jupyter semantics of the executor, through the engine behind `handler()` (runs as root;
hostile-code limits are in tests/security)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from lambdas.executor import handler, protocol
from lambdas.executor.host.engine import Engine
from tests.functional.executor_helpers import answered_within, checked, invocation

Run = Callable[..., dict[str, Any]]


@pytest.fixture
def run(engine: Engine) -> Run:
    def run(code: str, session_id: str | None = "s-semantics", **fields: Any) -> dict[str, Any]:
        return checked(engine.invoke(invocation(code, session_id, **fields)))["result"]

    return run


def test_last_expression_is_the_result_as_a_mime_bundle(run: Run) -> None:
    result = run("x = 20\nx * 2 + 2")
    assert result["status"] == "ok" and result["success"] is True
    assert result["result"] == {"text/plain": "42"}
    frame = run("import pandas as pd\npd.DataFrame({'a': [1, 2]})")["result"]
    assert "text/html" in frame and "<table" in frame["text/html"]


def test_display_and_prints_keep_their_order(run: Run) -> None:
    result = run(
        "from IPython.display import display, HTML\n"
        "print('before')\ndisplay(HTML('<b>hi</b>'))\nprint('after')\n7"
    )
    kinds = [(o["output_type"], o.get("name")) for o in result["outputs"]]
    assert kinds == [
        ("stream", "stdout"),
        ("display_data", None),
        ("stream", "stdout"),
        ("execute_result", None),
    ]
    assert result["outputs"][1]["data"]["text/html"] == "<b>hi</b>"
    assert result["stdout"] == "before\nafter\n"


def test_matplotlib_figures_become_png_display_data(run: Run) -> None:
    result = run(
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\nplt.show()\nprint('shown')\n"
        "fig, ax = plt.subplots()\nax.bar([1, 2], [3, 4])"
    )
    pngs = [o for o in result["outputs"] if "image/png" in o.get("data", {})]
    assert len(pngs) == 2  # the shown one, then the one still open at the end of the cell
    first_png = result["outputs"].index(pngs[0])
    assert result["outputs"][first_png + 1]["text"] == "shown\n"
    assert base64.b64decode(pngs[0]["data"]["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    # Figures are closed after being sent: the next cell shows nothing.
    assert not [o for o in run("1")["outputs"] if o["output_type"] == "display_data"]


def test_top_level_await_and_dedent(run: Run) -> None:
    assert run("import asyncio\nawait asyncio.sleep(0)\n'done'")["result"] == {
        "text/plain": "'done'"
    }
    assert run("    a = 2\n    if a:\n        a += 1\n    a")["result"] == {"text/plain": "3"}


def test_shell_commands_and_magics(run: Run) -> None:
    shell = run("print('first')\nname = 'shell'\n!echo hello-$name\n!echo oops >&2\nprint('last')")
    assert shell["stdout"] == "first\nhello-shell\noops\nlast\n"  # in order, variables expanded
    assert run("where = '/'\nfiles = !ls $where\n'etc' in files")["result"] == {
        "text/plain": "True"
    }
    assert run("%pwd")["result"]["text/plain"].strip("'").endswith("/s-semantics")
    assert "per loop" in run("%timeit -n1 -r1 pass")["stdout"]


def test_errors_have_plain_tracebacks_and_count_the_cell(run: Run) -> None:
    result = run("def f():\n    return 1 / 0\nf()", execution_count=5)
    assert result["status"] == "error" and result["success"] is False
    assert result["execution_count"] == 5
    error = result["error"]
    assert error["name"] == "ZeroDivisionError"
    assert error["value"] == "division by zero"
    assert any("In[5]" in line for line in error["traceback"])
    assert not any("\x1b[" in line for line in error["traceback"])
    assert result["outputs"][-1]["output_type"] == "error"
    # The failed cell took a number: the next one gets its own.
    nxt = run("'next'", execution_count=6)
    assert nxt["outputs"][0]["execution_count"] == 6


def test_deep_recursion_fails_fast_with_a_short_traceback(run: Run) -> None:
    result = run("def down(n):\n    return down(n + 1)\ndown(0)", timeout_ms=60_000)
    assert result["status"] == "error" and result["error"]["name"] == "RecursionError"
    assert len(result["error"]["traceback"]) < 40
    assert any("repeated" in line for line in result["error"]["traceback"])
    assert run("exit()")["warnings"] and run("'still here'")["status"] == "ok"


def test_env_applies_to_one_run_only_and_cwd_is_the_workspace(run: Run, engine: Engine) -> None:
    first = run("import os\nos.environ.get('LCI_FLAVOUR'), os.getcwd()", env={"LCI_FLAVOUR": "x"})
    flavour, cwd = eval(first["result"]["text/plain"])  # a tuple repr of two strings
    assert flavour == "x"
    assert cwd == os.path.join(engine.settings.root, "workspaces", "s-semantics")
    assert run("import os\nos.environ.get('LCI_FLAVOUR')")["result"] is None


def test_the_environment_of_user_code_is_scrubbed(run: Run, monkeypatch) -> None:
    result = run("import os\nsorted(os.environ)")
    names = eval(result["result"]["text/plain"])
    assert not [name for name in names if name.startswith("AWS_") or name == "_HANDLER"]
    assert "HOME" in names


def test_variables_live_across_executions_of_a_session(run: Run) -> None:
    run("counter = 41", session_id="s-counter")
    assert run("counter += 1\ncounter", session_id="s-counter")["result"]["text/plain"] == "42"
    # Another session does not see them.
    assert run("'counter' in globals()", session_id="s-other")["result"]["text/plain"] == "False"


def test_one_shot_runs_get_fresh_workers_with_their_own_rng(run: Run) -> None:
    code = "import numpy as np\nprint(np.random.rand())\nshared = 1"
    first = run(code, session_id=None, inline_files=[])
    second = run("import numpy as np\nprint(np.random.rand())\n'shared' in globals()",
                 session_id=None)  # fmt: skip
    assert first["stdout"] != second["stdout"].splitlines()[0] + "\n"
    assert second["result"]["text/plain"] == "False"
    assert first["execution_count"] is None


def test_inline_files_appear_in_the_workspace(run: Run) -> None:
    content = base64.b64encode(b"a,b\n1,2\n").decode()
    result = run(
        "import pandas as pd\nint(pd.read_csv('data/in.csv')['b'].sum())",
        session_id=None,
        inline_files=[{"path": "data/in.csv", "content_base64": content}],
    )
    assert result["result"]["text/plain"] == "2"


def test_files_written_by_the_cell_are_reported(run: Run) -> None:
    result = run("open('report.csv', 'w').write('x\\n1\\n')\nopen('.hidden', 'w').write('x')")
    assert result["files"] == [
        {"path": "report.csv", "size": 4, "content_type": "text/csv", "download_url": None}
    ]
    # Unchanged files are not reported again.
    assert run("1")["files"] == []


def test_a_file_a_cell_left_a_thread_writing_is_reported_by_the_next_run(run: Run) -> None:
    # Threads outlive their cell in the session's worker; what one writes after its cell
    # answered belongs to no run so far, so the next run reports it (and saves it).
    code = (
        "import threading, time\n"
        "def late():\n    time.sleep(0.3)\n    open('late.txt', 'w').write('done')\n"
        "threading.Thread(target=late).start()"
    )
    assert run(code, session_id="s-late-file")["files"] == []
    time.sleep(0.6)
    files = run("1", session_id="s-late-file")["files"]
    assert [entry["path"] for entry in files] == ["late.txt"]
    assert run("2", session_id="s-late-file")["files"] == []


def test_streams_are_capped_with_a_flag(run: Run) -> None:
    limits = {"stream_bytes": 1000}
    result = run("print('x' * 5000)\nimport sys\nprint('e' * 10, file=sys.stderr)", limits=limits)
    # Over its cap a stream keeps its head and its tail around one marker (protocol.py).
    head, tail = protocol.head_and_tail_bytes(1000)
    omitted = 5001 - head - tail
    marker = f"\n[... {omitted} bytes omitted ...]\n"
    assert result["stdout_truncated"] is True
    assert result["stdout"] == "x" * head + marker + "x" * (tail - 1) + "\n"
    assert len(result["stdout"]) <= 1000
    assert result["stderr"] == "e" * 10 + "\n" and result["stderr_truncated"] is False


def test_fd_level_output_is_captured(run: Run) -> None:
    result = run("import os\nos.system('echo from-the-fd')\nos.write(2, b'raw-err')")
    assert "from-the-fd" in result["stdout"]
    assert "raw-err" in result["stderr"]


def test_odd_output_text_survives(run: Run) -> None:
    result = run("print('caf\u00e9 \\ud800 \\x00 end')")
    assert result["status"] == "ok" and result["stdout"].endswith("end\n")


def test_the_lambda_deadline_caps_the_run(engine: Engine, monkeypatch) -> None:
    class Context:
        @staticmethod
        def get_remaining_time_in_millis() -> int:
            return 3000  # the function is killed in 3 s, whatever timeout_ms says

    monkeypatch.setattr(handler, "_engine", engine)
    event = invocation("import time\ntime.sleep(60)", "s-deadline", timeout_ms=60_000)
    # Far from the 60 s the cell asked for.
    response = answered_within(
        3 + 20, lambda: handler.handler(event, Context()), engine, "s-deadline"
    )
    assert checked(response)["result"]["status"] == "timeout"


def test_an_invalid_invocation_gets_a_clear_error(engine: Engine) -> None:
    response = checked(engine.invoke({"execution_id": "bad", "code": 5}))
    error = response["result"]["error"]
    assert response["result"]["status"] == "error"
    assert error["name"] == "InvalidInvocation"
    assert "tenant_id" in error["value"] and "code" in error["value"]
    assert checked(engine.invoke("not even a dict"))["result"]["error"]["name"] == (
        "InvalidInvocation"
    )


def test_a_crashing_worker_is_reported_and_the_session_goes_on(run: Run) -> None:
    run("kept = 1", session_id="s-crash")
    crashed = run("import os\nos._exit(3)", session_id="s-crash")
    assert crashed["status"] == "error"
    assert crashed["error"]["name"] == "WorkerCrashed"
    assert "exited with code 3" in crashed["error"]["value"]
    segv = run("import ctypes\nctypes.string_at(0)", session_id="s-crash")
    assert segv["error"]["name"] == "WorkerCrashed" and "SIGSEGV" in segv["error"]["value"]
    assert segv["stdout"] == ""  # nothing printed this time: no output of earlier runs shows up
    assert run("1 + 1", session_id="s-crash")["result"] == {"text/plain": "2"}


def test_what_a_cell_printed_before_its_worker_died_is_kept(run: Run) -> None:
    code = (
        "import ctypes, sys\n"
        "print('loading')\n"
        "print('careful', file=sys.stderr)\n"
        "print('almost')\n"
        "ctypes.string_at(0)"
    )
    crashed = run(code, session_id="s-crash-output")
    assert crashed["error"]["name"] == "WorkerCrashed" and "SIGSEGV" in crashed["error"]["value"]
    assert crashed["stdout"] == "loading\nalmost\n" and crashed["stderr"] == "careful\n"
    kinds = [(o["output_type"], o.get("name")) for o in crashed["outputs"]]
    assert kinds == [
        ("stream", "stdout"),
        ("stream", "stderr"),
        ("stream", "stdout"),
        ("error", None),
    ]


def test_timeout_kills_the_worker_and_the_next_run_works(run: Run, engine: Engine) -> None:
    code = "import time\nprint('started')\nwhile True: time.sleep(0.01)"
    event = invocation(code, "s-timeout", timeout_ms=1500)
    response = answered_within(1.5 + 20, lambda: engine.invoke(event), engine, "s-timeout")
    result = checked(response)["result"]
    assert result["status"] == "timeout"
    assert result["error"]["name"] == "TimeoutError" and "1500 ms" in result["error"]["value"]
    assert result["stdout"] == "started\n"  # what the cell printed before it ran out of time
    assert result["outputs"][-1]["output_type"] == "error"
    assert run("'alive'", session_id="s-timeout")["result"] == {"text/plain": "'alive'"}


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_background_processes_do_not_outlive_the_run(run: Run) -> None:
    result = run("import subprocess\np = subprocess.Popen(['sleep', '120'])\np.pid")
    pid = int(result["result"]["text/plain"])
    assert _gone(pid)


def test_user_code_waits_for_its_own_children(run: Run) -> None:
    # The zygote reaps its children on SIGCHLD; a worker must not inherit that, or this
    # waitpid would find its (already exited) child taken.
    code = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(7)\n"
        "time.sleep(0.2)\n"
        "os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])"
    )
    assert run(code)["result"] == {"text/plain": "7"}


def test_the_preloaded_heap_is_immortal_in_a_worker(run: Run, engine: Engine) -> None:
    # Reference counting leaves immortal objects alone, so running preloaded code does not
    # copy the zygote's pages; a value the user creates stays an ordinary object. The zygote
    # shapes its memory once its preload is complete: a session started after that sees it.
    assert engine.wait_until_preloaded()
    code = (
        "import sys, numpy, IPython\n"
        "[sys.getrefcount(numpy), sys.getrefcount(IPython.display), sys.getrefcount([])]"
    )
    counts = json.loads(run(code, session_id="s-immortal")["result"]["text/plain"])
    assert counts[0] >= 2**32 - 1 and counts[1] >= 2**32 - 1
    assert counts[2] < 100


def test_memory_error_is_memory_exceeded(run: Run) -> None:
    result = run("x = bytearray(10**10)", session_id="s-mem", limits={"memory_mb": 1024})
    assert result["status"] == "memory_exceeded"
    assert "memory limit" in result["error"]["value"] and "1024 MB" in result["error"]["value"]
    assert run("'ok'", session_id="s-mem")["result"] == {"text/plain": "'ok'"}


def test_handler_entry_point_and_shutdown(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LCI_TMP_ROOT", str(tmp_path))
    handler.shutdown()
    try:
        response = checked(handler.handler(invocation("print(2 + 2)", "s-handler"), None))
        assert response["result"]["stdout"] == "4\n"
        assert response["cold_start"] is True
        engine = handler._get_engine()
        zygote, workers = engine.zygote_pid, list(engine.worker_pids().values())
        assert zygote is not None and workers
        assert handler.handler(invocation("1", "s-handler"), None)["cold_start"] is False
    finally:
        handler.shutdown()
    assert all(_gone(pid) for pid in [zygote, *workers])


def test_file_size_and_open_file_limits_apply(run: Run) -> None:
    limits = {"file_size_bytes": 1024 * 1024, "open_files": 64}
    big = run("open('big.bin', 'wb').write(b'0' * (2 * 1024 * 1024))", "s-rlimits", limits=limits)
    assert big["status"] == "error" and "File too large" in big["error"]["value"]
    many = run("handles = [open('f.txt', 'w') for _ in range(200)]", "s-rlimits", limits=limits)
    assert many["status"] == "error" and "Too many open files" in many["error"]["value"]
    assert run("del handles\n'fine'", "s-rlimits")["status"] == "error"  # handles never existed
    assert run("'fine'", "s-rlimits")["result"] == {"text/plain": "'fine'"}


def test_an_allocation_past_the_limit_is_memory_exceeded_before_any_crash(run: Run) -> None:
    # The allocation fails (MemoryError) before the segfault is reached; a segfault after an
    # allocation that fit is named by its signal (tests/functional/test_executor_answers.py).
    code = "blob = b'x' * (640 * 1024 * 1024)\nimport ctypes\nctypes.string_at(0)"
    result = run(code, "s-near-limit", limits={"memory_mb": 768})
    assert result["status"] == "memory_exceeded"
    assert result["error"]["name"] == "MemoryError" and "768 MB" in result["error"]["value"]
    assert run("'after'", "s-near-limit")["result"] == {"text/plain": "'after'"}
