"""`lci mcp` over stdio against the local stack, driven by the `mcp` package's own client: a
matplotlib figure arrives as ImageContent, a 200 000-line print fits the budget with its first
and last lines, state persists in a default session that is deleted when the connection ends,
and the file tools refuse anything outside their root."""

from __future__ import annotations

import base64
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest
from lci import Client, LciError
from lci.shaping import DEFAULT_MAX_OUTPUT_CHARS

from .conftest import API_KEYS, REPO_ROOT, LocalStack

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Short lines keep the whole stream under the executor's own per-stream cap (1 MiB), so the
# server returns all of it and the shaping alone decides what the model sees.
LONG_PRINT = (
    "print('FIRST LINE')\nfor i in range(199_998):\n    print(i % 1000)\nprint('LAST LINE')\n"
)


@contextlib.asynccontextmanager
async def _connect(stack: LocalStack, root: Path, errlog: TextIO) -> AsyncIterator[Any]:
    """An initialized MCP client session with `lci mcp --root root` (our worktree's code)."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "lci.cli", "mcp", "--root", str(root)],
        env={
            "PATH": stack.env()["PATH"],
            "PYTHONPATH": str(REPO_ROOT / "client"),
            "LCI_ENDPOINT": stack.endpoint,
            "LCI_API_KEY": API_KEYS[0],
            "XDG_CONFIG_HOME": str(root.parent / "config"),
        },
        cwd=str(root),
    )
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def test_plot_is_image_content_long_output_fits_and_the_session_ends_with_the_connection(
    local_stack, tmp_path
):
    root = tmp_path / "root"
    root.mkdir()
    log_path = tmp_path / "mcp-stderr.log"

    async def scenario() -> dict[str, Any]:
        with log_path.open("w") as errlog:
            async with _connect(local_stack, root, errlog) as mcp:
                await mcp.call_tool("execute_python", {"code": "x = 6 * 7"})
                state = await mcp.call_tool("execute_python", {"code": "print(x)\nx + 1"})
                plot = await mcp.call_tool(
                    "execute_python",
                    {
                        "code": "import matplotlib.pyplot as plt\n"
                        "fig, ax = plt.subplots()\nax.plot([1, 2, 3], [3, 1, 2])\nplt.show()"
                    },
                )
                long = await mcp.call_tool("execute_python", {"code": LONG_PRINT})
                return {"state": state, "plot": plot, "long": long}

    results = anyio.run(scenario)
    assert _text(results["state"]) == "stdout:\n42\n\nresult:\n43"

    plot = results["plot"]
    assert not plot.is_error, _text(plot)
    images = [block for block in plot.content if block.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data).startswith(PNG_SIGNATURE)
    assert "image 1 of 1: PNG" in _text(plot)

    long = _text(results["long"])
    assert not results["long"].is_error
    assert len(long) <= DEFAULT_MAX_OUTPUT_CHARS
    assert "FIRST LINE" in long and "LAST LINE" in long
    assert "cut from the middle of stdout" in long and "GET /v1/executions/" in long

    # The default session was created once and deleted when the connection closed.
    log = log_path.read_text()
    created = [line.split()[-1] for line in log.splitlines() if "created the default" in line]
    assert len(created) == 1, log
    assert f"deleted the default session {created[0]}" in log
    with Client(local_stack.endpoint, API_KEYS[0]) as api, pytest.raises(LciError) as gone:
        api.get_session(created[0])
    assert gone.value.status == 404


def test_file_tools_stay_inside_the_root_and_never_overwrite_silently(local_stack, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "data.csv").write_text("a,b\n1,2\n")
    (root / "kept.csv").write_text("mine")
    (tmp_path / "outside.txt").write_text("secret")

    async def scenario() -> list[Any]:
        with (tmp_path / "mcp-stderr.log").open("w") as errlog:
            async with _connect(local_stack, root, errlog) as mcp:
                calls = [
                    ("upload_file", {"local_path": "/etc/hostname"}),
                    ("upload_file", {"local_path": "../outside.txt"}),
                    ("upload_file", {"local_path": "data.csv", "remote_path": "../x.csv"}),
                    ("upload_file", {"local_path": "data.csv", "remote_path": "kept.csv"}),
                    ("download_file", {"remote_path": "kept.csv"}),
                    ("download_file", {"remote_path": "kept.csv", "local_path": "/tmp/x.csv"}),
                    ("download_file", {"remote_path": "kept.csv", "local_path": "copies/"}),
                    ("list_files", {}),
                ]
                return [await mcp.call_tool(name, arguments) for name, arguments in calls]

    (
        absolute,
        parent,
        bad_remote,
        uploaded,
        clobber,
        escape,
        into_folder,
        listing,
    ) = anyio.run(scenario)
    for refused in (absolute, parent, bad_remote, clobber, escape):
        assert refused.is_error, _text(refused)
    assert "outside the allowed folder" in _text(absolute)
    assert "must not contain '..'" in _text(bad_remote)
    assert "overwrite: true" in _text(clobber)
    assert (root / "kept.csv").read_text() == "mine"
    assert not uploaded.is_error and not into_folder.is_error, _text(into_folder)
    assert (root / "copies" / "kept.csv").read_text() == "a,b\n1,2\n"
    assert _text(listing).split() == ["kept.csv", "8"]
