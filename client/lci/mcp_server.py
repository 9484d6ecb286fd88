"""`lci mcp`: an MCP server over stdio exposing execute_python, upload_file, download_file and
list_files, backed by one `Client`. Needs the `mcp` extra (`lci.cli` checks before importing).

- One default session per connection, created on the first call that needs one and deleted
  when the connection ends, so an agent gets notebook-like state without managing sessions.
- Results are shaped for the model by `lci.shaping`: figures come back as `ImageContent`, long
  output keeps head and tail within `max_output_chars`.
- Local files stay inside a root folder (`--root`, default the working directory): paths are
  resolved, symlinks included, and refused outside it; a download never replaces an existing
  file unless `overwrite` is true. Remote paths are checked with the API's rules first.
- Every failure is a tool result with `isError: true` and a sentence the model can act on.
- `execute_python` follows the run and sends what it prints as progress notifications while
  it goes (to callers that asked for progress), so a long run is not silent.

stdout is the MCP channel: nothing else may print to it (logs go to stderr).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from anyio import from_thread
from anyio.to_thread import run_sync
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from lci.client import Client
from lci.default_session import DefaultSession
from lci.errors import LciError
from lci.paths import InvalidRemotePath, LocalRoot, OutsideRoot, validate_remote_path
from lci.shaping import ShapedOutput, ShapingLimits, tool_error
from lci.tools import (
    TOOL_DESCRIPTION,
    TOOL_NAME,
    TOOL_PARAMETERS,
    ToolArgumentError,
    api_error,
    parse_execute_arguments,
    run_execute_python,
)

SERVER_NAME = "lambda-code-interpreter"
PROGRESS_MESSAGE_CHARS = 2000
logger = logging.getLogger(__name__)

# Argument descriptions the model reads in each tool's input schema.
_EXECUTE = TOOL_PARAMETERS["properties"]
Code = Annotated[str, Field(description=_EXECUTE["code"]["description"])]
Packages = Annotated[list[str] | None, Field(description=_EXECUTE["packages"]["description"])]
TimeoutSeconds = Annotated[
    float | None, Field(description=_EXECUTE["timeout_seconds"]["description"])
]
SessionId = Annotated[
    str | None,
    Field(description="A session id from the API; by default this connection's own session."),
]
RemotePath = Annotated[
    str, Field(description="A path relative to the session's working directory, e.g. 'out/a.csv'.")
]
LocalPath = Annotated[
    str, Field(description="A local path; relative paths start at the root folder.")
]


class ProgressReporter:
    """What a long run prints, as MCP progress notifications (`notifications/progress`, sent
    only when the caller asked for progress): the progress is the seconds elapsed, the message
    the newest output, its last `PROGRESS_MESSAGE_CHARS` characters."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._started = time.monotonic()

    def printed(self, text: str) -> None:
        """From the tool's worker thread: report `text` on the event loop."""
        message = text[-PROGRESS_MESSAGE_CHARS:]
        elapsed = round(time.monotonic() - self._started, 3)
        try:
            from_thread.run(self._ctx.report_progress, elapsed, None, message)
        except Exception:  # a notification that cannot be sent must not fail the run
            logger.debug("a progress notification was not sent", exc_info=True)


def _result(shaped: ShapedOutput) -> CallToolResult:
    return CallToolResult.model_validate({"content": shaped.for_mcp(), "isError": shaped.is_error})


def _text(text: str) -> CallToolResult:
    return _result(ShapedOutput(sections=[text]))


async def _off_loop(function: Callable[[], CallToolResult]) -> CallToolResult:
    """Client calls block on HTTP; keep the MCP event loop free while they run."""
    return await run_sync(function)


