"""Where the client finds its endpoint and API key, and the sessions `lci` created.

Precedence: an explicit argument, then `LCI_ENDPOINT` / `LCI_API_KEY`, then the config file
(`$XDG_CONFIG_HOME/lci/config.toml`, else `~/.config/lci/config.toml`, written by
`lci configure`), then the default endpoint. The config folder is private (0700) and every file
in it is written 0600: it holds an API key.

The API has no "list my sessions" route, so `lci session new` records what it created in
`sessions.json` next to the config file; `lci session ls` reads that record and prunes the
sessions the API no longer knows.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
ENDPOINT_ENV = "LCI_ENDPOINT"
API_KEY_ENV = "LCI_API_KEY"
CONFIG_HOME_ENV = "XDG_CONFIG_HOME"
CONFIG_FILE_NAME = "config.toml"
SESSIONS_FILE_NAME = "sessions.json"
_PRIVATE_DIR_MODE = 0o700
_PRIVATE_FILE_MODE = 0o600


class ConfigError(Exception):
    """The config file (or the session record) cannot be read or written."""


@dataclass(frozen=True)
class Settings:
    endpoint: str
    api_key: str


def config_dir() -> Path:
    base = os.environ.get(CONFIG_HOME_ENV) or str(Path.home() / ".config")
    return Path(base) / "lci"


def config_path() -> Path:
    return config_dir() / CONFIG_FILE_NAME


def read_config_file(path: Path | None = None) -> dict[str, str]:
    """`endpoint` / `api_key` from the config file ({} when there is none)."""
    path = path or config_path()
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return {k: str(v) for k, v in document.items() if k in ("endpoint", "api_key")}


def resolve_settings(endpoint: str | None = None, api_key: str | None = None) -> Settings:
    """The endpoint and key to use, by the precedence above; the file is read only if needed."""
    endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or None
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    if endpoint is None or api_key is None:
        stored = read_config_file()
        endpoint = endpoint or stored.get("endpoint") or DEFAULT_ENDPOINT
        api_key = api_key if api_key is not None else stored.get("api_key", "")
    # Only the first key of a comma-separated list (the local stack's LCI_API_KEY) is ours.
    return Settings(endpoint.rstrip("/"), api_key.split(",")[0].strip())


def write_config_file(endpoint: str, api_key: str) -> Path:
    """Write the config file (0600 in a 0700 folder) and return its path."""
    lines = [
        "# Written by `lci configure`. LCI_ENDPOINT / LCI_API_KEY override these values.",
        f"endpoint = {_toml_string(endpoint)}",
        f"api_key = {_toml_string(api_key)}",
    ]
    path = config_path()
    _write_private(path, "\n".join(lines) + "\n")
    return path


def _toml_string(value: str) -> str:
    # A JSON string with ASCII escapes is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=True)


def _write_private(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, readable by the owner only from the first byte."""
    try:
        path.parent.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "w") as handle:  # mkstemp creates it 0600
                handle.write(text)
            os.chmod(temporary, _PRIVATE_FILE_MODE)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc


# --- the record of sessions `lci session new` created -------------------------------------------


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    endpoint: str
    created_at: str


class SessionBook:
    """Sessions created through this config folder, per endpoint (a JSON file, 0600)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / SESSIONS_FILE_NAME

    def records(self, endpoint: str) -> list[SessionRecord]:
        return [r for r in self._load() if r.endpoint == endpoint]

    def add(self, endpoint: str, session_id: str) -> None:
        created = datetime.now(UTC).isoformat(timespec="seconds")
        self._save([*self._load(), SessionRecord(session_id, endpoint, created)])

    def forget(self, endpoint: str, session_ids: set[str]) -> None:
        kept = [
            r for r in self._load() if not (r.endpoint == endpoint and r.session_id in session_ids)
        ]
        self._save(kept)

    def _load(self) -> list[SessionRecord]:
        try:
            document: Any = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.path}: {exc}") from exc
        entries = document.get("sessions") if isinstance(document, dict) else None
        return [
            SessionRecord(str(e["session_id"]), str(e["endpoint"]), str(e.get("created_at", "")))
            for e in entries or []
            if isinstance(e, dict) and "session_id" in e and "endpoint" in e
        ]

    def _save(self, records: list[SessionRecord]) -> None:
        document = {"sessions": [r.__dict__ for r in records]}
        _write_private(self.path, json.dumps(document, indent=1) + "\n")
