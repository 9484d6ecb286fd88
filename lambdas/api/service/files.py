"""Session files: presigned POST uploads, listing, presigned GET downloads, deletion."""

from __future__ import annotations

from lambdas.api.errors import FileNotFound, PayloadTooLarge, TooManyFiles
from lambdas.api.models import FileInfo, FileList, FileUploadResponse, PresignedUpload
from lambdas.api.service.common import (
    Deps,
    iso,
    iso_datetime,
    session_files_prefix,
    validate_path,
)
from lambdas.api.service.sessions import SessionService
from lambdas.shared import limits


class FileService:
    def __init__(self, deps: Deps, sessions: SessionService) -> None:
        self._deps = deps
        self._sessions = sessions

    def _download_url(self, key: str) -> str:
        return self._deps.blobs.presigned_get(key, limits.PRESIGNED_DOWNLOAD_EXPIRES_SECONDS)

    def create_upload(
        self, principal: str, session_id: str, raw_path: str, size: int | None
    ) -> FileUploadResponse:
        path = validate_path(raw_path)
        self._sessions.load(principal, session_id)
        max_bytes = self._deps.settings.MAX_UPLOAD_BYTES
        if size is not None and size > max_bytes:
            raise PayloadTooLarge(
                f"files may be at most {max_bytes} bytes", details={"max_bytes": max_bytes}
            )
        limit = size if size is not None else max_bytes
        prefix = session_files_prefix(session_id)
        self._check_room_for(prefix + path, prefix)
        self._deps.table.mark_has_files(session_id)  # before the form exists
        expires_in = limits.PRESIGNED_UPLOAD_EXPIRES_SECONDS
        post = self._deps.blobs.presigned_post(
            # One form, one key: changing the form's `key` can neither dodge the path rules
            # nor the file cap checked above.
            key_prefix=prefix,
            max_bytes=limit,
            expires_in=expires_in,
            exact_key=prefix + path,
        )
        return FileUploadResponse(
            path=path,
            upload=PresignedUpload(url=post.url, fields=post.fields),
            expires_at=iso(self._deps.now() + expires_in),
            max_bytes=limit,
        )

    def _check_room_for(self, key: str, prefix: str) -> None:
        """A new path needs room under the session's file cap; replacing a file always fits.

        Counted first (one bounded listing), and the key looked up only when the session is
        full: the common case costs one request.
        """
        max_files = limits.MAX_FILES_PER_SESSION  # read per call: tests and deploys may lower it
        blobs = self._deps.blobs
        if blobs.count_objects(prefix, stop_at=max_files) >= max_files and blobs.head(key) is None:
            raise TooManyFiles(max_files)

    def list(self, principal: str, session_id: str) -> FileList:
        self._sessions.load(principal, session_id)
        prefix = session_files_prefix(session_id)
        return FileList(
            files=[
                FileInfo(
                    path=obj.key[len(prefix) :],
                    size=obj.size,
                    modified_at=iso_datetime(obj.last_modified),
                    download_url=self._download_url(obj.key),
                )
                for obj in self._deps.blobs.list_objects(prefix)
            ]
        )

    def get(self, principal: str, session_id: str, raw_path: str) -> FileInfo:
        path = validate_path(raw_path)
        self._sessions.load(principal, session_id)
        key = session_files_prefix(session_id) + path
        obj = self._deps.blobs.head(key)
        if obj is None:
            raise FileNotFound()
        return FileInfo(
            path=path,
            size=obj.size,
            modified_at=iso_datetime(obj.last_modified),
            download_url=self._download_url(key),
        )

    def delete(self, principal: str, session_id: str, raw_path: str) -> None:
        path = validate_path(raw_path)
        self._sessions.load(principal, session_id)
        key = session_files_prefix(session_id) + path
        if self._deps.blobs.head(key) is None:
            raise FileNotFound()
        self._deps.blobs.delete(key)
