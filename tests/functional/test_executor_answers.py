"""Issue 11 at the executor level (the engine behind `handler()`): display data JSON cannot
encode, errors in the user's words, and a crash named for what it was. The same attacks
through the local stack's HTTP API are in tests/e2e/test_robustness_executor.py; hostile code
as an unprivileged user in tests/security/test_executor_robustness.py."""

from __future__ import annotations

import base64
import signal
from collections.abc import Callable
from typing import Any

import pytest

from lambdas.executor.host import results
from lambdas.executor.host.engine import Engine
from tests.functional.executor_helpers import answered_within, checked, invocation

Run = Callable[..., dict[str, Any]]
PNG = b"\x89PNG\r\n\x1a\n"
HOST_MARKERS = ("/work/", "/root/", "site-packages", "lambdas/executor", "urllib")


@pytest.fixture
def run(engine: Engine) -> Run:
    def run(code: str, session_id: str | None = "s-answers", **fields: Any) -> dict[str, Any]:
        result = checked(engine.invoke(invocation(code, session_id, **fields)))["result"]
        assert result["success"] == (result["status"] == "ok"), result
        if result["status"] != "ok":
            assert result["error"] and result["error"]["name"], result
        return result

    return run


def _no_host_internals(*texts: str) -> None:
    for text in texts:
        for marker in HOST_MARKERS:
            assert marker not in text, f"{marker!r} leaked into {text!r}"


# -- display data JSON cannot encode ------------------------------------------------------------


def test_binary_display_data_is_base64_like_ipykernel(run: Run) -> None:
    run("kept = 'alive'", "s-display")
    image = run("from PIL import Image\nImage.new('RGBA', (16, 16))", "s-display")
    assert image["status"] == "ok", image["error"]
    assert base64.b64decode(image["result"]["image/png"]).startswith(PNG)
    assert image["result"]["text/plain"].startswith("<PIL.Image.Image")
    raw = run(
        "from IPython.display import display\n"
        "display({'image/png': b'\\x89PNG\\r\\n\\x1a\\n\\xff', 'application/octet-stream': "
        "bytearray(b'\\x00\\x01'), 'text/plain': ['two ', 'lines']}, raw=True)",
        "s-display",
    )
    data = raw["outputs"][0]["data"]
    assert base64.b64decode(data["image/png"]) == PNG + b"\xff"
    assert base64.b64decode(data["application/octet-stream"]) == b"\x00\x01"
    assert data["text/plain"] == "two lines"
    assert run("kept", "s-display")["result"] == {"text/plain": "'alive'"}  # same worker


def test_metadata_and_json_data_are_cleaned(run: Run) -> None:
    code = (
        "import datetime, numpy as np\n"
        "class Chart:\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        data = {'text/plain': 'chart', 'application/json': {'n': np.int64(3), "
        "'ok': np.bool_(True), 'at': datetime.date(2026, 1, 2), 1: float('nan'), "
        "'set': {b'x'}}}\n"
        "        return data, {'text/plain': {'width': np.float64(2.5)}, 'obj': object()}\n"
        "Chart()"
    )
    result = run(code, "s-display")
    assert result["status"] == "ok", result["error"]
    assert result["result"]["application/json"] == {
        "n": 3,
        "ok": True,
        "at": "2026-01-02",
        "1": "nan",
        "set": [base64.b64encode(b"x").decode()],
    }
    metadata = result["outputs"][-1]["metadata"]
    assert metadata["text/plain"] == {"width": 2.5}
    assert metadata["obj"].startswith("<object object at")


def test_a_rich_repr_that_raises_falls_back_to_text_with_a_warning(run: Run) -> None:
    code = (
        "class Fancy:\n"
        "    def _repr_html_(self):\n        raise ValueError('no html today')\n"
        "    def __repr__(self):\n        return 'Fancy()'\n"
        "Fancy()"
    )
    result = run(code, "s-display")
    assert result["status"] == "ok" and result["error"] is None
    assert result["result"] == {"text/plain": "Fancy()"}
    assert any("no html today" in w and "text/plain" in w for w in result["warnings"])
    broken = run("class Broken:\n    def __repr__(self):\n        raise OSError\nBroken()")
    assert broken["status"] == "ok" and "Broken object at" in broken["result"]["text/plain"]
    not_a_bundle = run("from IPython.display import display\ndisplay(5, raw=True)")
    assert not_a_bundle["status"] == "error" and not_a_bundle["error"]["name"] == "TypeError"


def test_a_flood_of_display_calls_is_capped_with_one_warning(run: Run) -> None:
    # Each output costs room beyond its data: a loop of tiny display() calls runs out of the
    # result budget (here ~50 outputs), not the answer's frame (which would cost the worker).
    limits = {"stream_bytes": 1000, "result_bytes": 2000 + 5000}
    code = (
        "from IPython.display import display\n"
        "class Bad:\n    def _repr_html_(self):\n        raise ValueError('again')\n"
        "for i in range(200):\n    display(i)\n    display(Bad())"
    )
    result = run(code, "s-display", limits=limits)
    assert result["status"] == "ok", result["error"]
    assert 10 < len(result["outputs"]) < 60
    assert sorted(result["warnings"]) == [
        "a rich display of an object of type Bad failed (ValueError: again); it is shown as "
        "text/plain",
        "outputs were dropped: the result size limit was reached",
    ]


# -- errors in the user's words -------------------------------------------------------------------


