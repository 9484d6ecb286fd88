"""Execution routes: run in a session, one-shot run, read an execution (with its output so far
while it runs), interrupt a running one."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.metrics import MetricUnit

from lambdas.api import container
from lambdas.api.errors import (
    ExecutionFinished,
    ExecutionNotFound,
    InvalidPath,
    InvalidRequest,
    PackageNotAllowed,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    SessionBusy,
    SessionNotFound,
)
from lambdas.api.http.common import caller, idempotency_key, json_response, responses
from lambdas.api.models import (
    ExecuteAccepted,
    ExecuteRequest,
    ExecutionResult,
    InterruptAccepted,
    OneShotExecuteRequest,
)
from lambdas.api.service.dispatch import ExecuteOutcome
from lambdas.api.telemetry import metrics
from lambdas.shared import routes

router = Router()
Principal = Annotated[str, Depends(caller)]
IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]
_RUN_SUCCESS = (
    (200, "Finished", ExecutionResult),
    (202, "Still running after the sync window, or wait=false", ExecuteAccepted),
)
# Both runs: validation (400/413), the monthly quota and a throttled executor (429), storage
# unreachable (503).
_RUN_ERRORS = (
    InvalidRequest,
    PackageNotAllowed,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
)


def _execute_response(outcome: ExecuteOutcome) -> Response[Any]:
    metrics.add_metric(name="Executions", unit=MetricUnit.Count, value=1)
    if outcome.result is not None:
        return json_response(200, outcome.result.model_dump(mode="json"))
    assert outcome.accepted is not None
    return json_response(202, outcome.accepted.model_dump(mode="json"))


@router.post(
    routes.EXECUTE_IN_SESSION.resolver_rule,
    summary="Run a cell in the session (Idempotency-Key header supported)",
    responses=responses(*_RUN_SUCCESS, errors=(*_RUN_ERRORS, SessionNotFound, SessionBusy)),
)
def execute_in_session(
    principal: Principal,
    key: IdempotencyKey,
    session_id: Annotated[str, Path()],
    body: Annotated[ExecuteRequest, Body()],
) -> Response[Any]:
    outcome = container.services().executions.execute_in_session(principal, session_id, body, key)
    return _execute_response(outcome)


@router.post(
    routes.EXECUTE_ONE_SHOT.resolver_rule,
    summary="One-shot run without a session (Idempotency-Key header supported)",
    responses=responses(*_RUN_SUCCESS, errors=(*_RUN_ERRORS, InvalidPath)),
)
def execute_one_shot(
    principal: Principal, key: IdempotencyKey, body: Annotated[OneShotExecuteRequest, Body()]
) -> Response[Any]:
    return _execute_response(container.services().executions.execute_one_shot(principal, body, key))


@router.get(
    routes.GET_EXECUTION.resolver_rule,
    summary="Get an execution result (status may be running)",
    responses=responses(
        (200, "The execution", ExecutionResult), errors=(ExecutionNotFound, ServiceUnavailable)
    ),
)
def get_execution(principal: Principal, execution_id: Annotated[str, Path()]) -> ExecutionResult:
    return container.services().executions.get(principal, execution_id)


@router.post(
    routes.INTERRUPT_EXECUTION.resolver_rule,
    status_code=202,
    summary="Interrupt a running execution: its cell gets KeyboardInterrupt, the session keeps "
    "its state, and it ends as `interrupted` (409 EXECUTION_FINISHED once it is over)",
    responses=responses(
        (202, "Interrupt requested", InterruptAccepted),
        errors=(ExecutionNotFound, ExecutionFinished, ServiceUnavailable),
    ),
)
def interrupt_execution(
    principal: Principal, execution_id: Annotated[str, Path()]
) -> Response[Any]:
    accepted = container.services().executions.interrupt(principal, execution_id)
    return json_response(202, accepted.model_dump(mode="json"))
