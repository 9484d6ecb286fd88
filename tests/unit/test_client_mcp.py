"""The MCP server in-process (the `mcp` package's client against `build_server`), over a scripted
API: images as ImageContent, state in a default session, every failure `isError`, and file tools
that never leave their root folder nor silently overwrite."""

from __future__ import annotations

import base64
import json
import os

import anyio
import httpx
import pytest
from lci.default_session import DefaultSession
from lci.mcp_server import build_server
from lci.paths import LocalRoot
from mcp import Client as McpClient

from .client_fakes import Api, StatefulApi, client_for, image_output, png_bytes, result

GRANT = {
    "path": "in.csv",
    "upload": {"url": "http://s3.test/bucket", "fields": {"key": "k", "policy": "P"}},
    "expires_at": "x",
    "max_bytes": 100,
}


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


def _files_api() -> Api:
    return Api(
        {
            ("POST", "/v1/sessions"): lambda r: httpx.Response(201, json={"session_id": "s1"}),
            ("POST", "/v1/sessions/s1/files"): lambda r: httpx.Response(200, json=GRANT),
            ("POST", "/bucket"): lambda r: httpx.Response(204),
            ("GET", "/v1/sessions/s1/files/out/report.csv"): lambda r: httpx.Response(
                200, json={"path": "out/report.csv", "size": 3, "download_url": "http://s3.test/dl"}
            ),
            ("GET", "/dl"): lambda r: httpx.Response(200, content=b"new"),
        }
    )


def _call(api: Api, root_dir, calls: list[tuple[str, dict]]):
    """Run tool calls through an in-process MCP client; return their results."""
    client = client_for(api)
    session = DefaultSession(client)
    server = build_server(client, LocalRoot(root_dir), session=session)

    async def run():
        async with McpClient(server) as mcp:
            return [await mcp.call_tool(name, arguments) for name, arguments in calls]

    try:
        return anyio.run(run)
    finally:
        session.close()


def _text(result) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def test_execute_python_keeps_state_and_returns_images(root):
    api = StatefulApi()
    results = _call(
        api, root, [("execute_python", {"code": "x = 5"}), ("execute_python", {"code": "print(x)"})]
    )
    assert [r.is_error for r in results] == [False, False]
    assert _text(results[1]) == "stdout:\n5"
    assert api.created == 1 and api.sessions == {}  # one default session, deleted at the end

    png = png_bytes(32, 16)
    document = result(outputs=[image_output(png)])
    plot = Api(
        {
            ("POST", "/v1/sessions"): lambda r: httpx.Response(201, json={"session_id": "s1"}),
            ("POST", "/v1/sessions/s1/execute"): lambda r: httpx.Response(200, json=document),
        }
    )
    (shown,) = _call(plot, root, [("execute_python", {"code": "plot()"})])
    assert [block.type for block in shown.content] == ["text", "image"]
    assert shown.content[1].mime_type == "image/png"
    assert base64.b64decode(shown.content[1].data) == png


def test_bad_arguments_and_api_errors_are_is_error_results(root):
    api = Api({})  # creating the default session fails: 404
    results = _call(
        api,
        root,
        [
            ("execute_python", {}),
            ("execute_python", {"code": "1", "timeout_seconds": 0}),
            ("execute_python", {"code": "1"}),
            ("list_files", {}),
            ("no_such_tool", {}),
        ],
    )
    assert [r.is_error for r in results] == [True] * 5
    assert "more than 0 seconds" in _text(results[1])
    assert "NOT_FOUND" in _text(results[2])


def test_upload_refuses_paths_outside_the_root_without_any_request(root, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    os.symlink(secret, root / "link.txt")
    api = _files_api()
    results = _call(
        api,
        root,
        [
            ("upload_file", {"local_path": "/etc/hostname"}),
            ("upload_file", {"local_path": "../secret.txt"}),
            ("upload_file", {"local_path": "link.txt"}),
            ("upload_file", {"local_path": "missing.csv"}),
        ],
    )
    assert [r.is_error for r in results] == [True] * 4
    assert "outside the allowed folder" in _text(results[0])
    assert "outside the allowed folder" in _text(results[2])
    assert "missing.csv" in _text(results[3])
    assert api.requests == []


def test_upload_inside_the_root_and_remote_paths_checked_first(root):
    (root / "in.csv").write_text("a,b")
    api = _files_api()
    ok, bad = _call(
        api,
        root,
        [
            ("upload_file", {"local_path": "in.csv"}),
            ("upload_file", {"local_path": "in.csv", "remote_path": "../etc/passwd"}),
        ],
    )
    assert not ok.is_error and "uploaded in.csv as in.csv (3 bytes)" in _text(ok)
    assert bad.is_error and "must not contain '..'" in _text(bad)
    assert json.loads(api.calls("POST", "/v1/sessions/s1/files")[0].content)["path"] == "in.csv"
    assert len(api.calls("POST", "/v1/sessions/s1/files")) == 1


def test_download_never_overwrites_unless_asked_and_stays_in_the_root(root, tmp_path):
    (root / "report.csv").write_text("old")
    (root / "folder").mkdir()
    os.symlink(tmp_path, root / "escape")
    api = _files_api()
    refused, replaced, into_folder, escaped, nested = _call(
        api,
        root,
        [
            ("download_file", {"remote_path": "out/report.csv"}),
            ("download_file", {"remote_path": "out/report.csv", "overwrite": True}),
            ("download_file", {"remote_path": "out/report.csv", "local_path": "folder"}),
            ("download_file", {"remote_path": "out/report.csv", "local_path": "escape/x.csv"}),
            ("download_file", {"remote_path": "out/report.csv", "local_path": "a/b/r.csv"}),
        ],
    )
    assert refused.is_error and "pass overwrite: true" in _text(refused)
    assert not replaced.is_error and (root / "report.csv").read_text() == "new"
    assert not into_folder.is_error and (root / "folder" / "report.csv").read_text() == "new"
    assert escaped.is_error and not (tmp_path / "x.csv").exists()
    assert not nested.is_error and (root / "a" / "b" / "r.csv").read_text() == "new"
