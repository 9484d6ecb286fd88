"""Session routes: create, read, delete, fork, and the session's notebook."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path

from lambdas.api import container
from lambdas.api.errors import (
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    SessionNotFound,
)
from lambdas.api.http.common import caller, json_response, responses
from lambdas.api.models import Session, SessionCreateRequest, SessionDetail
from lambdas.shared import routes

router = Router()
# A body (400 when invalid, 413 over API Gateway's 10 MB) and storage (503 when unreachable).
_BODY_ERRORS = (InvalidRequest, PayloadTooLarge, ServiceUnavailable)
_SESSION_ERRORS = (SessionNotFound, ServiceUnavailable)
Principal = Annotated[str, Depends(caller)]


@router.post(
    routes.CREATE_SESSION.resolver_rule,
    status_code=201,
    summary="Create a session",
    responses=responses((201, "Session created", Session), errors=_BODY_ERRORS),
)
def create_session(
    principal: Principal, body: Annotated[SessionCreateRequest | None, Body()] = None
) -> Session:
    ttl = body.ttl_seconds if body else None
    return container.services().sessions.create(principal, ttl)


@router.get(
    routes.GET_SESSION.resolver_rule,
    summary="Get a session and its variables",
    responses=responses((200, "The session", SessionDetail), errors=_SESSION_ERRORS),
)
def get_session(principal: Principal, session_id: Annotated[str, Path()]) -> SessionDetail:
    return container.services().sessions.get(principal, session_id)


@router.delete(
    routes.DELETE_SESSION.resolver_rule,
    status_code=204,
    summary="Delete a session, its state and files",
    responses=responses((204, "Deleted", None), errors=_SESSION_ERRORS),
)
def delete_session(principal: Principal, session_id: Annotated[str, Path()]) -> Response[None]:
    container.services().sessions.delete(principal, session_id)
    return Response(status_code=204, body=None)


@router.post(
    routes.FORK_SESSION.resolver_rule,
    status_code=201,
    summary="Fork a session: a new one with copies of its last committed variables, files and "
    "notebook (`ttl_seconds` defaults to the parent's)",
    responses=responses((201, "Session created", Session), errors=(*_BODY_ERRORS, SessionNotFound)),
)
def fork_session(
    principal: Principal,
    session_id: Annotated[str, Path()],
    body: Annotated[SessionCreateRequest | None, Body()] = None,
) -> Session:
    ttl = body.ttl_seconds if body else None
    return container.services().forks.fork(principal, session_id, ttl)


@router.get(
    routes.GET_NOTEBOOK.resolver_rule,
    summary="The session's cells with outputs as an nbformat v4 notebook",
    description="A notebook too large for one response (Lambda's 6 MB) keeps its first and "
    "last cells, with large outputs shortened, and links the whole notebook as "
    "`metadata.lci.notebook_url` (a presigned GET valid for minutes).",
    responses=responses((200, "nbformat v4 JSON", None), errors=_SESSION_ERRORS),
)
def get_notebook(principal: Principal, session_id: Annotated[str, Path()]) -> Response[Any]:
    return json_response(200, container.services().notebook.notebook(principal, session_id))
