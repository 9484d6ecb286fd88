"""The whole product on one machine, over real HTTP: presigned uploads and downloads, pandas and
matplotlib in sessions, principals kept apart, environments isolated from each other, the MCP
server, notebook export, and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import anyio
import httpx
import nbformat
import pytest
from lci import Client, LciError

from .conftest import API_KEYS, REPO_ROOT, start_stack, stop_stack

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_csv_uploaded_through_presigned_post_is_analysed_with_pandas(client):
    session = client.create_session()
    csv = "city,sales\nOslo,10\nLima,32\nOslo,5\n"
    client.upload_file(session.session_id, csv.encode(), "data/sales.csv")
    assert [f.path for f in client.list_files(session.session_id)] == ["data/sales.csv"]
    result = client.execute(
        "import pandas as pd\n"
        "df = pd.read_csv('data/sales.csv')\n"
        "totals = df.groupby('city')['sales'].sum()\n"
        "print(totals.to_dict())\n"
        "int(totals.sum())",
        session_id=session.session_id,
    )
    assert result.success, result.raw
    assert result.stdout == "{'Lima': 32, 'Oslo': 15}\n"
    assert result.text == "47"
    # State persists in the session: the next cell still has `df`.
    assert client.execute("len(df)", session_id=session.session_id).text == "3"


def test_png_chart_written_by_code_is_downloaded_through_its_presigned_url(client, tmp_path):
    session = client.create_session()
    result = client.execute(
        "import os, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "os.makedirs('charts', exist_ok=True)\n"
        "fig, ax = plt.subplots()\nax.plot([1, 2, 3], [3, 1, 2])\n"
        "fig.savefig('charts/line.png')\nplt.close(fig)\n",
        session_id=session.session_id,
    )
    assert result.success, result.raw
    written = {f.path: f for f in result.files}
    assert "charts/line.png" in written
    assert written["charts/line.png"].download_url
    # The URL in the result works without the API key (it is presigned) ...
    assert httpx.get(written["charts/line.png"].download_url).content.startswith(PNG_SIGNATURE)
    # ... and so does the files endpoint + download, through the CLI.
    target = tmp_path / "line.png"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lci.cli",
            "download",
            "charts/line.png",
            str(target),
            "--session",
            session.session_id,
        ],
        env=_cli_env(client),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert target.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.local_only
@pytest.mark.attack(
    "tenant isolation",
    "another API key reads, runs in, lists, downloads, exports or deletes a session; an unknown "
    "key creates one",
    "404 for each (403 for the unknown key); the owner keeps everything",
)
def test_two_keys_never_see_each_others_sessions(local_stack, client):
    session = client.create_session()
    client.upload_file(session.session_id, b"secret", "secret.txt")
    with Client(local_stack.endpoint, API_KEYS[1], timeout=120) as other:
        for call in (
            lambda: other.get_session(session.session_id),
            lambda: other.execute("1", session_id=session.session_id),
            lambda: other.list_files(session.session_id),
            lambda: other.download_file(session.session_id, "secret.txt"),
            lambda: other.notebook(session.session_id),
            lambda: other.delete_session(session.session_id),
        ):
            with pytest.raises(LciError) as caught:
                call()
            assert caught.value.status == 404
    with Client(local_stack.endpoint, "not-a-key") as stranger, pytest.raises(LciError) as caught:
        stranger.create_session()
    assert caught.value.status == 403
    # The owner still has everything.
    assert client.download_file(session.session_id, "secret.txt") == b"secret"


@pytest.mark.local_only
@pytest.mark.skipif(os.geteuid() != 0, reason="per-environment uids need root")
@pytest.mark.attack(
    "tenant isolation",
    "code in one session reads another session's `/tmp` and workspace files and signals its "
    "worker (local stack as root)",
    "denied: each environment has its own uid and a private `/tmp`",
)
def test_environments_cannot_read_each_others_files_or_signal_each_others_processes(
    local_stack, client
):
    if "environments all run as" in local_stack.log_path.read_text():
        pytest.skip("this machine cannot give environments their own uids (see the stack log)")
    victim, attacker = client.create_session(), client.create_session()
    # A name of this run's own: where /tmp cannot be private (the code under /tmp, see
    # local/isolation.py) an earlier run's file, owned by another uid, would still be there.
    planted_path = f"/tmp/planted-{uuid.uuid4().hex}.txt"
    planted = client.execute(
        f"import os\nopen({planted_path!r}, 'w').write('secret')\n"
        "open('mine.txt', 'w').write('secret')\n"
        "print(os.getpid(), os.getuid(), os.path.abspath('mine.txt'))",
        session_id=victim.session_id,
    )
    assert planted.success, planted.raw
    pid, uid, path = planted.stdout.split()
    probe = client.execute(
        "import json, os\n"
        f"pid, uid = {int(pid)}, {int(uid)}\n"
        "outcomes = [os.getuid() != uid]\n"
        f"for target in ({planted_path!r}, {path!r}):\n"
        "    try:\n        open(target).read(); outcomes.append('read')\n"
        "    except OSError as exc:\n        outcomes.append(type(exc).__name__)\n"
        "try:\n    os.kill(pid, 0); outcomes.append('signalled')\n"
        "except OSError as exc:\n    outcomes.append(type(exc).__name__)\n"
        "print(json.dumps(outcomes))",
        session_id=attacker.session_id,
    )
    assert probe.success, probe.raw
    outcomes = json.loads(probe.stdout)
    assert outcomes[0] is True, "two environments share a uid"
    assert outcomes[1] in ("FileNotFoundError", "PermissionError")
    assert outcomes[2] in ("FileNotFoundError", "PermissionError")
    assert outcomes[3] == "PermissionError"
    # The victim's session is untouched.
    assert (
        client.execute("open('mine.txt').read()", session_id=victim.session_id).text == "'secret'"
    )


def test_mcp_server_answers_an_execute_python_call(local_stack):
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    async def call() -> str:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "lci.cli", "mcp"],
            env={k: v for k, v in local_stack.env().items() if k.startswith(("LCI_", "PATH"))},
            cwd=str(REPO_ROOT),
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
            assert {"execute_python", "upload_file", "download_file", "list_files"} <= tools
            await session.call_tool("execute_python", {"code": "x = 6 * 7"})
            result = await session.call_tool("execute_python", {"code": "print(x)\nx + 1"})
            return "\n".join(getattr(part, "text", "") for part in result.content)

    text = anyio.run(call)
    assert "42" in text and "43" in text  # state kept in the server's default session


def test_notebook_export_opens_with_nbformat(client, tmp_path):
    session = client.create_session()
    client.execute("a = 20", session_id=session.session_id)
    client.execute("print('hello')\na + 22", session_id=session.session_id)
    target = tmp_path / "out.ipynb"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lci.cli",
            "notebook",
            "--session",
            session.session_id,
            "-o",
            str(target),
        ],
        env=_cli_env(client),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    notebook = nbformat.read(str(target), as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.source for cell in code_cells] == ["a = 20", "print('hello')\na + 22"]
    outputs = code_cells[1].outputs
    assert any(o.output_type == "stream" and o.text == "hello\n" for o in outputs)
    assert any(o.output_type == "execute_result" and o.data["text/plain"] == "42" for o in outputs)


def test_readme_curl_and_lci_examples_work_verbatim(local_stack):
    readme = (REPO_ROOT / "README.md").read_text()
    for marker, expected in (("e2e:curl", '"stdout":"4\\n"'), ("e2e:lci", "4\n")):
        commands = _marked_block(readme, marker)
        completed = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", commands],
            env=local_stack.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr
        assert expected in completed.stdout.replace(": ", ":"), completed.stdout


@pytest.mark.local_only
def test_ctrl_c_stops_every_process(tmp_path):
    stack = start_stack(tmp_path)
    try:
        with Client(stack.endpoint, API_KEYS[0], timeout=120) as api:
            session = api.create_session()
            # A process started by user code that tries to outlive everything.
            started = api.execute(
                "import subprocess\n"
                "subprocess.Popen(['sleep', '600'], start_new_session=True)\nprint('ok')",
                session_id=session.session_id,
            )
            assert started.success, started.raw
    finally:
        alive = stop_stack(stack, signal.SIGINT)
    assert stack.process.returncode == 0, stack.log_path.read_text()
    assert alive == []


def _marked_block(text: str, marker: str) -> str:
    """The fenced code block following `<!-- marker -->`, minus `export` lines (the test
    provides LCI_ENDPOINT / LCI_API_KEY)."""
    after = text.split(f"<!-- {marker} -->", 1)[1]
    block = after.split("```", 2)[1].split("\n", 1)[1]
    return "\n".join(line for line in block.splitlines() if not line.startswith("export "))


def _cli_env(client: Client) -> dict[str, str]:
    return {
        **os.environ,
        "LCI_ENDPOINT": client.endpoint,
        "LCI_API_KEY": client.api_key,
        "PYTHONPATH": str(REPO_ROOT / "client"),
    }