def test_package_errors_are_short_and_show_no_host_internals(run: Run) -> None:
    for code in ("%pip install torch", "import torch", "import sys\nsys.stdout.write(b'x')"):
        result = run(code)
        assert result["status"] == "error", code
        error = result["error"]
        assert len(error["traceback"]) <= 5, error["traceback"]  # header, cell, error, note
        _no_host_internals(error["value"], *error["traceback"])
    assert "/v1/packages" in "".join(run("import torch")["error"]["traceback"])


def test_an_unreachable_wheelhouse_is_reported_without_its_address(run: Run) -> None:
    # On AWS the wheelhouse URL names the deployment's bucket (SPEC §3: never a bucket name).
    wheelhouse = {"index_url": "http://127.0.0.1:9/secret-bucket/wheelhouse/x86_64/index.json"}
    for code in ("import sklearn", "%pip install scikit-learn"):
        result = run(code, "s-no-wheelhouse", wheelhouse=wheelhouse)
        assert result["status"] == "error", result
        error = result["error"]
        assert "sklearn" in error["value"] or "scikit-learn" in error["value"]
        assert "cannot download index.json" in error["value"], error["value"]
        assert len(error["traceback"]) <= 4, error["traceback"]
        for text in (error["value"], *error["traceback"]):
            assert "secret-bucket" not in text and "127.0.0.1" not in text, text
        _no_host_internals(error["value"], *error["traceback"])


def test_errors_are_named_as_python_names_them(run: Run) -> None:
    syntax = run("print(")["error"]
    assert syntax["name"] == "SyntaxError" and "never closed" in syntax["value"]
    usage = run("%no_such_magic")
    assert usage["status"] == "error" and usage["error"]["name"] == "UsageError"
    group = run("raise ExceptionGroup('several', [ValueError(1), KeyError(2)])")
    assert group["status"] == "error" and group["error"]["name"] == "ExceptionGroup"
    assert group["stderr"] == ""
    _no_host_internals(*group["error"]["traceback"])
    # An exception whose str() raises: IPython reports what its str() raised.
    unprintable = run("class Odd(Exception):\n    def __str__(self):\n        1 / 0\nraise Odd()")
    assert unprintable["status"] == "error" and unprintable["error"]["name"] in (
        "Odd",
        "ZeroDivisionError",
    )
    assert run("'next'")["result"] == {"text/plain": "'next'"}


def test_one_shot_runs_say_nothing_of_a_session(run: Run, engine: Engine) -> None:
    event = invocation("import time\ntime.sleep(60)", None, timeout_ms=1000)
    timed_out = answered_within(1 + 20, lambda: engine.invoke(event), engine, "none")["result"]
    assert timed_out["status"] == "timeout"
    crashed = run("import os\nos._exit(4)", None)
    for result in (timed_out, crashed):
        said = " ".join([result["error"]["value"], *result["warnings"]]).lower()
        assert "session" not in said and "variables" not in said, said
    assert crashed["error"]["value"] == "the worker exited with code 4"


# -- crashes named for what they were ------------------------------------------------------------


def test_a_segfault_after_a_big_allocation_is_named_by_its_signal(run: Run) -> None:
    code = "blob = b'x' * (400 * 1024 * 1024)\nimport ctypes\nctypes.string_at(0)"
    result = run(code, "s-big-segv", limits={"memory_mb": 768})
    assert result["status"] == "error"
    assert result["error"]["name"] == "WorkerCrashed"
    assert result["error"]["value"].startswith("the worker died with SIGSEGV")
    assert run("'after'", "s-big-segv")["result"] == {"text/plain": "'after'"}


@pytest.mark.parametrize(
    ("death", "peak_mb", "status", "name"),
    [
        (["signal", signal.SIGKILL, 700 * 1024], 700, "memory_exceeded", "MemoryError"),
        (["signal", signal.SIGABRT, 700 * 1024], 700, "memory_exceeded", "MemoryError"),
        (["signal", signal.SIGSEGV, 700 * 1024], 700, "error", "WorkerCrashed"),
        (["signal", signal.SIGKILL, 50 * 1024], 50, "error", "WorkerCrashed"),
        (["exit", 1, 700 * 1024], 700, "error", "WorkerCrashed"),
    ],
)
def test_only_a_death_the_way_memory_exhaustion_kills_is_memory_exceeded(
    death: list[Any], peak_mb: int, status: str, name: str
) -> None:
    response = {
        "result": {
            "status": "error",
            "session_id": None,
            "error": {"name": results.WORKER_CRASHED, "value": "", "traceback": []},
            "outputs": [],
        }
    }
    results.explain_crash(response, death, 768)
    assert response["result"]["status"] == status
    assert response["result"]["error"]["name"] == name
    value = response["result"]["error"]["value"]
    if death[0] == "signal":
        assert signal.Signals(death[1]).name in value
    if status == "memory_exceeded":
        assert f"{peak_mb} MB resident" in value and "768 MB" in value


def test_a_forked_child_ends_like_a_scripts_child(run: Run) -> None:
    code = (
        "import os, sys\npid = os.fork()\nif pid == 0:\n    {child}\nelse:\n"
        "    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\ncode if pid else None"
    )
    assert run(code.format(child="sys.exit(7)"))["result"] == {"text/plain": "7"}
    failed = run(code.format(child="1 / 0"))
    assert failed["result"] == {"text/plain": "1"} and failed["status"] == "ok"
    assert "ZeroDivisionError" in failed["stderr"]  # the child's error, on the run's stderr
    printed = run(code.format(child="print('from the child')"))
    assert printed["stdout"] == "from the child\n" and printed["result"] == {"text/plain": "0"}
