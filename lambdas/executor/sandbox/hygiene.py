"""What a cell may change about its own worker process that would break the next run, put back
between cells (sandbox/worker.py calls these around every cell; each is a few syscalls).

Before a cell: `sys.stdout`/`sys.stderr` replaced or closed, and fds 0-2 closed or dup2'ed
over, come back. After it: timers it left running are cancelled (their default action would
end the worker between runs), a recursion limit it lowered below the worker's own needs is
raised back, and soft rlimits it lowered come back to the sandbox's (never above the hard
limits, which a cell cannot raise). Between runs: multiprocessing's helper processes the
parent killed after the last run are forgotten, so the next pool starts new ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
import sys
from typing import Any

# Soft limits the worker applied (sandbox/worker.py apply_rlimits); RLIMIT_CPU is moved before
# every cell anyway.
RESTORED_RLIMITS = (
    resource.RLIMIT_AS,
    resource.RLIMIT_FSIZE,
    resource.RLIMIT_NOFILE,
    resource.RLIMIT_NPROC,
)
_TIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)
_STANDARD_FDS = (0, 1, 2)


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class ProcessGuard:
    """Created in the worker before its first cell, while fds 0-2 are still the parent's."""

    def __init__(self) -> None:
        # Close-on-exec copies, so no subprocess inherits them.
        self._copies: dict[int, int] = {}
        for fd in _STANDARD_FDS:
            with contextlib.suppress(OSError):
                self._copies[fd] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        self._identities = {fd: _identity(fd) for fd in _STANDARD_FDS}
        self.recursion_limit = sys.getrecursionlimit()
        self.soft_limits: dict[int, int] = {}

    def remember_rlimits(self) -> None:
        """After the sandbox applied its rlimits: the soft values to come back to."""
        for limit in RESTORED_RLIMITS:
            self.soft_limits[limit] = resource.getrlimit(limit)[0]

    def before_cell(self) -> None:
        for fd, copy in self._copies.items():
            if _identity(fd) != self._identities[fd]:
                with contextlib.suppress(OSError):
                    os.dup2(copy, fd)

    def after_cell(self) -> None:
        # Plain try/except, not contextlib.suppress: this runs after every cell.
        for limit, wanted in self.soft_limits.items():
            try:
                soft, hard = resource.getrlimit(limit)
                if soft == wanted:
                    continue
                if hard != resource.RLIM_INFINITY and (
                    wanted == resource.RLIM_INFINITY or wanted > hard
                ):
                    wanted = hard
                resource.setrlimit(limit, (wanted, hard))
            except (OSError, ValueError):
                continue
        if sys.getrecursionlimit() < self.recursion_limit:
            sys.setrecursionlimit(self.recursion_limit)
        for timer in _TIMERS:
            try:
                signal.setitimer(timer, 0)
            except OSError:
                continue


def forget_killed_helpers(reaped: set[int]) -> None:
    """multiprocessing keeps its resource tracker and fork server for the life of the process;
    the parent kills them after every run (nothing user code starts outlives a run). Forget
    the killed ones, or the next pool would fail or warn about them."""
    if not reaped:
        return
    tracker_module = sys.modules.get("multiprocessing.resource_tracker")
    tracker = getattr(tracker_module, "_resource_tracker", None)
    if tracker is not None and getattr(tracker, "_pid", None) in reaped:
        with contextlib.suppress(OSError, TypeError):
            os.close(tracker._fd)
        tracker._fd = tracker._pid = None
        _forget_old_registrations(tracker)
    server_module = sys.modules.get("multiprocessing.forkserver")
    server = getattr(server_module, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) in reaped:
        with contextlib.suppress(OSError, TypeError):
            os.close(server._forkserver_alive_fd)
        server._forkserver_pid = server._forkserver_alive_fd = None
        server._forkserver_address = None


def _forget_old_registrations(tracker: Any) -> None:
    """The next tracker never saw what its killed predecessor registered (semaphores of a pool
    an earlier run made): unregistering those would make it print a KeyError traceback into
    some later run's stderr. Only what was registered since goes to it."""
    if getattr(tracker, "_lci_registered", None) is not None:
        tracker._lci_registered.clear()
        return
    registered: set[tuple[str, str]] = set()
    send = tracker._send

    def send_known(command: str, name: str, rtype: str) -> None:
        if command == "REGISTER":
            registered.add((name, rtype))
        elif command == "UNREGISTER":
            if (name, rtype) not in registered:
                return
            registered.discard((name, rtype))
        send(command, name, rtype)

    tracker._lci_registered = registered
    tracker._send = send_known
