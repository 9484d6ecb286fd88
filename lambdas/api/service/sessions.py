"""Sessions: create, read (with the variables of the last snapshot), delete."""

from __future__ import annotations

from lambdas.api.domain import SessionRecord
from lambdas.api.errors import SessionNotFound
from lambdas.api.models import Session, SessionDetail, Variable
from lambdas.api.service.common import Deps, iso, new_id, session_prefix


class SessionService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    def create(self, principal: str, ttl_seconds: int | None) -> Session:
        now = self._deps.now()
        ttl = ttl_seconds or self._deps.settings.SESSION_TTL_SECONDS
        session = SessionRecord(
            session_id=new_id(),
            principal=principal,
            created_at=iso(now),
            last_used_at=iso(now),
            expires_at=int(now + ttl),
            ttl_seconds=ttl,
            state_version=0,
            execution_count=0,
            variables=[],
            has_files=False,
        )
        self._deps.table.create_session(session)
        return self.to_model(session)

    def load(self, principal: str, session_id: str) -> SessionRecord:
        """The live session owned by `principal`; SessionNotFound otherwise (expired and
        foreign sessions look exactly like missing ones)."""
        session = self._deps.table.get_session(session_id)
        if not session or session.principal != principal:
            raise SessionNotFound()
        if not session.is_live(self._deps.now()):
            raise SessionNotFound()
        return session

    def get(self, principal: str, session_id: str) -> SessionDetail:
        session = self.load(principal, session_id)
        return SessionDetail(
            **self.to_model(session).model_dump(),
            variables=[Variable(**v) for v in session.variables],
        )

    def delete(self, principal: str, session_id: str) -> None:
        self.load(principal, session_id)
        # Objects first: if this fails half way the session still exists and a retry finishes.
        self._deps.blobs.delete_prefix(session_prefix(session_id))
        self._deps.table.delete_session(session_id)

    def purge(self, session_id: str) -> None:
        """Delete what an expired session left behind (its item is already gone: DynamoDB's TTL
        removed it). Idempotent; fed by the table's stream."""
        self._deps.blobs.delete_prefix(session_prefix(session_id))
        self._deps.table.delete_session(session_id)

    def to_model(self, session: SessionRecord) -> Session:
        return Session(
            session_id=session.session_id,
            created_at=session.created_at,
            expires_at=iso(session.expires_at),
            last_used_at=session.last_used_at,
            execution_count=session.execution_count,
            status="busy" if session.is_leased(self._deps.now()) else "idle",
        )
