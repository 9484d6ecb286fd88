"""The session workspace: safe relative paths, inline files, change detection, and which of
the session's stored files it holds (`SyncedFiles`).

Uploads never follow symlinks (a symlink to /proc or another tenant's file is skipped), and
hidden entries (dot files, caches) are not treated as user output.
"""

from __future__ import annotations

import base64
import contextlib
import mimetypes
import os
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

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


def fingerprint(workspace: str, relative: str) -> Fingerprint | None:
    """(mtime_ns, size) of a regular workspace file, None if it is missing or not regular."""
    try:
        info = os.stat(os.path.join(workspace, relative), follow_symlinks=False)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size) if stat.S_ISREG(info.st_mode) else None


@dataclass(frozen=True)
class SyncedFile:
    etag: str | None  # the stored object's ETag this local copy holds (None: not known)
    print_: Fingerprint  # the local file when it held exactly that object


@dataclass
class SyncPlan:
    downloads: list[dict[str, Any]]  # the refs to fetch
    removals: list[str]  # relative paths to delete


class SyncedFiles:
    """Which of the session's stored files the live workspace holds, so the workspace follows
    the stored set exactly on every run: a stored file that is missing here, or whose ETag or
    local fingerprint changed since it was synced, is downloaded; a file this worker synced
    (downloaded or uploaded itself) that the stored set no longer has is deleted.

    Files the worker never synced (written but not saved, e.g. over the size cap) are left
    alone. `complete=False` (the API listed only part of the files) skips deletions.
    """

    def __init__(self) -> None:
        self._files: dict[str, SyncedFile] = {}

    def plan(self, workspace: str, refs: list[dict[str, Any]], complete: bool = True) -> SyncPlan:
        downloads: list[dict[str, Any]] = []
        wanted: set[str] = set()
        for ref in refs:
            relative = safe_relative_path(ref["path"])
            wanted.add(relative)
            held = self._files.get(relative)
            current = fingerprint(workspace, relative)
            if held is None or held.etag != ref["etag"] or held.print_ != current:
                downloads.append({**ref, "path": relative})
        removals = sorted(set(self._files) - wanted) if complete else []
        return SyncPlan(downloads, removals)

    def record(
        self, workspace: str, relative: str, etag: str | None, print_: Fingerprint | None = None
    ) -> None:
        """`relative` holds the stored object with `etag`, as the local file was when it had
        exactly that content (`print_`; default: now, right after a download)."""
        current = print_ or fingerprint(workspace, relative)
        if current is None:
            self._files.pop(relative, None)
        else:
            self._files[relative] = SyncedFile(etag, current)

    def remove(self, workspace: str, relative: str) -> None:
        self._files.pop(relative, None)
        target = os.path.join(workspace, safe_relative_path(relative))
        real_root = os.path.realpath(workspace)
        real_parent = os.path.realpath(os.path.dirname(target))
        if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
            return  # a parent replaced by a symlink since: not the workspace's file any more
        with contextlib.suppress(OSError):
            os.unlink(target)
