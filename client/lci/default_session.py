"""A session created on first use, so that a model calling `execute_python` twice keeps its
variables without managing sessions: one per MCP connection and one per `Client` for
`dispatch_tool_call`. It is deleted by `close()`, and replaced (with a note) if it expired."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from lci.client import Client
from lci.errors import LciError

logger = logging.getLogger(__name__)

T = TypeVar("T")

EXPIRED_NOTE = (
    "(the previous session had expired: a new one was started, earlier variables are gone)"
)


class DefaultSession:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.session_id: str | None = None
        self._lock = threading.Lock()  # MCP runs tool calls on worker threads

    def get(self) -> str:
        with self._lock:
            if self.session_id is None:
                self.session_id = self.client.create_session().session_id
                logger.info("created the default session %s", self.session_id)
            return self.session_id

    def run(self, session_id: str | None, call: Callable[[str], T]) -> tuple[T, str]:
        """`call(session id)` with `session_id`, or with the default session; returns its value
        and a note for the model (non-empty when the default session had to be replaced)."""
        if session_id:
            return call(session_id), ""
        current = self.get()
        try:
            return call(current), ""
        except LciError as exc:
            if exc.code != "SESSION_NOT_FOUND":
                raise
            with self._lock:
                if self.session_id == current:
                    self.session_id = None
            return call(self.get()), EXPIRED_NOTE

    def close(self) -> None:
        """Delete the default session (best effort: it expires on its own otherwise)."""
        with self._lock:
            session_id, self.session_id = self.session_id, None
        if session_id is None:
            return
        with contextlib.suppress(LciError):
            self.client.delete_session(session_id)
            logger.info("deleted the default session %s", session_id)
