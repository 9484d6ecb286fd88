"""Helpers for executor tests: build invocations the way the API function does."""

from __future__ import annotations

import itertools
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