class FileTools:
    """The file tools' logic, outside the MCP plumbing."""

    def __init__(self, client: Client, session: DefaultSession, root: LocalRoot) -> None:
        self.client = client
        self.session = session
        self.root = root

    def upload(self, local_path: str, remote_path: str | None, session_id: str | None) -> str:
        source = self.root.resolve(local_path)
        if not source.is_file():
            raise FileNotFoundError(f"{local_path} is not a file under {self.root.path}")
        remote = validate_remote_path(remote_path or source.name)
        data = source.read_bytes()
        info, note = self.session.run(
            session_id, lambda sid: self.client.upload_file(sid, data, remote)
        )
        shown = self.root.display(source)
        return _with_note(note, f"uploaded {shown} as {info.path} ({info.size} bytes)")

    def download(
        self,
        remote_path: str,
        local_path: str | None,
        session_id: str | None,
        overwrite: bool,
    ) -> str:
        remote = validate_remote_path(remote_path)
        name = Path(remote).name
        target = self.root.resolve(local_path or name)
        if (local_path or "").endswith(("/", os.sep)) or target.is_dir():
            target = self.root.resolve(target / name)
        if target.exists() and not overwrite:
            raise FileExistsError(
                f"{self.root.display(target)} already exists; pass overwrite: true to replace it"
            )
        data, note = self.session.run(
            session_id, lambda sid: self.client.download_file(sid, remote)
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symlink planted after the check above is not followed out of the root.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
        flags |= os.O_TRUNC if overwrite else os.O_EXCL
        descriptor = os.open(target, flags, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return _with_note(
            note, f"downloaded {remote} to {self.root.display(target)} ({len(data)} bytes)"
        )

    def listing(self, session_id: str | None) -> str:
        files, note = self.session.run(session_id, self.client.list_files)
        text = "\n".join(f"{f.path}\t{f.size}" for f in files) or "(no files)"
        return _with_note(note, text)


def _with_note(note: str, text: str) -> str:
    return f"{note}\n{text}" if note else text


def _guarded(action: Callable[[], str]) -> CallToolResult:
    """Run a file tool; every expected failure becomes an `isError` result."""
    try:
        return _text(action())
    except LciError as exc:
        return _result(api_error(exc))
    except (InvalidRemotePath, OutsideRoot) as exc:
        return _result(tool_error(str(exc)))
    except OSError as exc:
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        return _result(tool_error(reason))


def build_server(
    client: Client,
    root: LocalRoot,
    limits: ShapingLimits | None = None,
    session: DefaultSession | None = None,
) -> Any:
    session = session or DefaultSession(client)
    files = FileTools(client, session, root)
    # WARNING: the library's and httpx's per-request INFO lines would flood the client's log.
    server = MCPServer(SERVER_NAME, log_level="WARNING")

    @server.tool(name=TOOL_NAME, description=TOOL_DESCRIPTION)
    async def execute_python(
        ctx: Context,
        code: Code,
        session_id: SessionId = None,
        packages: Packages = None,
        timeout_seconds: TimeoutSeconds = None,
    ) -> CallToolResult:
        progress = ProgressReporter(ctx)

        def run() -> CallToolResult:
            arguments = {"code": code, "packages": packages, "timeout_seconds": timeout_seconds}
            try:
                parsed = parse_execute_arguments(arguments)
            except ToolArgumentError as exc:
                return _result(tool_error(str(exc)))
            return _result(
                run_execute_python(
                    client,
                    session,
                    parsed,
                    session_id=session_id,
                    limits=limits,
                    on_progress=progress.printed,
                )
            )

        return await _off_loop(run)

    @server.tool(
        name="upload_file",
        description=(
            f"Upload a local file (a path under {root.path}, relative paths start there) into "
            "the session's working directory, as remote_path (default: its file name)."
        ),
    )
    async def upload_file(
        local_path: LocalPath,
        remote_path: Annotated[
            str | None, Field(description="Where to put it (default: the file's name).")
        ] = None,
        session_id: SessionId = None,
    ) -> CallToolResult:
        return await _off_loop(
            lambda: _guarded(lambda: files.upload(local_path, remote_path, session_id))
        )

    @server.tool(
        name="download_file",
        description=(
            "Download a file from the session's working directory to a local path under "
            f"{root.path} (default: its file name there; a folder keeps the file name). An "
            "existing file is only replaced with overwrite: true."
        ),
    )
    async def download_file(
        remote_path: RemotePath,
        local_path: Annotated[
            str | None,
            Field(description="A file or folder under the root (default: the file's name)."),
        ] = None,
        session_id: SessionId = None,
        overwrite: Annotated[
            bool, Field(description="Replace an existing local file (default: refuse).")
        ] = False,
    ) -> CallToolResult:
        return await _off_loop(
            lambda: _guarded(lambda: files.download(remote_path, local_path, session_id, overwrite))
        )

    @server.tool(name="list_files", description="List the files in the session's workspace.")
    async def list_files(session_id: SessionId = None) -> CallToolResult:
        return await _off_loop(lambda: _guarded(lambda: files.listing(session_id)))

    return server


def serve(client: Client, root: LocalRoot, limits: ShapingLimits | None = None) -> None:
    """Serve until the MCP client closes stdin (or sends SIGTERM); then delete the default
    session."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lci mcp: %(message)s"))
    package_logger = logging.getLogger("lci")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = False  # the root handler MCPServer installs would repeat it
    session = DefaultSession(client)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        build_server(client, root, limits, session).run("stdio")
    finally:
        signal.signal(signal.SIGTERM, previous)
        session.close()
