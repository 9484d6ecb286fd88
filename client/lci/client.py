"""`Client`: the SDK for the Lambda Code Interpreter HTTP API (SPEC §3).

Works the same against the local stack (`make dev`) and a deployed API Gateway endpoint. One
keep-alive connection pool per client; S3 transfers (presigned POST / GET) go straight to S3 and
never carry the API key. The endpoint and key come from the arguments, else `LCI_ENDPOINT` /
`LCI_API_KEY`, else the config file `lci configure` writes (see `lci.config`).
"""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_delay,
    stop_never,
    wait_chain,
    wait_exponential,
    wait_fixed,
)

from lci.config import API_KEY_ENV, DEFAULT_ENDPOINT, ENDPOINT_ENV, resolve_settings
from lci.errors import LciError
from lci.live import Execution
from lci.models import ExecutionResult, FileInfo, PackageList, Session, Usage
from lci.paths import InvalidRemotePath, validate_remote_path

__all__ = ["API_KEY_ENV", "DEFAULT_ENDPOINT", "ENDPOINT_ENV", "Client"]
# A sync call waits at most ~25 s server-side (then 202); leave headroom for the network.
DEFAULT_HTTP_TIMEOUT_SECONDS = 60.0
DEFAULT_POLL_INTERVAL_SECONDS = 0.25
MAX_POLL_INTERVAL_SECONDS = 2.0


