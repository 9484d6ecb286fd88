"""Paths the client handles: workspace (remote) paths checked with the API's own rules before any
request, and local paths confined to a root folder (the MCP server's file tools).

The remote rules are a copy of `validate_path` in `lambdas/api/service/common.py` (the client
package must not import the server); `tests/unit/test_client_paths.py` runs both on one table so
they cannot drift.
"""

from __future__ import annotations

import os
import posixpath
import unicodedata
from pathlib import Path

# The API's limits.MAX_PATH_LENGTH (bytes of UTF-8).
MAX_REMOTE_PATH_BYTES = 512


class InvalidRemotePath(ValueError):
    """A workspace path the API would refuse with 400 INVALID_PATH."""


class OutsideRoot(ValueError):
    """A local path that resolves (symlinks included) outside the allowed root folder."""


def validate_remote_path(raw: str) -> str:
    """The normalized workspace-relative path, or InvalidRemotePath with the API's message."""
    if not raw or not raw.strip():
        raise InvalidRemotePath("the path is empty")
    if len(raw.encode()) > MAX_REMOTE_PATH_BYTES:
        raise InvalidRemotePath(f"the path is longer than {MAX_REMOTE_PATH_BYTES} bytes")
    if any(unicodedata.category(ch) == "Cc" for ch in raw):
        raise InvalidRemotePath("the path contains control characters")
    if raw.startswith("/") or "\\" in raw:
        raise InvalidRemotePath("the path must be relative and use '/' as separator")
    if ".." in raw.split("/"):
        raise InvalidRemotePath("the path must not contain '..'")
    normalized = posixpath.normpath(raw)
    if normalized in {".", ""} or raw.endswith("/"):
        raise InvalidRemotePath("the path must name a file")
    return normalized


class LocalRoot:
    """A folder that local paths must stay inside. Relative paths are taken from the root;
    symlinks are resolved before the check, so a link pointing out is refused too."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder).expanduser().resolve(strict=True)
        if not self.path.is_dir():
            raise NotADirectoryError(f"{folder} is not a directory")

    def resolve(self, raw: str | os.PathLike[str]) -> Path:
        candidate = Path(raw).expanduser()
        resolved = (self.path / candidate).resolve()  # an absolute `candidate` replaces the root
        if not resolved.is_relative_to(self.path):
            raise OutsideRoot(f"{raw} is outside the allowed folder {self.path}")
        return resolved

    def display(self, path: Path) -> str:
        """`path` relative to the root, as a model or user should refer to it."""
        return str(path.relative_to(self.path)) if path != self.path else "."
