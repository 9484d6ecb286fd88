"""The zygote: forks session workers, ready early and preloading the data stack as it goes.

Started by the trusted parent with a scrubbed environment (so no secret is ever in the memory
that workers inherit) and a socketpair fd as argv[1]. Start-up is staged, so a brand-new
environment answers its first session fast: the zygote says "ready" once the interpreter, the
IPython shell and the worker's own modules are loaded (all a first `print(2+2)` needs), answers
the first request (the parent asks for a spare worker at once), then preloads numpy, pandas,
matplotlib and the first-use costs of a plot and a traceback one step at a time, whenever no
request is waiting, and last shapes its memory for forking (immortal objects, frozen GC, huge
pages) and says "preloaded". A worker forked before that imports what its cells use; later
workers find it all loaded. Requests are JSON frames; a `fork` request carries the worker's
socket, its stdout/stderr pipes and its output mirror as passed fds. The zygote is a child
subreaper (orphans of user code land here, where the parent can find and kill them),
non-dumpable, and exits with everything under it when the parent's end of the socket closes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from lambdas.executor import protocol
from lambdas.executor.host import procs
from lambdas.executor.sandbox import capture as cell_capture

FORK_FDS = 4  # a fork request carries: worker socket, stdout pipe, stderr pipe, output mirror
# How long a fresh zygote waits for its first request before it starts preloading: the parent
# asks for a spare worker within a millisecond or two of "ready", and that fork should not wait
# for a preload step.
FIRST_REQUEST_GRACE_S = 0.25
# The backend matplotlib uses in every process of the environment (the parent sets MPLBACKEND
# to it as well, so a worker forked before matplotlib was preloaded draws inline too).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# Throwaway cells that pay first-use costs before forking; `store_history=False` and no result,
# so nothing lands in the user namespace.
_WARM_UP_EXPRESSION = "__lci_warm = 1 + 1\ndel __lci_warm"
_WARM_UP_PLOT = "import matplotlib.pyplot as __lci_plt\n__lci_plt.plot([1, 2])\ndel __lci_plt"
_WARM_UP_TRACEBACK = "1 / 0"
# What the worker's modules import only when used (sandbox/transfer.py, sandbox/snapshot.py), so
# the zygote is ready sooner: preloaded first, for every worker forked after that.
_WORKER_DEFERRED_IMPORTS = ("urllib.request", "secrets", "hashlib", "cloudpickle")


def _load_fork_ready(ipython_dir: str) -> Any:
    """What every worker needs whatever its cells do: the shell and the worker's modules."""
    from lambdas.executor.sandbox import (  # noqa: F401
        kernel,
        packages,
        snapshot,
        transfer,
        worker,
        workspace,
    )

    shell = kernel.build_shell(ipython_dir)
    _warm_up(shell, _WARM_UP_EXPRESSION)
    return shell


def _warm_up(shell: Any, code: str) -> None:

    cell_capture.SINK.capture = cell_capture.CellCapture(1 << 20, 1 << 24)
    with contextlib.suppress(Exception):
        shell.run_cell(code, store_history=False)
    cell_capture.SINK.capture = cell_capture.CellCapture(0, 0)
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        with contextlib.suppress(AttributeError):
            delattr(sys, name)
    shell.execution_count = 1


class Preload:
    """The data stack, loaded one step at a time between requests, then the memory shaping.
    Whatever of the stack is not importable is skipped."""

    def __init__(self, shell: Any, started: float) -> None:
        self.shell = shell
        self.started = started
        self.modules: list[str] = []
        self.immortal_objects = 0
        self.huge_pages = 0
        self.steps: deque[Callable[[], object]] = deque(
            [
                self._worker_deferred_imports,
                self._numpy,
                lambda: self._import("pandas"),
                self._matplotlib,
                self._inline_plots,
                self._plot,
                lambda: _warm_up(self.shell, _WARM_UP_TRACEBACK),
                self._shape_memory,
            ]
        )

    @property
    def complete(self) -> bool:
        return not self.steps

    def run_next_step(self) -> None:
        with contextlib.suppress(Exception):
            self.steps.popleft()()

    def _import(self, name: str) -> bool:
        try:
            __import__(name)
        except Exception:
            return False
        self.modules.append(name)
        return True

    def _worker_deferred_imports(self) -> None:
        for name in _WORKER_DEFERRED_IMPORTS:
            self._import(name)

    def _numpy(self) -> None:
        if not self._import("numpy"):
            return
        import numpy

        # Every forked worker would otherwise share the zygote's legacy global RNG state.
        # A full MT19937 key straight from the kernel: seed() without an argument derives one
        # through SeedSequence, about 0.3 ms of every fork.
        def reseed() -> None:
            numpy.random.seed(numpy.frombuffer(os.urandom(2496), dtype=numpy.uint32))

        os.register_at_fork(after_in_child=reseed)

    def _matplotlib(self) -> None:
        if self._import("matplotlib"):
            import matplotlib

            matplotlib.use(INLINE_BACKEND)

    def _inline_plots(self) -> None:
        if "matplotlib" in self.modules:
            self.shell.enable_matplotlib("inline")  # imports pyplot

    def _plot(self) -> None:
        if "matplotlib" not in self.modules:
            return
        _warm_up(self.shell, _WARM_UP_PLOT)
        # matplotlib empties its font cache in every forked child (FreeType handles are not
        # fork-safe); emptied here, that costs a child nothing until it draws text.
        font_manager = sys.modules.get("matplotlib.font_manager")
        if font_manager is not None:
            font_manager._get_font.cache_clear()

    def _shape_memory(self) -> None:
        # Workers then neither write refcounts into the preloaded heap nor re-scan it for
        # garbage, so they copy far fewer of its pages. Pages still shared with workers forked
        # earlier get copied here once (those workers keep the originals).
        from lambdas.executor.sandbox import heap

        gc.unfreeze()  # objects frozen before earlier forks are not in gc.get_objects()
        self.immortal_objects = heap.immortalize(gc.get_objects())
        gc.freeze()
        self.huge_pages = heap.collapse_into_huge_pages()

    def report(self) -> dict[str, Any]:
        """The event frame that tells the parent the preload is complete."""
        return {
            "event": "preloaded",
            "preload_ms": (time.perf_counter() - self.started) * 1000,
            "modules": self.modules,
            "huge_pages": self.huge_pages,
            "immortal_objects": self.immortal_objects,
        }


