"""The one exception the client raises for API and transport failures."""

from __future__ import annotations

from typing import Any


class LciError(Exception):
    """An API call failed.

    `status` is the HTTP status (0 when the server could not be reached), `code` the API's error
    code (`SESSION_NOT_FOUND`, `SESSION_BUSY`, ...), `message` a human sentence.
    """

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    @classmethod
    def from_response(cls, status: int, body: Any) -> LciError:
        """Build from an error body: ours (`{"error": {...}}`) or API Gateway's (`{"message"}`)."""
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                return cls(
                    status,
                    str(error.get("code") or _code_for_status(status)),
                    str(error.get("message") or ""),
                    error.get("details") if isinstance(error.get("details"), dict) else None,
                )
            if "message" in body:
                return cls(status, _code_for_status(status), str(body["message"]))
        text = body if isinstance(body, str) else ""
        return cls(status, _code_for_status(status), text[:500] or f"HTTP {status}")


def _code_for_status(status: int) -> str:
    return {
        400: "INVALID_REQUEST",
        401: "UNAUTHORIZED",
        403: "FORBIDDEN",
        404: "NOT_FOUND",
        409: "CONFLICT",
        413: "PAYLOAD_TOO_LARGE",
        429: "RATE_LIMITED",
    }.get(status, "HTTP_ERROR" if status else "CONNECTION_ERROR")


class UsageError(Exception):
    """A problem the user fixes on the command line or in their files (`lci` exits 2)."""
