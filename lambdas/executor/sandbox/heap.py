"""Shaping the zygote's memory before it forks, so a new session worker starts faster.

A fork copies one page-table entry per 4 KiB page of private memory, and afterwards the child
copies every page it writes to (about 5 µs a page on a virtualised host). CPython writes to an
object whenever it takes or drops a reference, so merely *running* preloaded code in a child
copies the pages those objects live on. Three measures, each best effort:

- the allocator: mimalloc (bundled with CPython 3.13) keeps objects in large aligned segments
  that become transparent huge pages, where pymalloc scatters 1 MiB arenas between libraries;
- huge pages: populated 2 MiB ranges are collapsed, one entry to copy instead of 512;
- immortal objects (PEP 683): every object the zygote tracks gets the refcount CPython gives
  its own immortal objects, so reference counting stops writing to them (Instagram's
  "immortalize the heap before forking"). They are never freed, which is what a zygote's
  preloaded heap is anyway.
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
from typing import Any

_HUGE_PAGE_BYTES = 2 * 1024 * 1024
_MADV_COLLAPSE = 25  # Linux 6.1+
# CPython 3.12 and 3.13 (64-bit, with the GIL): a refcount whose low 32 bits are all ones is
# immortal; increments and decrements leave it alone. Checked against None at run time.
_IMMORTAL_REFCOUNT = 0xFFFFFFFF
# mimalloc reserves 1 GiB of address space per arena by default; under the worker's RLIMIT_AS
# that reservation would count as used memory. Small arenas keep the limit meaning memory.
_MIMALLOC_ARENA_RESERVE = "32MiB"

_libc: ctypes.CDLL | None = None


def _c_library() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def allocator_environment() -> dict[str, str]:
    """Environment variables that make a CPython process (the zygote) allocate with mimalloc,
    or nothing where this interpreter was built without it."""
    if sys.implementation.name != "cpython" or not sysconfig.get_config_var("WITH_MIMALLOC"):
        return {}
    return {"PYTHONMALLOC": "mimalloc", "MIMALLOC_ARENA_RESERVE": _MIMALLOC_ARENA_RESERVE}


def collapse_into_huge_pages(min_resident_fraction: float = 0.9) -> int:
    """Back this process's populated anonymous memory with transparent huge pages, so a fork
    copies one page-table entry per 2 MiB instead of 512 (the zygote's fork gets several ms
    faster; a child's first write still copies only the 4 KiB page it touches). Only 2 MiB
    ranges that are already almost fully resident are collapsed, so memory barely grows.
    Returns how many huge pages were made (0 without THP support)."""
    libc = _c_library()
    madvise, mincore = libc.madvise, libc.mincore
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as handle:
            if "[never]" in handle.read():
                return 0
        with open("/proc/self/maps") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return 0
    page = os.sysconf("SC_PAGE_SIZE")
    pages_per_huge = _HUGE_PAGE_BYTES // page
    wanted = int(pages_per_huge * min_resident_fraction)
    residency = ctypes.create_string_buffer(pages_per_huge)
    collapsed = 0
    for line in lines:
        fields = line.split()
        # Private writable memory with no file behind it: the heap and anonymous mappings.
        if fields[1] != "rw-p" or (len(fields) > 5 and fields[5] != "[heap]"):
            continue
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        address = -(-start // _HUGE_PAGE_BYTES) * _HUGE_PAGE_BYTES
        while address + _HUGE_PAGE_BYTES <= end:
            if mincore(address, _HUGE_PAGE_BYTES, residency) == 0:
                resident = sum(byte & 1 for byte in residency.raw)
                if resident >= wanted and madvise(address, _HUGE_PAGE_BYTES, _MADV_COLLAPSE) == 0:
                    collapsed += 1
            address += _HUGE_PAGE_BYTES
    return collapsed


def immortality_supported() -> bool:
    return (
        sys.implementation.name == "cpython"
        and (3, 12) <= sys.version_info[:2] < (3, 14)
        and sys.maxsize > 2**32
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
        and ctypes.c_ssize_t.from_address(id(None)).value == _IMMORTAL_REFCOUNT
    )


def immortalize(objects: list[Any]) -> int:
    """Make `objects` immortal. Call it in the zygote only, once its preload is complete: the
    workers forked after it run preloaded code without writing to its pages. (The zygote forks
    its first workers before that; pages it still shares with them get copied in the zygote,
    once, and those workers keep the originals.) Vectorised with numpy: one scatter per cluster
    of addresses, ~0.1 s for 200k objects.
    Returns how many objects were made immortal (0 where the layout is not the known one)."""
    if not objects or not immortality_supported():
        return 0
    try:
        import numpy
    except ImportError:
        return 0
    # The refcount is the first machine word of every object, at id(obj).
    addresses = numpy.fromiter(map(id, objects), dtype=numpy.uintp, count=len(objects))
    addresses.sort()
    # Objects live in a few areas (the brk heap, mmap'd arenas): one view per area, never
    # spanning more than the gap between two objects of the same area.
    breaks = numpy.nonzero(numpy.diff(addresses) > (1 << 30))[0] + 1
    for cluster in numpy.split(addresses, breaks):
        base = cluster[0]
        words = int(cluster[-1] - base) // 8 + 1
        view = numpy.ctypeslib.as_array((ctypes.c_uint64 * words).from_address(int(base)))
        view[((cluster - base) // 8).astype(numpy.intp)] = _IMMORTAL_REFCOUNT
    return len(objects)
