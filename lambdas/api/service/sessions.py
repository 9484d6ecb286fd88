"""Sessions: create, read (with the variables of the last snapshot), delete."""

from __future__ import annotations

from typing import Any

from lambdas.api.errors import SessionNotFound
from lambdas.api.models import Session, SessionDetail, Variable
from lambdas.api.service.common import Deps, iso, new_id, session_prefix


class SessionService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    def create(self, principal: str, ttl_seconds: int | None) -> Session:
        now = self._deps.now()
        ttl = ttl_seconds or self._deps.settings.SESSION_TTL_SECONDS
        session_id = new_id()
        item = {
            "session_id": session_id,
            "principal": principal,
            "created_at": iso(now),
            "last_used_at": iso(now),
            "expires_at": int(now + ttl),
            "ttl_seconds": ttl,
            "state_version": 0,
            "execution_count": 0,
            "variables": [],
            "has_files": False,
        }
        self._deps.table.create_session(session_id, item)
        return self.to_model(item)

    def load(self, principal: str, session_id: str) -> dict[str, Any]:
        """The live session item owned by `principal`; SessionNotFound otherwise (expired and
        foreign sessions look exactly like missing ones)."""
        item = self._deps.table.get_session(session_id)
        if not item or item.get("principal") != principal:
            raise SessionNotFound()
        if item["expires_at"] < self._deps.now():
            raise SessionNotFound()
        return item

    def get(self, principal: str, session_id: str) -> SessionDetail:
        item = self.load(principal, session_id)
        return SessionDetail(
            **self.to_model(item).model_dump(),
            variables=[Variable(**v) for v in item.get("variables") or []],
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

    def to_model(self, item: dict[str, Any]) -> Session:
        now = self._deps.now()
        busy = bool(item.get("lease_id")) and item.get("lease_expires_at", 0) >= now
        return Session(
            session_id=item["session_id"],
            created_at=item["created_at"],
            expires_at=iso(item["expires_at"]),
            last_used_at=item["last_used_at"],
            execution_count=item.get("execution_count", 0),
            status="busy" if busy else "idle",
        )
