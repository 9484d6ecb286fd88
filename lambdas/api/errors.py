"""Domain errors of the API and the ONE registry that maps each to an HTTP status and code.

Services raise these; the handler turns any of them into `{"error": {"code", "message",
"details"?}}` with the registered status. Anything else becomes a generic 500 `INTERNAL`, so no
stack trace, ARN or bucket name ever reaches a client.
"""

from __future__ import annotations

from typing import Any

from lambdas.shared.routes import FORBIDDEN_CODE, FORBIDDEN_MESSAGE


class ApiError(Exception):
    """Base of every error a client may see. `message` is shown verbatim: keep it user-facing."""

    default_message = "internal error"

    def __init__(self, message: str | None = None, details: dict[str, Any] | None = None):
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def response_headers(self) -> dict[str, str]:
        """HTTP headers the error response carries besides its body."""
        return {}


class InvalidRequest(ApiError):
    default_message = "the request is invalid"


class PackageNotAllowed(ApiError):
    default_message = "some requested packages are not on the whitelist"

    def __init__(self, packages: list[str], reasons: dict[str, str] | None = None):
        details: dict[str, Any] = {"packages": packages}
        if reasons:
            details["reasons"] = reasons
        message = "; ".join(reasons.values()) if reasons else ", ".join(packages)
        super().__init__(f"packages not allowed: {message}", details=details)


class InvalidPath(ApiError):
    default_message = "the file path is invalid"


class Forbidden(ApiError):
    default_message = FORBIDDEN_MESSAGE


class NotFound(ApiError):
    default_message = "not found"


class SessionNotFound(NotFound):
    default_message = "session not found"


class ExecutionNotFound(NotFound):
    default_message = "execution not found"


class FileNotFound(NotFound):
    default_message = "file not found"


class RouteNotFound(NotFound):
    default_message = "no such route"


class MethodNotAllowed(ApiError):
    """A known path with a method it does not take; `allowed` goes into the `Allow` header."""

    def __init__(self, method: str, allowed: tuple[str, ...]):
        self.allowed = allowed
        super().__init__(
            f"{method} is not allowed here; use {', '.join(allowed)}",
            details={"allowed_methods": list(allowed)},
        )

    def response_headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class SessionBusy(ApiError):
    default_message = "the session is running another execution; retry when it has finished"


class ExecutionFinished(ApiError):
    default_message = "the execution has finished; there is nothing to interrupt"


class TooManyFiles(ApiError):
    default_message = "the session holds the most files it may; delete some to make room"

    def __init__(self, max_files: int):
        super().__init__(
            f"a session holds at most {max_files} files; delete some to make room for new ones",
            details={"max_files": max_files},
        )


class PayloadTooLarge(ApiError):
    default_message = "the request is too large"


class RateLimited(ApiError):
    default_message = "too many requests; slow down"

    def __init__(
        self,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after_seconds: int = 1,
    ):
        super().__init__(message, details)
        self.retry_after_seconds = retry_after_seconds

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class QuotaExceeded(ApiError):
    default_message = "the monthly usage quota of this API key is exhausted"


class ServiceUnavailable(ApiError):
    """Storage (DynamoDB/S3) cannot be reached (lambdas/api/adapters/unreachable.py)."""

    default_message = "the service's storage is unreachable right now; retry shortly"


class InternalError(ApiError):
    default_message = "internal error"


# The registry: error class -> (HTTP status, error code). Lookup walks the MRO, so a subclass
# without its own entry inherits its parent's.
ERROR_REGISTRY: dict[type[ApiError], tuple[int, str]] = {
    InvalidRequest: (400, "INVALID_REQUEST"),
    PackageNotAllowed: (400, "PACKAGE_NOT_ALLOWED"),
    InvalidPath: (400, "INVALID_PATH"),
    Forbidden: (403, FORBIDDEN_CODE),
    NotFound: (404, "NOT_FOUND"),
    SessionNotFound: (404, "SESSION_NOT_FOUND"),
    ExecutionNotFound: (404, "EXECUTION_NOT_FOUND"),
    FileNotFound: (404, "FILE_NOT_FOUND"),
    MethodNotAllowed: (405, "METHOD_NOT_ALLOWED"),
    SessionBusy: (409, "SESSION_BUSY"),
    ExecutionFinished: (409, "EXECUTION_FINISHED"),
    TooManyFiles: (409, "TOO_MANY_FILES"),
    PayloadTooLarge: (413, "PAYLOAD_TOO_LARGE"),
    RateLimited: (429, "RATE_LIMITED"),
    QuotaExceeded: (429, "QUOTA_EXCEEDED"),
    InternalError: (500, "INTERNAL"),
    ServiceUnavailable: (503, "SERVICE_UNAVAILABLE"),
    ApiError: (500, "INTERNAL"),
}


def status_and_code(error: ApiError) -> tuple[int, str]:
    return registered_status_and_code(type(error))


def registered_status_and_code(error_type: type[ApiError]) -> tuple[int, str]:
    for cls in error_type.__mro__:
        if cls in ERROR_REGISTRY:
            return ERROR_REGISTRY[cls]  # type: ignore[index]
    return ERROR_REGISTRY[InternalError]


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}