class Client:
    """A Lambda Code Interpreter API client.

    >>> client = Client("http://127.0.0.1:8080", "my-key")      # doctest: +SKIP
    >>> session = client.create_session()                         # doctest: +SKIP
    >>> client.execute("x = 21 * 2\\nx", session_id=session.session_id).text   # doctest: +SKIP
    '42'
    """

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_HTTP_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        settings = resolve_settings(endpoint, api_key)
        self.endpoint = settings.endpoint
        self.api_key = settings.api_key
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._close_callbacks: list[Callable[[], None]] = []

    # -- plumbing ------------------------------------------------------------------------------

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` first thing in `close()` (the tool helpers delete their default
        session this way)."""
        self._close_callbacks.append(callback)

    def close(self) -> None:
        callbacks, self._close_callbacks = self._close_callbacks, []
        try:
            for callback in callbacks:
                callback()
        finally:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        expected: tuple[int, ...] = (200,),
    ) -> tuple[int, Any]:
        """Call the API; return `(status, decoded JSON body or None)` or raise `LciError`."""
        all_headers = {"x-api-key": self.api_key} if self.api_key else {}
        all_headers.update(headers or {})
        try:
            response = self._http.request(
                method, self.endpoint + path, json=json, headers=all_headers
            )
        except httpx.HTTPError as exc:
            raise LciError(0, "CONNECTION_ERROR", f"{self.endpoint}: {exc}") from exc
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = response.text
        if response.status_code not in expected:
            raise LciError.from_response(response.status_code, body)
        return response.status_code, body

    # -- health / catalogue ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/v1/health")[1]

    def packages(self) -> PackageList:
        return PackageList.from_dict(self.request("GET", "/v1/packages")[1])

    def usage(self) -> Usage:
        return Usage.from_dict(self.request("GET", "/v1/usage")[1])

    def diagnostics(self) -> dict[str, Any]:
        """Which protections hold in the deployment's executor environment (`lci doctor`)."""
        report: dict[str, Any] = self.request("GET", "/v1/diagnostics")[1]
        return report

    # -- sessions ----------------------------------------------------------------------------------

    def create_session(self, ttl_seconds: int | None = None) -> Session:
        body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        return Session.from_dict(
            self.request("POST", "/v1/sessions", json=body, expected=(200, 201))[1]
        )

    def get_session(self, session_id: str) -> Session:
        return Session.from_dict(self.request("GET", f"/v1/sessions/{_seg(session_id)}")[1])

    def delete_session(self, session_id: str) -> None:
        self.request("DELETE", f"/v1/sessions/{_seg(session_id)}", expected=(200, 204))

    def fork_session(self, session_id: str, ttl_seconds: int | None = None) -> Session:
        """A new session with copies of this one's last committed variables, files and
        notebook; the two then go their own ways. `ttl_seconds` defaults to the parent's."""
        body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        return Session.from_dict(
            self.request(
                "POST", f"/v1/sessions/{_seg(session_id)}/fork", json=body, expected=(200, 201)
            )[1]
        )

    def notebook(self, session_id: str) -> dict[str, Any]:
        """The session's cells and outputs as an nbformat v4 document — the whole of it: one
        too large for an API response is fetched from its link (`metadata.lci.notebook_url`)."""
        notebook: dict[str, Any] = self.request("GET", f"/v1/sessions/{_seg(session_id)}/notebook")[
            1
        ]
        url = ((notebook.get("metadata") or {}).get("lci") or {}).get("notebook_url")
        if not url:
            return notebook
        whole: dict[str, Any] = json.loads(self.fetch(url))
        return whole

    # -- execution ---------------------------------------------------------------------------------

    def execute(
        self,
        code: str,
        *,
        session_id: str | None = None,
        timeout_ms: int | None = None,
        packages: list[str] | None = None,
        requirements: str | None = None,
        env: dict[str, str] | None = None,
        files: dict[str, bytes] | None = None,
        wait: bool = True,
        idempotency_key: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
        on_poll: Callable[[ExecutionResult], None] | None = None,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
        on_output: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecutionResult:
        """Run `code` in a session (or one-shot without `session_id`).

        `wait=True` (default) returns the finished result, polling `GET /v1/executions/{id}`
        when the server hands back 202 after its sync window. `wait=False` returns at once with
        `status == "running"`; call `wait_for(result.execution_id)` later. `files` (one-shot
        only) are put into the workspace before the run: `{relative path: bytes}`.

        `on_stdout` / `on_stderr` (text) and `on_output` (rich outputs: nbformat v4
        display_data, execute_result, error) are called as the output arrives, in order, while
        the run goes (see `stream` for the same as an iterator).
        """
        if on_stdout is not None or on_stderr is not None or on_output is not None:
            run = self.start(
                code,
                session_id=session_id,
                timeout_ms=timeout_ms,
                packages=packages,
                requirements=requirements,
                env=env,
                files=files,
                idempotency_key=idempotency_key,
            )
            handlers: dict[str, Callable[[Any], None] | None] = {
                "stdout": on_stdout,
                "stderr": on_stderr,
            }
            for event in run:
                if event.kind == "output":
                    if on_output is not None and event.output is not None:
                        on_output(event.output)
                elif (handler := handlers.get(event.kind)) is not None:
                    handler(event.text)
            assert run.result is not None
            return run.result
        body: dict[str, Any] = {"code": code, "wait": wait}
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        if packages:
            body["packages"] = list(packages)
        if requirements:
            body["requirements"] = requirements
        if env:
            body["env"] = dict(env)
        if files:
            if session_id:
                raise ValueError("inline files are for one-shot runs; upload_file() for sessions")
            import base64

            body["files"] = [
                {"path": path, "content_base64": base64.b64encode(data).decode()}
                for path, data in files.items()
            ]
        path = f"/v1/sessions/{_seg(session_id)}/execute" if session_id else "/v1/execute"
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        _, data = self.request("POST", path, json=body, headers=headers, expected=(200, 202))
        result = ExecutionResult.from_dict(data)
        if wait and result.running:
            return self.wait_for(result.execution_id, poll_interval=poll_interval, on_poll=on_poll)
        return result

    def start(
        self,
        code: str,
        *,
        session_id: str | None = None,
        timeout_ms: int | None = None,
        packages: list[str] | None = None,
        requirements: str | None = None,
        env: dict[str, str] | None = None,
        files: dict[str, bytes] | None = None,
        idempotency_key: str | None = None,
    ) -> Execution:
        """Start a run without waiting for it: an `Execution` to iterate over (its output as it
        arrives), interrupt, or `wait()` for."""
        first = self.execute(
            code,
            session_id=session_id,
            timeout_ms=timeout_ms,
            packages=packages,
            requirements=requirements,
            env=env,
            files=files,
            wait=False,
            idempotency_key=idempotency_key,
        )
        return Execution(self, first)

    def stream(self, code: str, **options: Any) -> Execution:
        """`start`, to be iterated over: `for event in client.stream(code): ...` yields
        `ExecutionEvent`s (stdout / stderr text, rich outputs, then the result) as they come."""
        return self.start(code, **options)

    def interrupt(self, execution_id: str) -> None:
        """Ask a running execution to stop: its cell gets KeyboardInterrupt, the session keeps
        its variables, and it ends as `interrupted`. LciError 409 `EXECUTION_FINISHED` once it
        is over."""
        self.request(
            "POST", f"/v1/executions/{_seg(execution_id)}/interrupt", json={}, expected=(202,)
        )

    def get_execution(self, execution_id: str) -> ExecutionResult:
        return ExecutionResult.from_dict(
            self.request("GET", f"/v1/executions/{_seg(execution_id)}")[1]
        )

    def wait_for(
        self,
        execution_id: str,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
        timeout: float | None = None,
        on_poll: Callable[[ExecutionResult], None] | None = None,
    ) -> ExecutionResult:
        """Poll an execution until it is no longer running: `poll_interval` apart at first,
        backing off by a factor of 1.5 up to 2 s; LciError `WAIT_TIMEOUT` when it is still
        running after `timeout` seconds."""

        def still_running(_: RetryCallState) -> ExecutionResult:
            raise LciError(0, "WAIT_TIMEOUT", f"execution {execution_id} is still running")

        def report(state: RetryCallState) -> None:
            if on_poll is not None and state.outcome is not None:
                on_poll(state.outcome.result())

        polling = Retrying(
            retry=retry_if_result(lambda result: result.running),
            # The first wait is `poll_interval` even when it is longer than the cap.
            wait=wait_chain(
                wait_fixed(poll_interval),
                wait_exponential(
                    multiplier=poll_interval, exp_base=1.5, max=MAX_POLL_INTERVAL_SECONDS
                ),
            ),
            stop=stop_never if timeout is None else stop_after_delay(timeout),
            after=report,
            retry_error_callback=still_running,
        )
        result: ExecutionResult = polling(self.get_execution, execution_id)
        return result

    # -- files -------------------------------------------------------------------------------------

    def upload_file(
        self,
        session_id: str,
        source: str | os.PathLike[str] | bytes,
        remote_path: str | None = None,
    ) -> FileInfo:
        """Upload a local file (or bytes) into the session workspace via the presigned POST."""
        if isinstance(source, bytes):
            if not remote_path:
                raise ValueError("remote_path is required when uploading bytes")
            data = source
        else:
            remote_path = remote_path or Path(source).name
            data = Path(source).read_bytes()
        remote_path = _remote(remote_path)
        _, grant = self.request(
            "POST",
            f"/v1/sessions/{_seg(session_id)}/files",
            json={"path": remote_path, "size": len(data)},
        )
        upload = grant["upload"]
        content_type = mimetypes.guess_type(remote_path)[0] or "application/octet-stream"
        try:
            # S3 wants the policy fields first and the file last: httpx sends `data` first.
            response = self._http.post(
                upload["url"],
                data=upload["fields"],
                files={"file": (Path(remote_path).name, data, content_type)},
            )
        except httpx.HTTPError as exc:
            raise LciError(0, "UPLOAD_FAILED", f"upload to storage failed: {exc}") from exc
        if response.status_code >= 300:
            raise LciError(response.status_code, "UPLOAD_FAILED", response.text[:500])
        return FileInfo(path=grant.get("path", remote_path), size=len(data))

    def list_files(self, session_id: str) -> list[FileInfo]:
        _, body = self.request("GET", f"/v1/sessions/{_seg(session_id)}/files")
        return [FileInfo.from_dict(f) for f in body.get("files") or []]

    def file_info(self, session_id: str, remote_path: str) -> FileInfo:
        _, body = self.request(
            "GET", f"/v1/sessions/{_seg(session_id)}/files/{quote(_remote(remote_path), safe='/')}"
        )
        return FileInfo.from_dict(body)

    def download_file(
        self,
        session_id: str,
        remote_path: str,
        local_path: str | os.PathLike[str] | None = None,
    ) -> bytes:
        """Download a workspace file through its presigned URL; also write it if `local_path`."""
        info = self.file_info(session_id, remote_path)
        if not info.download_url:
            raise LciError(0, "DOWNLOAD_FAILED", f"no download URL for {remote_path}")
        data = self.fetch(info.download_url)
        if local_path is not None:
            Path(local_path).write_bytes(data)
        return data

    def fetch(self, url: str) -> bytes:
        """GET a presigned URL (no API key: it goes to S3)."""
        try:
            response = self._http.get(url)
        except httpx.HTTPError as exc:
            raise LciError(0, "DOWNLOAD_FAILED", f"download from storage failed: {exc}") from exc
        if response.status_code != 200:
            raise LciError(response.status_code, "DOWNLOAD_FAILED", response.text[:500])
        return response.content

    def delete_file(self, session_id: str, remote_path: str) -> None:
        self.request(
            "DELETE",
            f"/v1/sessions/{_seg(session_id)}/files/{quote(_remote(remote_path), safe='/')}",
            expected=(200, 204),
        )


def _remote(path: str) -> str:
    """A workspace path checked with the API's rules before any request: `../x` would otherwise
    be normalized away by URL handling and come back as a confusing 404."""
    try:
        return validate_remote_path(path)
    except InvalidRemotePath as exc:
        raise LciError(400, "INVALID_PATH", str(exc)) from exc


def _seg(value: str) -> str:
    """One URL path segment: an id can never inject `/` or `?` into the path."""
    return quote(value, safe="")