def _start_worker(zygote_sock: socket.socket, fds: list[int], request: dict[str, Any], shell: Any):
    """In the forked child: detach from the zygote and serve as a session worker."""
    code = 0
    try:
        worker_fd, out_fd, err_fd, mirror_fd = fds
        mirror = protocol.OutputMirror.attach(mirror_fd)  # mapped; the fd is closed below
        zygote_sock.detach()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        # Nothing of the zygote's (its control socket above all) may reach user code.
        os.closerange(3, worker_fd)
        os.closerange(worker_fd + 1, 1 << 16)
        os.setsid()
        procs.set_parent_death_signal(signal.SIGKILL)
        procs.set_dumpable(True)  # holds nothing secret; user code may inspect itself
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # user code waits for its own children
        gc.enable()
        from lambdas.executor.sandbox import worker

        worker.serve(socket.socket(fileno=worker_fd), shell, bool(request.get("warm")), mirror)
    except BaseException:
        code = 70
    finally:
        os._exit(code)


_finished: dict[str, list[Any]] = {}  # wait statuses not asked for yet (bounded)
_sweeping = False


def _sweep(*_signal: Any) -> None:
    """Reap every exited child. Also the SIGCHLD handler, so killed workers and orphans of
    user code do not linger as zombies; a signal landing mid-sweep leaves the work to the
    sweep already running."""
    global _sweeping
    if _sweeping:
        return
    _sweeping = True
    try:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            _finished[str(pid)] = _describe(status, usage.ru_maxrss)
            while len(_finished) > 256:
                _finished.pop(next(iter(_finished)))
    finally:
        _sweeping = False


def _reap(wait_pid: int | None) -> dict[str, list[Any]]:
    if wait_pid and str(wait_pid) not in _finished:
        with contextlib.suppress(ChildProcessError):
            pid, status, usage = os.wait4(wait_pid, 0)
            _finished[str(pid)] = _describe(status, usage.ru_maxrss)
    _sweep()
    if wait_pid:
        found = _finished.pop(str(wait_pid), None)
        return {str(wait_pid): found} if found else {}
    return {}


def _describe(status: int, max_rss_kb: int) -> list[Any]:
    """[how, code, peak resident KiB]: the peak tells a crash near the memory limit apart."""
    if os.WIFSIGNALED(status):
        return ["signal", os.WTERMSIG(status), max_rss_kb]
    return ["exit", os.WEXITSTATUS(status), max_rss_kb]


def _exit_with_everything() -> None:
    """The parent is gone: take every worker and whatever user code left behind along."""
    own = os.getpid()
    procs.kill_processes(lambda: procs.descendants_of(own))
    os._exit(0)


def _fork(sock: socket.socket, fds: list[int], request: dict[str, Any], shell: Any) -> int:
    # Objects allocated since the last fork join the frozen heap: a worker's collections then
    # never scan (and so never copy) them.
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        _start_worker(sock, fds, request, shell)
    for fd in fds:
        os.close(fd)
    return pid


def _serve_one(sock: socket.socket, shell: Any, preload: Preload) -> None:
    try:
        request, fds = protocol.recv_frame_with_fds(sock, FORK_FDS)
    except (protocol.ProtocolError, OSError, ValueError):
        _exit_with_everything()
    op = request.get("op") if isinstance(request, dict) else None
    _sweep()
    if op == "fork" and len(fds) == FORK_FDS:
        pid = _fork(sock, fds, request, shell)
        protocol.send_frame(sock, {"pid": pid, "preloaded": preload.complete})
        return
    for fd in fds:
        os.close(fd)
    if op == "reap":
        protocol.send_frame(sock, {"statuses": _reap(request.get("wait_pid"))})
    else:
        protocol.send_frame(sock, {"error": f"unknown request {op!r}"})


def main() -> None:
    started = time.perf_counter()
    # No collections while preloading (faster imports, no freed holes in shared pages); the
    # heap is frozen before forking and workers collect only what they allocate themselves.
    gc.disable()
    sock = socket.socket(fileno=int(sys.argv[1]))
    procs.set_dumpable(False)
    procs.set_child_subreaper()
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that spawned us ends, and the parent
    # may start the zygote from a short-lived thread. The parent's death closes our socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent
    signal.signal(signal.SIGCHLD, _sweep)
    shell = _load_fork_ready(os.environ.get("IPYTHONDIR", "/tmp"))
    ready_ms = (time.perf_counter() - started) * 1000
    protocol.send_frame(sock, {"ready": True, "ready_ms": ready_ms, "preloaded": False})
    preload = Preload(shell, started)
    wait_s = FIRST_REQUEST_GRACE_S
    while True:
        if not preload.complete:
            # A request waiting goes first; else one more preload step.
            readable, _, _ = select.select([sock], [], [], wait_s)
            wait_s = 0.0
            if not readable:
                preload.run_next_step()
                if preload.complete:
                    protocol.send_frame(sock, preload.report())
                continue
        _serve_one(sock, shell, preload)


if __name__ == "__main__":
    main()
