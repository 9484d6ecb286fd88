"""The `lci` Jupyter kernel against the started stack: `lci kernel install --prefix` into a temp
prefix, then jupyter_client starts it as Jupyter would (state, an image, an error, is_complete,
interrupt, the session deleted at shutdown), and nbclient executes a small notebook end to end."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import TargetStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT = 120  # seconds per message: a session's first run may pay an environment cold start
CHART_MIME = "application/vnd.lci.chart+json"


@pytest.fixture(scope="module")
def kernel_env(
    local_stack: TargetStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The kernelspec installed by the CLI into a temp prefix, found through JUPYTER_PATH."""
    prefix = tmp_path_factory.mktemp("jupyter-prefix")
    env = local_stack.env()
    installed = subprocess.run(
        [sys.executable, "-m", "lci.cli", "kernel", "install", "--prefix", str(prefix), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    spec_dir = Path(json.loads(installed.stdout)["path"])
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3.13 (Lambda Code Interpreter)"
    assert "LCI_API_KEY" not in json.dumps(spec) and local_stack.keys[0] not in json.dumps(spec)
    jupyter_path = str(prefix / "share" / "jupyter")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", jupyter_path)
        yield {**env, "JUPYTER_PATH": jupyter_path}


@contextlib.contextmanager
def _started_kernel(kernel_env: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    """The `lci` kernel started as Jupyter starts it, ready; shut down on the way out."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="lci")
    manager.start_kernel(env=kernel_env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=TIMEOUT)
        yield manager, client
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def kernel(kernel_env: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    with _started_kernel(kernel_env) as started:
        yield started


def run(client: Any, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute `code`; return the execute_reply content and the IOPub messages it produced."""
    messages: list[dict[str, Any]] = []
    reply = client.execute_interactive(
        code, timeout=TIMEOUT, output_hook=messages.append, store_history=True
    )
    return reply["content"], [m for m in messages if m["msg_type"] != "status"]


def of_type(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m["content"] for m in messages if m["msg_type"] == kind]


def test_state_survives_across_cells(kernel: tuple[Any, Any]) -> None:
    _, client = kernel
    reply, _ = run(client, "numbers = [1, 2, 3]\nprint('stored', len(numbers))")
    assert reply["status"] == "ok"
    reply, messages = run(client, "sum(numbers) * 7")
    assert reply["status"] == "ok"
    [result] = of_type(messages, "execute_result")
    assert result["data"]["text/plain"] == "42"
    assert result["execution_count"] == reply["execution_count"]


def test_streams_in_order(kernel: tuple[Any, Any]) -> None:
    _, client = kernel
    _, messages = run(client, "import sys\nprint('out')\nprint('err', file=sys.stderr)")
    streams = [(s["name"], s["text"]) for s in of_type(messages, "stream")]
    assert streams == [("stdout", "out\n"), ("stderr", "err\n")]


def test_a_figure_is_display_data_with_its_chart_data(kernel: tuple[Any, Any]) -> None:
    _, client = kernel
    reply, messages = run(
        client, "import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.title('k')"
    )
    assert reply["status"] == "ok"
    [figure] = [d for d in of_type(messages, "display_data") if "image/png" in d["data"]]
    assert base64.b64decode(figure["data"]["image/png"]).startswith(b"\x89PNG")
    assert figure["data"][CHART_MIME]["title"] == "k"


def test_an_error_is_an_error_message_and_reply(kernel: tuple[Any, Any]) -> None:
    _, client = kernel
    reply, messages = run(client, "def f():\n    return 1 / 0\nf()")
    assert reply["status"] == "error" and reply["ename"] == "ZeroDivisionError"
    [error] = of_type(messages, "error")
    assert error["ename"] == "ZeroDivisionError"
    assert any("f()" in line for line in error["traceback"])


def test_is_complete_follows_ipython(kernel: tuple[Any, Any]) -> None:
    _, client = kernel
    expectations = {
        "x = 1": "complete",
        "for i in range(3):": "incomplete",
        "%pip list": "complete",
        "x = (1,": "incomplete",
        "x = )": "invalid",
    }
    for code, expected in expectations.items():
        client.is_complete(code)
        reply = client.get_shell_msg(timeout=TIMEOUT)["content"]
        assert reply["status"] == expected, code
    client.is_complete("if True:")
    assert client.get_shell_msg(timeout=TIMEOUT)["content"]["indent"] == "    "


def test_interrupt_stops_the_remote_cell_and_keeps_state(kernel: tuple[Any, Any]) -> None:
    manager, client = kernel
    msg_id = client.execute(
        "import time\nloops = 0\nwhile True:\n    loops += 1\n    print('loop', loops)\n"
        "    time.sleep(0.2)"
    )
    # Output arrives while the cell runs; then Jupyter's interrupt (SIGINT to the kernel).
    while True:
        message = client.get_iopub_msg(timeout=TIMEOUT)
        if message["msg_type"] == "stream" and "loop" in message["content"]["text"]:
            break
    manager.interrupt_kernel()
    reply = client.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    reply, messages = run(client, "loops > 1")
    assert of_type(messages, "execute_result")[0]["data"]["text/plain"] == "True"


def test_the_session_is_deleted_at_shutdown(
    kernel_env: dict[str, str], local_stack: TargetStack
) -> None:
    with _started_kernel(kernel_env) as (_, client):
        client.kernel_info()
        banner = client.get_shell_msg(timeout=TIMEOUT)["content"]["banner"]
        session_id = banner.rsplit("session ", 1)[1].strip()
        headers = {"x-api-key": local_stack.keys[0]}
        url = f"{local_stack.endpoint}/v1/sessions/{session_id}"
        assert httpx.get(url, headers=headers, timeout=30).status_code == 200
    assert httpx.get(url, headers=headers, timeout=30).status_code == 404


def test_nbclient_executes_a_notebook_end_to_end(kernel_env: dict[str, str]) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import pandas as pd\nframe = pd.DataFrame({'n': [1, 2, 3]})"),
        nbformat.v4.new_code_cell("print(frame.n.sum())"),
        nbformat.v4.new_code_cell("frame.n.plot(title='n')"),
        nbformat.v4.new_code_cell("float(frame.n.mean())"),
    ]
    NotebookClient(notebook, kernel_name="lci", timeout=TIMEOUT).execute(env=kernel_env)
    _, printed, plotted, mean = notebook.cells
    assert printed.outputs[0]["text"] == "6\n"
    assert any("image/png" in output.get("data", {}) for output in plotted.outputs)
    assert mean.outputs[0]["data"]["text/plain"] == "2.0"
    assert [cell.execution_count for cell in notebook.cells] == [1, 2, 3, 4]
    nbformat.validate(notebook)
