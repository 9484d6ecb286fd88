"""Forking a session: a new session whose variables, files and notebook are copies of its
parent's last committed state, made with server-side S3 copies (no code runs again).

The parent's committed state is the snapshot its session item points to (`state_version`), so
a busy parent forks from its last commit, never from the run in flight; files are copied as
they are in the bucket. The copies go first and the new session's item last, so a fork that
fails half way leaves nothing a client can see (and what it copied is deleted).
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from lambdas.api.domain import JsonDocument, NotebookCell, SessionRecord
from lambdas.api.models import Session
from lambdas.api.service.common import (
    Deps,
    iso,
    new_id,
    notebook_cell_key,
    session_files_prefix,
    session_prefix,
    state_key,
)
from lambdas.api.service.sessions import SessionService
from lambdas.shared import limits

logger = logging.getLogger(__name__)

_PARALLEL_COPIES = 16


class ForkService:
    def __init__(self, deps: Deps, sessions: SessionService) -> None:
        self._deps = deps
        self._sessions = sessions
        # CopyObject calls only wait on S3.
        self._io = ThreadPoolExecutor(max_workers=_PARALLEL_COPIES, thread_name_prefix="lci-fork")

    def fork(self, principal: str, session_id: str, ttl_seconds: int | None) -> Session:
        """A new session from `session_id`'s last committed state (SessionNotFound for a
        missing, expired or foreign one). `ttl_seconds` defaults to the parent's."""
        parent = self._sessions.load(principal, session_id)
        now = self._deps.now()
        ttl = ttl_seconds or parent.ttl_seconds
        child_id = new_id()
        copies: list[tuple[str, str]] = []
        if parent.state_version > 0:
            copies.append(
                (
                    state_key(parent.session_id, parent.state_version),
                    state_key(child_id, parent.state_version),
                )
            )
        files_prefix = session_files_prefix(parent.session_id)
        stored = self._deps.blobs.list_objects(files_prefix) if parent.has_files else []
        copies += [
            (item.key, session_files_prefix(child_id) + item.key[len(files_prefix) :])
            for item in stored
        ]
        cells = [
            self._cell_copy(cell, child_id, now, ttl, copies) for cell in self._parent_cells(parent)
        ]
        child = SessionRecord(
            session_id=child_id,
            principal=principal,
            created_at=iso(now),
            last_used_at=iso(now),
            expires_at=int(now + ttl),
            ttl_seconds=ttl,
            state_version=parent.state_version,
            execution_count=parent.execution_count,
            variables=parent.variables,
            has_files=bool(stored),
        )
        try:
            for _ in self._io.map(lambda pair: self._deps.blobs.copy(*pair), copies):
                pass
            if cells:
                self._deps.table.put_cells(cells)
            self._deps.table.create_session(child)
        except Exception:
            with contextlib.suppress(Exception):
                self._deps.blobs.delete_prefix(session_prefix(child_id))
                self._deps.table.delete_session(child_id)
            raise
        return self._sessions.to_model(child)

    def _parent_cells(self, parent: SessionRecord) -> list[NotebookCell]:
        # A cell past the committed count belongs to no commit (it cannot exist today: cells
        # are written in the commit's transaction); kept out all the same.
        return [
            cell
            for cell in self._deps.table.list_cells(parent.session_id)
            if cell.execution_count <= parent.execution_count
        ]

    @staticmethod
    def _cell_copy(
        cell: NotebookCell, child_id: str, now: float, ttl: int, copies: list[tuple[str, str]]
    ) -> NotebookCell:
        """The child's copy of a notebook cell; outputs kept in S3 are copied too."""
        outputs = cell.outputs
        if outputs is not None and outputs.s3_key:
            target = notebook_cell_key(child_id, cell.execution_count)
            copies.append((outputs.s3_key, target))
            outputs = JsonDocument(text=outputs.text, s3_key=target)
        return cell.model_copy(
            update={
                "session_id": child_id,
                "outputs": outputs,
                # As a run's cell: it outlives the session item, and goes with the session.
                "ttl": int(now + ttl + limits.MAX_SESSION_TTL_SECONDS),
            }
        )
