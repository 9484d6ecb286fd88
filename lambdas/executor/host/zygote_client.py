"""The parent's side of the zygote (sandbox/zygote.py): start it with a scrubbed environment,
ask it to fork workers and to reap them, follow its preload, kill it with everything under it.

Replies come in the order the requests went; the one frame the zygote sends unasked, "preloaded"
(its data stack is loaded and its memory shaped), may come between them and is taken note of
wherever it is read."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any

from lambdas.executor import protocol
from lambdas.executor.host import procs
from lambdas.executor.sandbox import fontcache, heap
from lambdas.executor.sandbox.zygote import INLINE_BACKEND
from lambdas.executor.settings import ExecutorSettings

ZYGOTE_REQUEST_TIMEOUT_S = 30.0
_ZYGOTE_ENV_VARS = ("PATH", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH")


class EnvironmentStartError(Exception):
    """The zygote could not be started."""


class ZygoteClient:
    def __init__(self, settings: ExecutorSettings) -> None:
        config_dir = os.path.join(settings.root, "config")
        env = {name: os.environ[name] for name in _ZYGOTE_ENV_VARS if name in os.environ}
        env.update(
            {
                "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
                "MPLCONFIGDIR": os.path.join(config_dir, "matplotlib"),
                "IPYTHONDIR": os.path.join(config_dir, "ipython"),
                "HOME": config_dir,
                "PYTHONPATH": os.pathsep.join(os.path.abspath(path) for path in sys.path if path),
                "PYTHONUNBUFFERED": "1",
                # Workers forked before matplotlib is preloaded draw inline too.
                "MPLBACKEND": INLINE_BACKEND,
                **heap.allocator_environment(),
            }
        )
        for directory in (env["MPLCONFIGDIR"], env["IPYTHONDIR"]):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fontcache.seed_matplotlib_cache(env["MPLCONFIGDIR"])  # else preloading builds one
        parent_sock, child_sock = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lambdas.executor.sandbox.zygote", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                env=env,  # scrubbed: nothing secret may be in the memory workers inherit
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd=config_dir,
            )
        finally:
            child_sock.close()
        self.sock = parent_sock
        self.pending = 0
        self.sock.settimeout(settings.LCI_ZYGOTE_START_TIMEOUT_S)
        try:
            ready = protocol.recv_frame(self.sock)
        except (OSError, protocol.ProtocolError) as exc:
            self.kill()
            raise EnvironmentStartError("the execution environment failed to start") from exc
        self.sock.settimeout(ZYGOTE_REQUEST_TIMEOUT_S)
        self.pid = self.process.pid
        self.ready_ms = float(ready.get("ready_ms", 0))
        self.requests_sent = 0
        # The zygote's "preloaded" frame, once it came: preload_ms, modules, huge_pages,
        # immortal_objects.
        self.preload_report: dict[str, Any] | None = None

    @property
    def preloaded(self) -> bool:
        return self.preload_report is not None

    @property
    def answers_at_once(self) -> bool:
        """Whether a request is answered without waiting for a preload step: the first one
        (the zygote waits for it) and every one once the preload is complete."""
        return self.preloaded or self.requests_sent == 0

    def _take_event(self, frame: Any) -> bool:
        if isinstance(frame, dict) and frame.get("event") == "preloaded":
            self.preload_report = frame
            return True
        return False

    def _recv_reply(self) -> dict[str, Any]:
        while True:
            frame = protocol.recv_frame(self.sock)
            if not self._take_event(frame):
                if not isinstance(frame, dict):
                    raise protocol.ProtocolError("unexpected zygote reply")
                return frame

    def poll_events(self) -> None:
        """Take note of what the zygote sent unasked, without waiting (no reply may be due)."""
        if self.pending or self.preloaded:  # it sends nothing unasked after "preloaded"
            return
        while select.select([self.sock], [], [], 0)[0]:
            if not self._take_event(protocol.recv_frame(self.sock)):
                raise protocol.ProtocolError("unexpected zygote reply")

    def wait_preloaded(self, timeout_s: float) -> bool:
        """Wait until the zygote's preload is complete (no reply may be due); False if it is
        not within `timeout_s`."""
        if self.pending:
            raise protocol.ProtocolError("collect the pending reply first")
        deadline = time.monotonic() + timeout_s
        while not self.preloaded:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                return False
            if not self._take_event(protocol.recv_frame(self.sock)):
                raise protocol.ProtocolError("unexpected zygote reply")
        return True

    @property
    def huge_pages(self) -> int | None:
        """Huge pages of the zygote's shaped heap (host/protections.py); None until preloaded."""
        return int(self.preload_report.get("huge_pages", 0)) if self.preload_report else None

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """Send a request whose reply is read later by `request` or `collect`."""
        protocol.send_frame(self.sock, message, fds)
        self.pending += 1
        self.requests_sent += 1

    def collect(self) -> list[dict[str, Any]]:
        replies = []
        while self.pending:
            self.pending -= 1
            replies.append(self._recv_reply())
        return replies

    def request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        if self.pending:
            raise protocol.ProtocolError("a reply is pending")
        self.send(message, fds)
        return self.collect()[0]

    def reap(self, wait_pid: int | None = None) -> dict[str, list[Any]]:
        if self.pending:
            raise protocol.ProtocolError("collect the pending reply first")
        try:
            return self.request({"op": "reap", "wait_pid": wait_pid}).get("statuses", {})
        except (OSError, protocol.ProtocolError):
            return {}

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        procs.kill_processes(lambda: procs.descendants_of(self.process.pid))
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            self.sock.close()
