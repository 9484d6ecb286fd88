"""Helpers for executor tests: build invocations the way the API function does."""

from __future__ import annotations

import itertools
from typing import Any

from lambdas.shared.models import ExecutorResponse

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
