"""Session routes: create, read, delete, and the session's notebook."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path

from lambdas.api import container
from lambdas.api.errors import InvalidRequest, PayloadTooLarge, SessionNotFound
from lambdas.api.http.common import caller, json_response, responses
from lambdas.api.models import Session, SessionCreateRequest, SessionDetail
from lambdas.shared import routes

router = Router()
Principal = Annotated[str, Depends(caller)]


@router.post(
    routes.CREATE_SESSION.resolver_rule,
    status_code=201,
    summary="Create a session",
    responses=responses(
        (201, "Session created", Session), errors=(InvalidRequest, PayloadTooLarge)
    ),
)
def create_session(
    principal: Principal, body: Annotated[SessionCreateRequest | None, Body()] = None
) -> Session:
    ttl = body.ttl_seconds if body else None
    return container.services().sessions.create(principal, ttl)


@router.get(
    routes.GET_SESSION.resolver_rule,
    summary="Get a session and its variables",
    responses=responses((200, "The session", SessionDetail), errors=(SessionNotFound,)),
)
def get_session(principal: Principal, session_id: Annotated[str, Path()]) -> SessionDetail:
    return container.services().sessions.get(principal, session_id)


@router.delete(
    routes.DELETE_SESSION.resolver_rule,
    status_code=204,
    summary="Delete a session, its state and files",
    responses=responses((204, "Deleted", None), errors=(SessionNotFound,)),
)
def delete_session(principal: Principal, session_id: Annotated[str, Path()]) -> Response[None]:
    container.services().sessions.delete(principal, session_id)
    return Response(status_code=204, body=None)


@router.get(
    routes.GET_NOTEBOOK.resolver_rule,
    summary="The session's cells with outputs as an nbformat v4 notebook",
    responses=responses((200, "nbformat v4 JSON", None), errors=(SessionNotFound,)),
)
def get_notebook(principal: Principal, session_id: Annotated[str, Path()]) -> Response[Any]:
    return json_response(200, container.services().notebook.notebook(principal, session_id))
