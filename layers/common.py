"""What every step of the layers build shares: its errors, its log, the target architectures."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# Lambda's architectures as `--arch` names them: the machine name markers and tools use, and
# the tag manylinux wheels carry.
ARCHES = {
    "x86_64": {"machine": "x86_64", "tag": "x86_64"},
    "arm64": {"machine": "aarch64", "tag": "aarch64"},
}


class BuildError(RuntimeError):
    """The build cannot go on; the message says why (and exit code 2 follows)."""


class BudgetExceeded(BuildError):
    pass


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def host_arch() -> str:
    """This machine's architecture, named as `ARCHES` names them."""
    return "arm64" if platform.machine() in ("aarch64", "arm64") else platform.machine()


def tree_bytes(path: Path) -> int:
    """Bytes of every file under `path` (symlinks counted as links, as a zip stores them)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
