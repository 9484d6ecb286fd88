"""Routes about the service and the caller: health, the package whitelist, usage."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.api_gateway import Router

from lambdas.api import container
from lambdas.api.errors import ServiceUnavailable
from lambdas.api.http.common import caller, responses
from lambdas.api.models import HealthResponse, PackageList, Usage
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
