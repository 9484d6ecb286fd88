"""Long output keeps its head and its tail (issue 15 item 5): a stream over its cap shows its
first lines, one omission marker and its last lines (where the error usually is), in the
result's streams and in its outputs alike, whether printed from Python or written to the fd."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from lambdas.executor.host.engine import Engine
from lambdas.shared import limits
from tests.functional.executor_helpers import checked, invocation

Run = Callable[..., dict[str, Any]]
CAP = limits.MAX_STREAM_BYTES
MARKER = re.compile(r"\n\[\.\.\. (\d+) bytes omitted \.\.\.\]\n")
LINES = 300_000


@pytest.fixture
def run(engine: Engine) -> Run:
    def run(code: str, session_id: str | None = "s-long-output", **fields: Any) -> dict[str, Any]:
        return checked(engine.invoke(invocation(code, session_id, **fields)))["result"]

    return run


def assert_head_marker_tail(result: dict[str, Any], name: str, first: str, last: str) -> None:
    text = result[name]
    assert result[f"{name}_truncated"] is True
    assert len(text.encode()) <= CAP
    assert text.startswith(first), text[:200]
    assert text.endswith(last), text[-200:]
    markers = MARKER.findall(text)
    assert len(markers) == 1 and int(markers[0]) > 0, markers
    head, tail = MARKER.split(text)[0], MARKER.split(text)[-1]
    assert len(head.encode()) > CAP // 3 and len(tail.encode()) > CAP // 3
    # The outputs follow the same rule: their text of this stream is the stream.
    printed = "".join(
        o["text"] for o in result["outputs"] if o["output_type"] == "stream" and o["name"] == name
    )
    assert printed == text


def numbered(stream: str) -> str:
    target = ", file=sys.stderr" if stream == "stderr" else ""
    return f"import sys\nfor i in range({LINES}):\n    print(f'line {{i}}'{target})\n"


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_long_print_keeps_its_first_and_last_lines(run: Run, stream: str) -> None:
    result = run(numbered(stream))
    assert result["status"] == "ok", result["error"]
    assert_head_marker_tail(result, stream, "line 0\nline 1\n", f"line {LINES - 1}\n")


def test_a_flood_written_to_the_fd_keeps_its_first_and_last_lines(run: Run) -> None:
    code = (
        "import os\n"
        f"data = ''.join(f'fd {{i}}\\n' for i in range({LINES})).encode()\n"
        "for start in range(0, len(data), 65536):\n"
        "    os.write(1, data[start:start + 65536])\n"
    )
    result = run(code)
    assert result["status"] == "ok", result["error"]
    assert_head_marker_tail(result, "stdout", "fd 0\nfd 1\n", f"fd {LINES - 1}\n")


def test_an_error_after_a_flood_keeps_its_traceback_and_the_last_stderr_lines(run: Run) -> None:
    code = (
        "import sys\n"
        f"for i in range({LINES}):\n"
        "    print(f'warn {i}', file=sys.stderr)\n"
        "raise ValueError('the real problem')\n"
    )
    result = run(code)
    assert result["status"] == "error"
    assert result["error"]["name"] == "ValueError"
    assert result["error"]["value"] == "the real problem"
    assert any("the real problem" in line for line in result["error"]["traceback"])
    assert_head_marker_tail(result, "stderr", "warn 0\n", f"warn {LINES - 1}\n")
    assert result["outputs"][-1]["output_type"] == "error"


def test_displays_keep_their_place_among_a_cut_stream(run: Run) -> None:
    code = (
        "from IPython.display import display\n"
        "print('before')\n"
        "display('first display')\n"
        f"for i in range({LINES}):\n"
        "    print(f'line {i}')\n"
        "display('last display')\n"
        "print('after')\n"
    )
    result = run(code)
    kinds = [(o["output_type"], o.get("name")) for o in result["outputs"]]
    assert kinds == [
        ("stream", "stdout"),
        ("display_data", None),
        ("stream", "stdout"),
        ("display_data", None),
        ("stream", "stdout"),
    ]
    assert result["outputs"][-1]["text"] == "after\n"
    assert_head_marker_tail(result, "stdout", "before\nline 0\n", f"line {LINES - 1}\nafter\n")


def test_a_short_print_is_whole_and_unflagged(run: Run) -> None:
    result = run("print(2 + 2)")
    assert result["stdout"] == "4\n" and result["stdout_truncated"] is False
