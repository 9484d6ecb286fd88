"""The receipt of a run, measured by the trusted parent from /proc: wall time, CPU time of the
worker and its children, and peak resident memory (VmHWM, reset when the cell starts).
Used by `host/live.py`'s RunMonitor."""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from lambdas.executor.host import procs

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_CLEAR_PEAK_RSS = b"5"  # /proc/<pid>/clear_refs: reset VmHWM to the current RSS (Linux 4.0+)


class _ProcFiles:
    """The /proc files of the processes this parent measures, kept open: a pread of an open
    /proc file reads it afresh, several times cheaper than opening it on every run. A file of a
    process that is gone fails (ESRCH): it is closed and opened again once, which finds the
    process that has the pid now, if any. Used from the exchange's thread only."""

    MAX_OPEN = 64

    def __init__(self) -> None:
        self._open: OrderedDict[tuple[int, str], int] = OrderedDict()

    def read(self, pid: int, name: str, size: int = 4096) -> bytes | None:
        for fresh in (False, True):
            fd = self._fd(pid, name, os.O_RDONLY, fresh)
            if fd is None:
                return None
            try:
                return os.pread(fd, size, 0)
            except OSError:
                self._close((pid, name))
        return None

    def write(self, pid: int, name: str, data: bytes) -> None:
        for fresh in (False, True):
            fd = self._fd(pid, name, os.O_WRONLY, fresh)
            if fd is None:
                return
            try:
                os.write(fd, data)
                return
            except OSError:
                self._close((pid, name))

    def _fd(self, pid: int, name: str, flags: int, fresh: bool) -> int | None:
        key = (pid, name)
        fd = self._open.get(key)
        if fd is not None and not fresh:
            self._open.move_to_end(key)
            return fd
        self._close(key)
        try:
            fd = os.open(f"/proc/{pid}/{name}", flags)
        except OSError:
            return None
        self._open[key] = fd
        while len(self._open) > self.MAX_OPEN:
            self._close(next(iter(self._open)))
        return fd

    def _close(self, key: tuple[int, str]) -> None:
        fd = self._open.pop(key, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


_PROC = _ProcFiles()


def _stat_fields(pid: int) -> list[bytes] | None:
    stat = _PROC.read(pid, "stat")
    if not stat:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def _cpu_ticks(fields: list[bytes] | None) -> int | None:
    """utime + stime + cutime + cstime (a process's own and its reaped children's CPU)."""
    try:
        return sum(int(value) for value in fields[11:15]) if fields else None
    except ValueError:
        return None


def _peak_rss_kb(pid: int) -> int | None:
    status = _PROC.read(pid, "status", 8192)
    start = status.find(b"VmHWM:") if status else -1
    if status is None or start < 0:
        return None  # gone, or a zombie (no memory left to report)
    try:
        return int(status[start + 6 : status.index(b"kB", start)])
    except ValueError:
        return None


def _child_peak_rss_kb(pid: int) -> int | None:
    # Not kept open: children come and go with their cells.
    status = procs.read_proc_file(f"/proc/{pid}/status", 8192) or b""
    start = status.find(b"VmHWM:")
    try:
        return int(status[start + 6 : status.index(b"kB", start)]) if start >= 0 else None
    except ValueError:
        return None


def _descendants(pid: int, fields: list[bytes] | None) -> list[int]:
    """The processes under `pid`; a single-threaded process without children (the usual
    worker) costs one read."""
    threads = int(fields[17]) if fields and len(fields) > 17 and fields[17].isdigit() else 0
    if threads == 1 and not (_PROC.read(pid, f"task/{pid}/children") or b"").strip():
        return []
    return procs.descendants_of(pid)


class UsageMeter:
    """The receipt of one cell, read from /proc by the parent (the worker cannot bend it).
    Figures are kept as plain numbers: this runs twice on every warm run."""

    def __init__(self, pid: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._pid = pid
        self._clock = clock
        self._started = clock()
        self._cpu_at_start = 0
        self._wall_ms = 0
        self._cpu_ms = 0
        self._peak_kb = 0
        self._stopped = False

    def start(self) -> None:
        """The cell starts now (again, after the transfers before it)."""
        self._started = self._clock()
        self._cpu_at_start = _cpu_ticks(_stat_fields(self._pid)) or 0
        _PROC.write(self._pid, "clear_refs", _CLEAR_PEAK_RSS)
        self._wall_ms = self._cpu_ms = self._peak_kb = 0
        self._stopped = False

    def sample(self, with_children: bool = False) -> dict[str, Any]:
        """The figures so far (frozen once stopped), as `ExecutionUsage` fields."""
        if not self._stopped:
            self._measure(with_children)
        return self.figures()

    def figures(self) -> dict[str, Any]:
        return {
            "wall_ms": self._wall_ms,
            "cpu_ms": self._cpu_ms,
            "peak_memory_mb": round(self._peak_kb / 1024, 1),
        }

    def _measure(self, with_children: bool) -> None:
        self._wall_ms = int((self._clock() - self._started) * 1000)
        fields = _stat_fields(self._pid)
        cpu = _cpu_ticks(fields)
        peak_kb = _peak_rss_kb(self._pid)
        if with_children:
            # Whatever the cell started and still runs (strays are killed after every run, so
            # these all belong to this cell); children it reaped are in the worker's cutime.
            for child in _descendants(self._pid, fields):
                child_fields = procs.read_proc_file(f"/proc/{child}/stat", 4096) or b""
                child_cpu = _cpu_ticks(child_fields[child_fields.rfind(b")") + 2 :].split())
                cpu = (cpu or 0) + (child_cpu or 0)
                peak_kb = (peak_kb or 0) + (_child_peak_rss_kb(child) or 0)
        if cpu is not None:
            self._cpu_ms = max(0, (cpu - self._cpu_at_start) * 1000 // _CLOCK_TICKS)
        if peak_kb is not None:
            self._peak_kb = max(self._peak_kb, peak_kb)

    def stop(self) -> dict[str, Any]:
        usage = self.sample(with_children=True)
        self._stopped = True
        return usage

    def note_peak_kb(self, peak_kb: int) -> None:
        """A peak known from elsewhere (the zygote's wait status of a dead worker)."""
        self._peak_kb = max(self._peak_kb, peak_kb)
