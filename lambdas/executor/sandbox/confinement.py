"""What confines the sandboxed worker's process (SPEC invariant 4): its scrubbed environment, its
rlimits, the CPU limit moved before every cell, and SIGINT turned into KeyboardInterrupt only
while a cell runs (an interrupt requested through the API). Used by `worker.py`."""

from __future__ import annotations

import math
import os
import resource
import signal
from typing import Any

# Variables kept from the zygote's (already scrubbed) environment; everything else goes.
KEPT_ENV_VARS = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "MPLCONFIGDIR",
    "IPYTHONDIR",
    "MPLBACKEND",
    "OPENBLAS_NUM_THREADS",
)


def scrub_environment(home: str) -> None:
    kept = {name: os.environ[name] for name in KEPT_ENV_VARS if name in os.environ}
    os.environ.clear()
    os.environ.update(kept)
    os.environ["HOME"] = home


def count_tasks_of_uid(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return count


def apply_rlimits(spec: dict[str, Any]) -> None:
    """Sandbox rlimits (SPEC invariant 4). Hard limits are lowered once and cannot come back."""
    memory = spec["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["file_size_bytes"], spec["file_size_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (spec["open_files"], spec["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    uid = os.getuid()
    if uid != 0:  # root is exempt from RLIMIT_NPROC anyway; counting costs a /proc scan
        allowed = count_tasks_of_uid(uid) + spec["extra_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (allowed, allowed))


def reset_cpu_limit(cpu_seconds: int) -> None:
    """RLIMIT_CPU counts from process start: move the soft limit to `used + cpu_seconds`.
    The hard limit stays open so later cells can move it again; the wall clock is the backstop."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + cpu_seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def reap_children() -> set[int]:
    """Collect zombies of processes the parent killed after the previous cell."""
    reaped: set[int] = set()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.add(pid)


def interrupt_outside_cell(signum: int, frame: Any) -> None:
    """SIGINT between cells (transfers, saving) is dropped: the parent asks again while the
    cell it meant still runs."""


def accept_interrupts(accept: bool) -> None:
    """SIGINT from the parent (an interrupt requested through the API) reaches a running cell as
    KeyboardInterrupt, as in Jupyter (Python's own handler: no frame of ours in the traceback);
    the cell fails and its namespace is kept and saved. A handler the cell set stays."""
    current = signal.getsignal(signal.SIGINT)
    if accept and current is interrupt_outside_cell:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    elif not accept and current is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt_outside_cell)


def stop_accepting_interrupts() -> None:
    """After the cell: an interrupt that arrives while the handler is swapped back is the
    cell's (raised here, dropped), never the saving's."""
    while True:
        try:
            accept_interrupts(False)
            return
        except KeyboardInterrupt:
            continue
