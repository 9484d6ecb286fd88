"""Executor answers as the API reads them: a parsed `ExecutorResponse`, or an `ExecutorFailure`
when the executor produced no result of its own (unreachable, crashed, unreadable reply, or it
reported failing before any worker ran the code). A failure commits nothing.

Shared by the API's executor adapter (`lambdas/api/adapters/executor.py`) and the local
stack's environment pool (`local/environments.py`).
"""

from __future__ import annotations

from typing import Any

from lambdas.shared.models import (
    ExecutionError,
    ExecutionResult,
    ExecutionStatus,
    ExecutorInvocation,
    ExecutorResponse,
)

# The error name a failure shows to the user (and the one the executor uses for its own).
EXECUTOR_FAILURE_NAME = "ExecutorError"


class ExecutorFailure(ExecutorResponse):
    """An executor answer without a run: the service commits no state, cell or count."""


def failed_response(invocation: ExecutorInvocation, message: str) -> ExecutorFailure:
    return ExecutorFailure(
        result=ExecutionResult(
            execution_id=invocation.execution_id,
            session_id=invocation.session_id,
            status=ExecutionStatus.ERROR,
            success=False,
            execution_count=None,
            error=ExecutionError(name=EXECUTOR_FAILURE_NAME, value=message),
            stderr=message,
        )
    )


def parse_response(invocation: ExecutorInvocation, payload: Any) -> ExecutorResponse:
    try:
        response = ExecutorResponse.model_validate(payload)
    except ValueError:
        return failed_response(invocation, "the executor returned an unreadable response")
    result = response.result
    # The executor's own failure reply (lambdas/executor: no worker ran the code) has no
    # execution count; a user exception always carries one.
    if (
        result.execution_count is None
        and result.error is not None
        and result.error.name == EXECUTOR_FAILURE_NAME
    ):
        return ExecutorFailure.model_validate(response.model_dump())
    return response
