"""What every service shares: its dependencies, the clock, ids and timestamps, S3 key layout,
file path validation and large-JSON spill-over to S3."""

from __future__ import annotations

import json
import posixpath
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lambdas.api.domain import JsonDocument
from lambdas.api.errors import InvalidPath
from lambdas.api.ports import Clock
from lambdas.shared import limits
from lambdas.shared.storage import EXECUTIONS_PREFIX, SESSIONS_PREFIX

if TYPE_CHECKING:
    from lambdas.api.ports import Background, BlobStore, Executor, Table
    from lambdas.api.service.packages import PackageCatalog
    from lambdas.api.settings import ApiSettings

# DynamoDB items are capped at 400 KB: JSON documents above this go to S3 with a pointer.
INLINE_JSON_MAX_BYTES = 350 * 1024
EXECUTION_RECORD_TTL_SECONDS = 7 * 24 * 3600
USAGE_RECORD_TTL_SECONDS = 400 * 24 * 3600
IDEMPOTENCY_TTL_SECONDS = 24 * 3600


@dataclass
class Deps:
    settings: ApiSettings
    table: Table
    blobs: BlobStore
    executor: Executor
    background: Background
    catalog: PackageCatalog
    clock: Clock = time.time

    def now(self) -> float:
        return self.clock()


def new_id() -> str:
    return uuid.uuid4().hex


def iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_datetime(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def usage_period(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m")


# --- S3 key layout ------------------------------------------------------------------------------


def session_prefix(session_id: str) -> str:
    return f"{SESSIONS_PREFIX}{session_id}/"


def session_files_prefix(session_id: str) -> str:
    return f"{session_prefix(session_id)}files/"


def state_key(session_id: str, version: int) -> str:
    return f"{session_prefix(session_id)}state/{version}.pkl"


def notebook_cell_key(session_id: str, execution_count: int) -> str:
    return f"{session_prefix(session_id)}notebook/{execution_count:010d}.json"


def execution_prefix(execution_id: str) -> str:
    return f"{EXECUTIONS_PREFIX}{execution_id}/"


def execution_files_prefix(execution_id: str) -> str:
    return f"{execution_prefix(execution_id)}files/"


# The whole of a result part too large for one response (lambdas/api/service/payloads.py).
_OUTPUT_FILE_NAMES = {"stdout": "stdout.txt", "stderr": "stderr.txt", "outputs": "outputs.json"}


def execution_output_key(execution_id: str, part: str) -> str:
    return f"{execution_prefix(execution_id)}{_OUTPUT_FILE_NAMES[part]}"


def notebook_export_key(session_id: str) -> str:
    """The whole notebook, when it is too large for one response (rewritten on each export)."""
    return f"{session_prefix(session_id)}notebook/export.ipynb"


def execution_output_prefix(execution_id: str) -> str:
    """Where a running execution's output chunks go (lambdas/shared/live.py names them)."""
    return f"{execution_prefix(execution_id)}out/"


def interrupt_key(execution_id: str) -> str:
    """The marker of an interrupt request, which the executor's parent polls."""
    return f"{execution_prefix(execution_id)}interrupt"


# --- file paths ---------------------------------------------------------------------------------


def validate_path(raw: str) -> str:
    """A workspace-relative file path, normalized; InvalidPath for anything that could escape
    the session's prefix or confuse S3 (absolute, `..`, NUL/control characters, too long)."""
    if not raw or not raw.strip():
        raise InvalidPath("the path is empty")
    if len(raw.encode()) > limits.MAX_PATH_LENGTH:
        raise InvalidPath(f"the path is longer than {limits.MAX_PATH_LENGTH} bytes")
    if any(unicodedata.category(ch) == "Cc" for ch in raw):
        raise InvalidPath("the path contains control characters")
    if raw.startswith("/") or "\\" in raw:
        raise InvalidPath("the path must be relative and use '/' as separator")
    parts = raw.split("/")
    if ".." in parts:
        raise InvalidPath("the path must not contain '..'")
    normalized = posixpath.normpath(raw)
    if normalized in {".", ""} or raw.endswith("/"):
        raise InvalidPath("the path must name a file")
    return normalized


# --- large JSON documents -------------------------------------------------------------------------


def store_json(deps: Deps, document: Any, s3_key: str) -> JsonDocument:
    """`document` as JSON text kept in its item, or put in S3 under `s3_key` when it is too
    large for an item."""
    text = json.dumps(document, separators=(",", ":"))
    if len(text.encode()) <= INLINE_JSON_MAX_BYTES:
        return JsonDocument(text=text)
    deps.blobs.put_bytes(s3_key, text.encode())
    return JsonDocument(s3_key=s3_key)


def load_json(deps: Deps, document: JsonDocument | None) -> Any:
    if document is None:
        return None
    if document.text is not None:
        return json.loads(document.text)
    if document.s3_key:
        return json.loads(deps.blobs.get_bytes(document.s3_key))
    return None
