"""Helpers for executor tests: build invocations the way the API function does."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from lambdas.shared.executor_responses import failed_response, parse_response
from lambdas.shared.models import ExecutorInvocation, ExecutorResponse

_ids = itertools.count(1)


def invocation(code: str, session_id: str | None = "s-test", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "execution_id": f"exec-{next(_ids)}",
        "tenant_id": session_id or "principal-test",
        "session_id": session_id,
        "code": code,
        "timeout_ms": 60_000,
    }
    event.update(fields)
    return event


def checked(response: dict[str, Any]) -> dict[str, Any]:
    """The response must be exactly an ExecutorResponse dump (the contract B and E rely on)."""
    assert ExecutorResponse.model_validate(response).model_dump(mode="json") == response
    return response


class InProcessExecutor:
    """The API's executor port served by `lambdas.executor.handler` in this process (tests only:
    no isolation; the API bundle does not ship the executor)."""

    def invoke(self, invocation: ExecutorInvocation) -> ExecutorResponse:
        from lambdas.executor import handler as executor_handler  # type: ignore[attr-defined]

        try:
            payload = executor_handler.handler(invocation.model_dump(mode="json"), None)
        except Exception as exc:
            return failed_response(invocation, f"the executor failed ({type(exc).__name__})")
        return parse_response(invocation, payload)


def serve_api_on_moto_server(endpoint: str, catalog: Any) -> None:
    """Create the table and bucket on the moto server at `endpoint` and wire the API to them
    with this in-process executor (background jobs on threads)."""
    import boto3

    from lambdas.api import container
    from lambdas.api.settings import ApiSettings
    from lambdas.shared.storage import table_create_kwargs
    from tests.functional.conftest import BUCKET, TABLE

    boto3.client("dynamodb", endpoint_url=endpoint).create_table(**table_create_kwargs(TABLE))
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    settings = ApiSettings(
        TABLE_NAME=TABLE,
        BUCKET_NAME=BUCKET,
        EXECUTOR_MODE="local",
        BACKGROUND_MODE="thread",
        S3_ENDPOINT_URL=endpoint,
        DYNAMODB_ENDPOINT_URL=endpoint,
    )
    container.reset()
    container.override(settings=settings, catalog=catalog, executor=InProcessExecutor())


def answered_within(
    seconds: float, call: Callable[[], dict[str, Any]], engine: Any, session_id: str
) -> dict[str, Any]:
    """`call()` (an invocation of `engine` in `session_id`), failed by assertion when it has
    not answered within `seconds`: a timeout that stopped firing costs seconds, not pytest's
    global timeout. The session's worker tree is then killed, so the stuck invocation returns
    and the module's later tests find a working engine."""
    answer: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: answer.update(response=call()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        worker = engine.worker_pids().get(session_id)  # lock-free: the stuck call holds it
        for pid in [*_descendants(worker), worker] if worker else []:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        thread.join(30)
        raise AssertionError(f"the executor did not answer within {seconds} s")
    return answer["response"]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
