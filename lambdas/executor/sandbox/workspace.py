"""The session workspace: safe relative paths, inline files, and change detection.

Uploads never follow symlinks (a symlink to /proc or another tenant's file is skipped), and
hidden entries (dot files, caches) are not treated as user output.
"""

from __future__ import annotations

import base64
import contextlib
import mimetypes
import os
import stat
from pathlib import PurePosixPath

Fingerprint = tuple[int, int]  # (mtime_ns, size)
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})


class UnsafePathError(ValueError):
    """A path that would leave the workspace or is otherwise unacceptable."""


def safe_relative_path(path: str) -> str:
    """Normalize a workspace-relative path; refuse absolute paths and `..`."""
    if not path or "\x00" in path or path.startswith(("/", "\\")):
        raise UnsafePathError(f"invalid path {path!r}")
    parts = PurePosixPath(path).parts
    if any(part in ("..", "") for part in parts) or not parts:
        raise UnsafePathError(f"invalid path {path!r}")
    return "/".join(part for part in parts if part != ".")


def resolve_inside(workspace: str, relative: str) -> str:
    """Absolute target path for `relative`, refusing symlinked parents that point outside."""
    relative = safe_relative_path(relative)
    target = os.path.join(workspace, relative)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    real_root = os.path.realpath(workspace)
    real_parent = os.path.realpath(parent)
    if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
        raise UnsafePathError(f"path {relative!r} leaves the workspace")
    if os.path.islink(target):
        os.unlink(target)
    return target


def write_inline_file(workspace: str, path: str, content_base64: str) -> str:
    target = resolve_inside(workspace, path)
    data = base64.b64decode(content_base64, validate=True)
    with open(target, "wb") as handle:
        handle.write(data)
    return target


def scan(workspace: str) -> dict[str, Fingerprint]:
    """Regular, non-hidden files under the workspace (symlinks ignored), by relative path."""
    found: dict[str, Fingerprint] = {}
    pending = [("", workspace)]
    while pending:
        prefix, directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name in _SKIPPED_DIRS:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            relative = prefix + entry.name
            if stat.S_ISDIR(info.st_mode):
                pending.append((relative + "/", entry.path))
            elif stat.S_ISREG(info.st_mode):
                found[relative] = (info.st_mtime_ns, info.st_size)
    return found


def changed_files(before: dict[str, Fingerprint], after: dict[str, Fingerprint]) -> list[str]:
    return sorted(path for path, print_ in after.items() if before.get(path) != print_)


def content_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


def open_no_follow(workspace: str, relative: str) -> int:
    """Open a workspace file for reading without following a symlink at the last component."""
    return os.open(os.path.join(workspace, relative), os.O_RDONLY | os.O_NOFOLLOW)


def remove_tree(path: str) -> None:
    import shutil

    with contextlib.suppress(OSError):
        shutil.rmtree(path)
