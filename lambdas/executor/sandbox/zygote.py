"""The zygote: preloads the data stack and an IPython shell once, then forks session workers.

Started by the trusted parent with a scrubbed environment (so no secret is ever in the memory
that workers inherit) and a socketpair fd as argv[1]. Requests are JSON frames; a `fork`
request carries the worker's socket, its stdout/stderr pipes and its output mirror as passed
fds. The zygote is a child subreaper (orphans of user code land here, where the parent can find
and kill them), non-dumpable, and exits with everything under it when the parent's end of the
socket closes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
import time
from typing import Any

from lambdas.executor import protocol
from lambdas.executor.host import procs
from lambdas.executor.sandbox import heap

PRELOADED_MODULES = ("numpy", "pandas", "matplotlib", "cloudpickle", "IPython")
FORK_FDS = 4  # a fork request carries: worker socket, stdout pipe, stderr pipe, output mirror


def _preload(ipython_dir: str) -> tuple[Any, list[str]]:
    loaded: list[str] = []
    for name in PRELOADED_MODULES:
        try:
            __import__(name)
            loaded.append(name)
        except Exception:  # noqa: S112 - whatever of the stack is importable
            continue
    if "matplotlib" in loaded:
        import matplotlib

        matplotlib.use("module://matplotlib_inline.backend_inline")
    if "numpy" in loaded:
        import numpy

        # Every forked worker would otherwise share the zygote's legacy global RNG state.
        # A full MT19937 key straight from the kernel: seed() without an argument derives one
        # through SeedSequence, about 0.3 ms of every fork.
        def reseed() -> None:
            numpy.random.seed(numpy.frombuffer(os.urandom(2496), dtype=numpy.uint32))

        os.register_at_fork(after_in_child=reseed)

    # Everything a worker needs, imported now so forking costs nothing more.
    import urllib.request  # noqa: F401

    from lambdas.executor.sandbox import (  # noqa: F401
        kernel,
        packages,
        snapshot,
        transfer,
        worker,
        workspace,
    )

    shell = kernel.build_shell(ipython_dir)
    _warm_up(shell)
    return shell, loaded


def _warm_up(shell: Any) -> None:
    """Throwaway cells (an expression, a figure, a traceback) so first-use costs are paid
    before forking. `store_history=False` and no result: nothing lands in the user namespace."""
    from lambdas.executor.sandbox import kernel

    kernel.SINK.capture = kernel.CellCapture(1 << 20, 1 << 24)
    for code in (
        "__lci_warm = 1 + 1\ndel __lci_warm",
        "import matplotlib.pyplot as __lci_plt\n__lci_plt.plot([1, 2])\ndel __lci_plt",
        "1 / 0",
    ):
        with contextlib.suppress(Exception):
            shell.run_cell(code, store_history=False)
    kernel.SINK.capture = kernel.CellCapture(0, 0)
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        with contextlib.suppress(AttributeError):
            delattr(sys, name)
    shell.execution_count = 1
    # matplotlib empties its font cache in every forked child (FreeType handles are not
    # fork-safe); emptied here, that costs a child nothing until it draws text.
    font_manager = sys.modules.get("matplotlib.font_manager")
    if font_manager is not None:
        with contextlib.suppress(Exception):
            font_manager._get_font.cache_clear()


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
    shell, loaded = _preload(os.environ.get("IPYTHONDIR", "/tmp"))
    # Before the first fork: workers then neither write refcounts into the preloaded heap nor
    # re-scan it for garbage, so they copy far fewer of its pages.
    immortal = heap.immortalize(gc.get_objects())
    gc.freeze()
    huge_pages = heap.collapse_into_huge_pages()
    protocol.send_frame(
        sock,
        {
            "ready": True,
            "preload_ms": (time.perf_counter() - started) * 1000,
            "modules": loaded,
            "huge_pages": huge_pages,
            "immortal_objects": immortal,
        },
    )
    while True:
        try:
            request, fds = protocol.recv_frame_with_fds(sock, FORK_FDS)
        except (protocol.ProtocolError, OSError, ValueError):
            _exit_with_everything()
        op = request.get("op")
        _sweep()
        if op == "fork" and len(fds) == FORK_FDS:
            pid = os.fork()
            if pid == 0:
                _start_worker(sock, fds, request, shell)
            for fd in fds:
                os.close(fd)
            protocol.send_frame(sock, {"pid": pid})
        elif op == "reap":
            for fd in fds:
                os.close(fd)
            protocol.send_frame(sock, {"statuses": _reap(request.get("wait_pid"))})
        else:
            for fd in fds:
                os.close(fd)
            protocol.send_frame(sock, {"error": f"unknown request {op!r}"})


if __name__ == "__main__":
    main()
