"""Process-tree control for the trusted side: non-dumpable marking, child listing, tree kill.

The zygote is a child subreaper, so anything user code starts and orphans (double fork +
setsid) is re-parented to the zygote instead of init; `/proc/<pid>/task/<tid>/children`
therefore finds every process user code started, cheaply, without scanning all of /proc.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

_libc: ctypes.CDLL | None = None


def _prctl(option: int, value: int) -> bool:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.prctl(option, value, 0, 0, 0) == 0


def set_dumpable(dumpable: bool) -> bool:
    """Non-dumpable processes hide /proc/<pid>/environ, mem and maps from same-uid children."""
    return _prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def set_child_subreaper() -> bool:
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    return _prctl(PR_SET_PDEATHSIG, sig)


def _has_children_files() -> bool:
    own = os.getpid()
    return os.path.exists(f"/proc/{own}/task/{own}/children")


_HAS_CHILDREN_FILES = _has_children_files()  # CONFIG_PROC_CHILDREN; else scan /proc


def _children_by_scan(pid: int) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def children_of(pid: int) -> list[int]:
    """Direct children of every thread of `pid` (empty if it is gone)."""
    if not _HAS_CHILDREN_FILES:
        return _children_by_scan(pid)
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        data = read_proc_file(f"/proc/{pid}/task/{tid}/children")
        if data:
            found.extend(int(token) for token in data.split())
    return found


def read_proc_file(path: str, size: int = 65536) -> bytes | None:
    """A small /proc file's contents (None if it cannot be read): raw fd calls, several times
    cheaper than open() on the paths every run reads."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def descendants_of(pid: int) -> list[int]:
    result: list[int] = []
    pending = children_of(pid)
    while pending:
        child = pending.pop()
        result.append(child)
        pending.extend(children_of(child))
    return result


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return True
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state in (b"Z", b"X")


def kill_processes(collect: Callable[[], Iterable[int]], deadline_s: float = 5.0) -> int:
    """Freeze then kill everything `collect()` returns, repeating until it returns nothing new
    (a fork bomb keeps forking between a listing and a kill). A SIGKILLed process cannot fork
    again, so it is not waited for: tearing down a large address space takes milliseconds."""
    killed: set[int] = set()
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        alive = [pid for pid in collect() if pid not in killed and not is_zombie_or_gone(pid)]
        if not alive:
            break
        _signal_all(alive, signal.SIGSTOP)
        # Children forked just before the stop are visible now.
        more = [pid for pid in collect() if pid not in killed and pid not in alive]
        _signal_all(more, signal.SIGSTOP)
        _signal_all(alive + more, signal.SIGKILL)
        killed.update(alive)
        killed.update(more)
    return len(killed)


def fork_count() -> int | None:
    """Processes and threads created on this machine since boot (`processes` in /proc/stat):
    a monotonic counter, so an unchanged value proves nothing new was started in between.
    None where the kernel does not report it."""
    needle = b"\nprocesses "
    data = b""
    try:
        fd = os.open("/proc/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
            start = data.find(needle)
            if start >= 0 and data.find(b"\n", start + len(needle)) >= 0:
                break
    except OSError:
        return None
    finally:
        os.close(fd)
    start = data.find(needle)
    if start < 0:
        return None
    start += len(needle)
    end = data.find(b"\n", start)
    try:
        return int(data[start:end])
    except ValueError:
        return None
