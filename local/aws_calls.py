"""Counting the API's AWS requests (a debug aid of the local stack and the tests, never on
Lambda): a botocore `before-call.{service}` hook counts each request by operation.

The local stack installs it when `LCI_COUNT_AWS_CALLS=1` and rewrites the counts, as JSON
`{"Operation": n}`, to `LCI_AWS_CALLS_FILE` after every request; `benchmarks/e2e.py` reads that
file (read-only) around its runs. The functional tests attach a counter to boto3's default
session the same way.

Uploads through presigned POST forms (the sandboxed worker's snapshots and files) bypass boto3:
with `LCI_S3_UPLOADS_FILE` set, the local S3 front (`local/s3_front.py`) counts each one it
stored by its key's folder (`sessions/<id>/state/`), written the same way.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from typing import Any

COUNT_ENV = "LCI_COUNT_AWS_CALLS"
FILE_ENV = "LCI_AWS_CALLS_FILE"
UPLOADS_FILE_ENV = "LCI_S3_UPLOADS_FILE"


class AwsCallCounter:
    """Requests to one AWS service, by operation name (thread-safe)."""

    def __init__(self, service: str = "dynamodb", path: str | None = None) -> None:
        self.service = service
        self._path = path
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def attach(self, events: Any) -> None:
        """Count the requests of clients created from now on with `events` (a botocore
        session's event emitter)."""
        events.register(f"before-call.{self.service}", self._count)

    def detach(self, events: Any) -> None:
        events.unregister(f"before-call.{self.service}", self._count)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def _count(self, model: Any, **_: Any) -> None:
        self.add(model.name)

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1
            snapshot = dict(self._counts)
        if self._path:
            partial = f"{self._path}.{threading.get_ident()}.tmp"
            with open(partial, "w") as file:
                json.dump(snapshot, file)
            os.replace(partial, self._path)


def install_from_env() -> AwsCallCounter | None:
    """The local stack's counter of DynamoDB requests, when `LCI_COUNT_AWS_CALLS=1`."""
    if os.environ.get(COUNT_ENV) != "1":
        return None
    import boto3

    counter = AwsCallCounter("dynamodb", os.environ.get(FILE_ENV) or None)
    counter.attach(boto3._get_default_session().events)
    return counter


def uploads_counter_from_env() -> AwsCallCounter | None:
    """The local S3 front's counter of stored POST uploads, when `LCI_S3_UPLOADS_FILE` is set."""
    path = os.environ.get(UPLOADS_FILE_ENV)
    return AwsCallCounter("s3", path) if path else None


def read_counts(path: str) -> dict[str, int]:
    """The counts the local stack last wrote to `path` (none yet: empty)."""
    try:
        with open(path) as file:
            counts: dict[str, int] = json.load(file)
    except FileNotFoundError:
        return {}
    return counts
