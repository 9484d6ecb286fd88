"""`lci` as a Jupyter kernel: every cell runs in a Lambda Code Interpreter session.

A wrapper kernel (ipykernel's `Kernel` base class, extra `lci[jupyter]`) for JupyterLab, VS Code
and anything else that speaks the Jupyter protocol. It creates a session when it starts,
forwards each cell (`wait: false`, then polls the execution and sends output as it arrives),
maps results to Jupyter messages (stream, display_data, execute_result, error), turns Jupyter's
interrupt (SIGINT to this process) into `POST /v1/executions/{id}/interrupt` (the remote cell
stops, the session keeps its variables), answers `is_complete` with IPython's own check and
deletes the session at shutdown. Endpoint and key: `LCI_ENDPOINT` / `LCI_API_KEY`, else the
config file `lci configure` writes. `lci kernel install` writes the kernelspec
(`lci.kernelspec`); Jupyter starts this module as `python -m lci.kernel -f <connection file>`.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from lci import __version__
from lci.client import Client
from lci.config import ConfigError
from lci.errors import LciError
from lci.kernelspec import DISPLAY_NAME, JUPYTER_PIP_LINE, REMOTE_PYTHON

try:
    from ipykernel.kernelbase import Kernel
except ImportError:  # `python -m lci.kernel` without the extra
    raise SystemExit(
        f"the lci Jupyter kernel needs the optional jupyter dependencies:\n  {JUPYTER_PIP_LINE}"
    ) from None

logger = logging.getLogger("lci.kernel")

POLL_SECONDS = 0.25  # live output is at most ~1 s behind the code (SPEC §3)
MAX_POLL_SECONDS = 1.0
SESSION_GONE = "SESSION_NOT_FOUND"

Send = Callable[[str, dict[str, Any]], None]


def is_complete(code: str) -> dict[str, Any]:
    """Jupyter's is_complete reply for `code`, by IPython's own rules (magics, `!cmd` included)."""
    from IPython.core.inputtransformer2 import TransformerManager

    status, indent = TransformerManager().check_complete(code)
    reply: dict[str, Any] = {"status": status}
    if status == "incomplete":
        reply["indent"] = " " * (indent or 0)
    return reply


class OutputForwarder:
    """Sends a run's nbformat outputs as Jupyter messages, each once. Every poll returns the
    whole list so far, and it is not always a prefix of the next one (a running cell's list has
    no execute_result yet, the finished one has it before the figures flushed at the end), so
    outputs are recognised by content, not by position: per stream name the characters already
    sent, per other output how many of its identical copies."""

    def __init__(self, send: Send, execution_count: int) -> None:
        self._send = send
        self._execution_count = execution_count
        self._stream_chars: dict[str, int] = {}
        self._copies_sent: dict[str, int] = {}
        self.sent_error = False

    def forward(self, outputs: list[dict[str, Any]]) -> None:
        stream_seen: dict[str, int] = {}
        copies_seen: dict[str, int] = {}
        for output in outputs:
            if output.get("output_type") == "stream":
                name = str(output.get("name", "stdout"))
                text = _text(output.get("text"))
                start = stream_seen.get(name, 0)
                stream_seen[name] = start + len(text)
                sent = self._stream_chars.get(name, 0)
                if stream_seen[name] > sent:
                    self._send("stream", {"name": name, "text": text[max(0, sent - start) :]})
                    self._stream_chars[name] = stream_seen[name]
                continue
            same = {k: v for k, v in output.items() if k != "execution_count"}
            key = json.dumps(same, sort_keys=True, default=str)
            copies_seen[key] = copies_seen.get(key, 0) + 1
            if copies_seen[key] > self._copies_sent.get(key, 0):
                self._send_output(output)
                self._copies_sent[key] = copies_seen[key]

    def _send_output(self, output: dict[str, Any]) -> None:
        kind = output.get("output_type")
        data = output.get("data") or {}
        metadata = output.get("metadata") or {}
        if kind == "display_data":
            self._send("display_data", {"data": data, "metadata": metadata, "transient": {}})
        elif kind == "execute_result":
            self._send(
                "execute_result",
                {"execution_count": self._execution_count, "data": data, "metadata": metadata},
            )
        elif kind == "error":
            self._send("error", _error_content(output))
            self.sent_error = True


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _error_content(output: dict[str, Any]) -> dict[str, Any]:
    return {
        "ename": str(output.get("ename", "Error")),
        "evalue": str(output.get("evalue", "")),
        "traceback": [str(line) for line in output.get("traceback") or []],
    }


class LciKernel(Kernel):
    implementation = "lci"
    implementation_version = __version__
    language = "python"
    language_info = {
        "name": "python",
        "version": REMOTE_PYTHON,
        "mimetype": "text/x-python",
        "file_extension": ".py",
        "pygments_lexer": "ipython3",
        "codemirror_mode": {"name": "ipython", "version": 3},
        "nbconvert_exporter": "python",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: Client | None = None
        self.session_id: str | None = None
        try:
            self._session()
        except (LciError, ConfigError) as exc:
            # The kernel stays up: the first cell shows the problem instead of a dead kernel.
            logger.warning("no session at start: %s", exc)

    @property
    def banner(self) -> str:  # type: ignore[override]
        where = self._client.endpoint if self._client else "(not connected)"
        session = self.session_id or "none yet"
        return f"{DISPLAY_NAME}\nendpoint {where}, session {session}"

    # -- session ------------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client()
        return self._client

    def _session(self) -> str:
        if self.session_id is None:
            self.session_id = self.client.create_session().session_id
            logger.info("session %s on %s", self.session_id, self.client.endpoint)
        return self.session_id

    def _delete_session(self) -> None:
        if self.session_id is None or self._client is None:
            return
        try:
            self._client.delete_session(self.session_id)
        except LciError as exc:
            logger.warning("could not delete session %s: %s", self.session_id, exc)
        self.session_id = None

    # -- execution ----------------------------------------------------------------------------

    async def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: dict[str, Any] | None = None,
        cell_id: str | None = None,
    ) -> dict[str, Any]:
        if not code.strip():
            return self._ok_reply()
        interrupt = threading.Event()
        previous = self._catch_sigint(interrupt)
        try:
            return self._run(code, silent, interrupt)
        except (LciError, ConfigError) as exc:
            name, value = (
                (exc.code, exc.message) if isinstance(exc, LciError) else ("Config", str(exc))
            )
            return self._error_reply(
                {"ename": f"LciError[{name}]", "evalue": value, "traceback": [f"{name}: {value}"]},
                silent,
            )
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _catch_sigint(self, interrupt: threading.Event) -> Any:
        """While a cell runs, Jupyter's interrupt (SIGINT) asks for the remote interrupt instead
        of raising KeyboardInterrupt in the middle of an HTTP call."""
        if threading.current_thread() is not threading.main_thread():
            return None
        return signal.signal(signal.SIGINT, lambda *_: interrupt.set())

    def _run(self, code: str, silent: bool, interrupt: threading.Event) -> dict[str, Any]:
        def send(kind: str, content: dict[str, Any]) -> None:
            if not silent:
                self.send_response(self.iopub_socket, kind, content)

        forwarder = OutputForwarder(send, self.execution_count)
        result = self._start(code, send)
        interval = POLL_SECONDS
        while result.running:
            forwarder.forward(result.outputs)
            if interrupt.is_set():  # each interrupt (a second one too) asks once more
                interrupt.clear()
                self._interrupt(result.execution_id, send)
            interrupt.wait(interval)  # an interrupt cuts the wait short
            interval = min(interval * 1.25, MAX_POLL_SECONDS)
            result = self.client.get_execution(result.execution_id)
        forwarder.forward(result.outputs)
        for warning in result.warnings:
            send("stream", {"name": "stderr", "text": f"[lci] {warning}\n"})
        if result.success:
            return self._ok_reply()
        error = (
            {
                "ename": result.error.name,
                "evalue": result.error.value,
                "traceback": list(result.error.traceback),
            }
            if result.error is not None
            else {
                "ename": result.status,
                "evalue": "",
                "traceback": [f"the run ended: {result.status}"],
            }
        )
        if not forwarder.sent_error:
            send("error", error)
        return {"status": "error", "execution_count": self.execution_count, **error}

    def _start(self, code: str, send: Send) -> Any:
        session_id = self._session()
        try:
            return self.client.execute(code, session_id=session_id, wait=False)
        except LciError as exc:
            if exc.code != SESSION_GONE:
                raise
        # Expired (idle past its TTL) or deleted elsewhere: a new one, without the old state.
        self.session_id = None
        send(
            "stream",
            {
                "name": "stderr",
                "text": f"[lci] session {session_id} is gone (expired?): running in a new "
                "session; earlier variables and files are not there\n",
            },
        )
        return self.client.execute(code, session_id=self._session(), wait=False)

    def _interrupt(self, execution_id: str, send: Send) -> None:
        try:
            self.client.interrupt(execution_id)
        except LciError as exc:
            if exc.code != "EXECUTION_FINISHED":  # finished meanwhile: nothing to stop
                send("stream", {"name": "stderr", "text": f"[lci] interrupt failed: {exc}\n"})

    def _ok_reply(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "execution_count": self.execution_count,
            "payload": [],
            "user_expressions": {},
        }

    def _error_reply(self, error: dict[str, Any], silent: bool) -> dict[str, Any]:
        if not silent:
            self.send_response(self.iopub_socket, "error", error)
        return {"status": "error", "execution_count": self.execution_count, **error}

    # -- the rest of the protocol ---------------------------------------------------------------

    async def do_is_complete(self, code: str) -> dict[str, Any]:  # type: ignore[override]
        return is_complete(code)

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        self._delete_session()
        if self._client is not None:
            self._client.close()
            self._client = None
        return {"status": "ok", "restart": restart}


def main() -> None:
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.launch_instance(kernel_class=LciKernel)


if __name__ == "__main__":
    main()
