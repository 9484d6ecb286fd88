"""`lci mcp`: an MCP server over stdio exposing execute_python, upload_file, download_file and
list_files, backed by one `Client`.

Tools that take an optional `session_id` use a default session created on first use, so an
agent gets notebook-like state without managing sessions. stdout is the MCP channel: nothing
else may print to it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from anyio.to_thread import run_sync

from lci.client import Client
from lci.errors import LciError
from lci.tools import TOOL_DESCRIPTION, format_result

SERVER_NAME = "lambda-code-interpreter"


def _server_class() -> Any:
    # mcp 2.x renamed FastMCP to MCPServer; accept both so either major version works.
    try:
        from mcp.server.mcpserver import MCPServer

        return MCPServer
    except ImportError:  # pragma: no cover - mcp 1.x
        from mcp.server.fastmcp import FastMCP  # type: ignore[attr-defined]

        return FastMCP


class _SessionHolder:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.default_session: str | None = None
        self._lock = threading.Lock()  # tools run on worker threads

    def resolve(self, session_id: str | None) -> str:
        if session_id:
            return session_id
        with self._lock:
            if self.default_session is None:
                self.default_session = self.client.create_session().session_id
            return self.default_session


async def to_thread(function: Any, *args: Any) -> str:
    """Client calls block on HTTP; keep the MCP event loop free while they run."""
    return await run_sync(function, *args)


def build_server(client: Client) -> Any:
    holder = _SessionHolder(client)
    server = _server_class()(SERVER_NAME)

    @server.tool(name="execute_python", description=TOOL_DESCRIPTION)
    async def execute_python(
        code: str,
        session_id: str | None = None,
        packages: list[str] | None = None,
        timeout_seconds: float | None = None,
    ) -> str:
        return await to_thread(_execute, code, session_id, packages, timeout_seconds)

    def _execute(
        code: str,
        session_id: str | None,
        packages: list[str] | None,
        timeout_seconds: float | None,
    ) -> str:
        timeout_ms = int(timeout_seconds * 1000) if timeout_seconds else None
        try:
            result = client.execute(
                code,
                session_id=holder.resolve(session_id),
                packages=packages or None,
                timeout_ms=timeout_ms,
            )
        except LciError as exc:
            if exc.code != "SESSION_NOT_FOUND" or session_id:
                return f"Error: {exc.message} ({exc.code})"
            # The default session expired: start a fresh one, and say so.
            holder.default_session = None
            result = client.execute(
                code,
                session_id=holder.resolve(None),
                packages=packages or None,
                timeout_ms=timeout_ms,
            )
            return "(the previous session expired; a new one was started)\n" + format_result(result)
        return format_result(result)

    @server.tool(
        name="upload_file",
        description="Upload a local file into the session's working directory.",
    )
    async def upload_file(
        local_path: str, remote_path: str | None = None, session_id: str | None = None
    ) -> str:
        return await to_thread(_upload, local_path, remote_path, session_id)

    def _upload(local_path: str, remote_path: str | None, session_id: str | None) -> str:
        try:
            info = client.upload_file(holder.resolve(session_id), local_path, remote_path)
        except (LciError, OSError) as exc:
            return f"Error: {exc}"
        return f"uploaded {local_path} as {info.path} ({info.size} bytes)"

    @server.tool(
        name="download_file",
        description="Download a file from the session's working directory to a local path.",
    )
    async def download_file(
        remote_path: str, local_path: str | None = None, session_id: str | None = None
    ) -> str:
        return await to_thread(_download, remote_path, local_path, session_id)

    def _download(remote_path: str, local_path: str | None, session_id: str | None) -> str:
        target = Path(local_path or Path(remote_path).name)
        try:
            data = client.download_file(holder.resolve(session_id), remote_path, target)
        except (LciError, OSError) as exc:
            return f"Error: {exc}"
        return f"downloaded {remote_path} to {target} ({len(data)} bytes)"

    @server.tool(name="list_files", description="List the files in the session's workspace.")
    async def list_files(session_id: str | None = None) -> str:
        return await to_thread(_list, session_id)

    def _list(session_id: str | None) -> str:
        try:
            files = client.list_files(holder.resolve(session_id))
        except LciError as exc:
            return f"Error: {exc.message} ({exc.code})"
        return "\n".join(f"{f.path}\t{f.size}" for f in files) or "(no files)"

    return server


def serve(client: Client) -> None:
    build_server(client).run("stdio")
