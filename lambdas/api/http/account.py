"""Routes about the service and the caller: health, the package whitelist, usage, and what the
deployment's executor environment really enforces (diagnostics)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.api_gateway import Router

from lambdas.api import container
from lambdas.api.errors import RateLimited, ServiceUnavailable
from lambdas.api.http.common import caller, responses
from lambdas.api.models import Diagnostics, HealthResponse, PackageList, Usage
from lambdas.shared import routes

router = Router()
Principal = Annotated[str, Depends(caller)]


@router.get(
    routes.HEALTH.resolver_rule,
    summary="Liveness (no API key needed)",
    responses=responses((200, "Alive", HealthResponse)),
)
def health() -> HealthResponse:
    return HealthResponse()


@router.get(
    routes.LIST_PACKAGES.resolver_rule,
    summary="Whitelisted packages",
    responses=responses((200, "The whitelist", PackageList)),
)
def list_packages(_: Principal) -> PackageList:
    return container.services().packages.listing()


@router.get(
    routes.GET_USAGE.resolver_rule,
    summary="This API key's usage in the current month and its quota",
    responses=responses((200, "Usage", Usage), errors=(ServiceUnavailable,)),
)
def get_usage(principal: Principal) -> Usage:
    return container.services().usage.current(principal)


@router.get(
    routes.DIAGNOSTICS.resolver_rule,
    summary="Which protections hold in the executor's environment (runs no code)",
    description="The executor checks, from a child process as user code would: a "
    "non-dumpable parent, rlimits, process-group kill, pidfd, huge pages, and whether the "
    "Lambda Runtime API is reachable. `lci doctor` prints it.",
    responses=responses(
        (200, "The executor's report", Diagnostics),
        errors=(RateLimited,),  # executor throttled
    ),
)
def diagnostics(principal: Principal) -> Diagnostics:
    return container.services().diagnostics.report(principal)
