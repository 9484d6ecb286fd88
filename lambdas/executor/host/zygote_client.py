"""The parent's side of the zygote (sandbox/zygote.py): start it with a scrubbed environment,
ask it to fork workers and to reap them, kill it with everything under it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from typing import Any

from lambdas.executor import protocol
from lambdas.executor.host import procs
from lambdas.executor.sandbox import fontcache, heap
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
        self.preload_ms = float(ready.get("preload_ms", 0))
        self.modules = list(ready.get("modules", []))
        self.huge_pages = int(ready.get("huge_pages", 0))  # reported by host/protections.py

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """Send a request whose reply is read later by `request` or `collect`."""
        protocol.send_frame(self.sock, message, fds)
        self.pending += 1

    def collect(self) -> list[dict[str, Any]]:
        replies = []
        while self.pending:
            self.pending -= 1
            reply = protocol.recv_frame(self.sock)
            if not isinstance(reply, dict):
                raise protocol.ProtocolError("unexpected zygote reply")
            replies.append(reply)
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
