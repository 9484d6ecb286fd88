"""Session file routes: upload form, listing, one file, deletion."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path

from lambdas.api import container
from lambdas.api.errors import (
    FileNotFound,
    InvalidPath,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    SessionNotFound,
    TooManyFiles,
)
from lambdas.api.http.common import caller, greedy_path, responses
from lambdas.api.models import FileInfo, FileList, FileUploadRequest, FileUploadResponse
from lambdas.shared import routes

router = Router()
Principal = Annotated[str, Depends(caller)]
FilePath = Annotated[str, Depends(greedy_path)]
_ONE_FILE_ERRORS = (InvalidPath, SessionNotFound, FileNotFound, ServiceUnavailable)


@router.post(
    routes.CREATE_UPLOAD.resolver_rule,
    summary="Presigned POST to upload a file into the session workspace",
    responses=responses(
        (200, "Upload form", FileUploadResponse),
        errors=(
            InvalidRequest,
            InvalidPath,
            SessionNotFound,
            TooManyFiles,
            PayloadTooLarge,
            ServiceUnavailable,
        ),
    ),
)
def create_upload(
    principal: Principal,
    session_id: Annotated[str, Path()],
    body: Annotated[FileUploadRequest, Body()],
) -> FileUploadResponse:
    return container.services().files.create_upload(principal, session_id, body.path, body.size)


@router.get(
    routes.LIST_FILES.resolver_rule,
    summary="List the session's files",
    responses=responses((200, "The files", FileList), errors=(SessionNotFound, ServiceUnavailable)),
)
def list_files(principal: Principal, session_id: Annotated[str, Path()]) -> FileList:
    return container.services().files.list(principal, session_id)


@router.get(
    routes.GET_FILE.resolver_rule,
    summary="Get one file (presigned download URL)",
    responses=responses((200, "The file", FileInfo), errors=_ONE_FILE_ERRORS),
)
def get_file(
    principal: Principal, session_id: Annotated[str, Path()], file_path: FilePath
) -> FileInfo:
    return container.services().files.get(principal, session_id, file_path)


@router.delete(
    routes.DELETE_FILE.resolver_rule,
    status_code=204,
    summary="Delete one file",
    responses=responses((204, "Deleted", None), errors=_ONE_FILE_ERRORS),
)
def delete_file(
    principal: Principal, session_id: Annotated[str, Path()], file_path: FilePath
) -> Response[None]:
    container.services().files.delete(principal, session_id, file_path)
    return Response(status_code=204, body=None)
