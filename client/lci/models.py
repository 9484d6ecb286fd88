"""Typed results of the API (SPEC §3), as plain dataclasses.

`from_dict` ignores fields it does not know, so an older client keeps working against a newer
server; `raw` keeps the whole JSON document for callers who need more.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _pick(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class Variable:
    name: str
    type: str


@dataclass
class Session:
    session_id: str
    created_at: str | None = None
    expires_at: str | None = None
    last_used_at: str | None = None
    execution_count: int = 0
    status: str = "idle"
    variables: list[Variable] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        values = _pick(cls, data)
        values["variables"] = [
            Variable(name=str(v.get("name")), type=str(v.get("type")))
            for v in data.get("variables") or []
        ]
        return cls(**values)


@dataclass
class ErrorInfo:
    name: str
    value: str
    traceback: list[str] = field(default_factory=list)


@dataclass
class OutputFile:
    path: str
    size: int = 0
    content_type: str = "application/octet-stream"
    download_url: str | None = None


@dataclass
class RunUsage:
    """The receipt of a run: what the user code used (children included)."""

    wall_ms: int = 0
    cpu_ms: int = 0
    peak_memory_mb: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunUsage:
        return cls(**_pick(cls, data))


@dataclass
class ExecutionResult:
    execution_id: str
    status: str
    success: bool = False
    session_id: str | None = None
    execution_count: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    result: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: ErrorInfo | None = None
    files: list[OutputFile] = field(default_factory=list)
    duration_ms: int = 0
    warnings: list[str] = field(default_factory=list)
    usage: RunUsage | None = None  # None from a server that does not report it
    # Too large for one response: head and tail inline, the whole behind these presigned GETs
    # (`Client.fetch` reads them).
    stdout_url: str | None = None
    stderr_url: str | None = None
    outputs_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"

    @property
    def text(self) -> str | None:
        """`text/plain` of the last expression's value, like Jupyter's Out[n]."""
        if self.result is None:
            return None
        value = self.result.get("text/plain")
        return value if isinstance(value, str) else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionResult:
        values = _pick(cls, data)
        values.setdefault("execution_id", "")
        values.setdefault("status", "error")
        error = data.get("error")
        values["error"] = (
            ErrorInfo(
                name=str(error.get("name", "")),
                value=str(error.get("value", "")),
                traceback=list(error.get("traceback") or []),
            )
            if isinstance(error, dict)
            else None
        )
        values["files"] = [OutputFile(**_pick(OutputFile, f)) for f in data.get("files") or []]
        usage = data.get("usage")
        values["usage"] = RunUsage.from_dict(usage) if isinstance(usage, dict) else None
        values["raw"] = data
        return cls(**values)


@dataclass
class FileInfo:
    path: str
    size: int = 0
    modified_at: str | None = None
    download_url: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileInfo:
        return cls(**_pick(cls, data))


@dataclass
class Package:
    name: str
    version: str = ""
    source: str = "layer"


@dataclass
class PackageList:
    python: str
    packages: list[Package]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackageList:
        return cls(
            python=str(data.get("python", "")),
            packages=[Package(**_pick(Package, p)) for p in data.get("packages") or []],
        )


@dataclass
class Usage:
    period: str
    executions: int = 0
    compute_ms: int = 0
    quota: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(**_pick(cls, data))
