"""The routes of the HTTP API (SPEC §3), written once.

Read by the API handler's routers (`lambdas/api/http/`), the CDK REST API (`infra/rest_api.py`),
the local stack's API Gateway emulation (`local/events.py`) and the tests. Paths are API
Gateway resource templates: `{name}` is one path segment, `{name+}` the greedy rest of the path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # API Gateway resource template, e.g. "/v1/sessions/{session_id}"
    public: bool = False  # served without an API key
    body_model: str | None = None  # edge validation model (infra/rest_api.py REQUEST_MODELS)

    @property
    def resolver_rule(self) -> str:
        """The rule for Powertools' resolver: `<name>` for a segment; a greedy parameter becomes
        the regex `.+` and the handler reads its value from the event's path parameters."""
        rule = re.sub(r"\{\w+\+\}", ".+", self.path)
        return re.sub(r"\{(\w+)\}", r"<\1>", rule)


# The browser playground (index.html; `?asset=app.js` / `app.css`): loading it needs no key,
# the page asks for one (lambdas/api/http/playground.py).
PLAYGROUND = Route("GET", "/", public=True)
HEALTH = Route("GET", "/v1/health", public=True)
OPENAPI = Route("GET", "/v1/openapi.json", public=True)
CREATE_SESSION = Route("POST", "/v1/sessions")
GET_SESSION = Route("GET", "/v1/sessions/{session_id}")
DELETE_SESSION = Route("DELETE", "/v1/sessions/{session_id}")
EXECUTE_IN_SESSION = Route("POST", "/v1/sessions/{session_id}/execute", body_model="Execute")
EXECUTE_ONE_SHOT = Route("POST", "/v1/execute", body_model="Execute")
GET_EXECUTION = Route("GET", "/v1/executions/{execution_id}")
INTERRUPT_EXECUTION = Route("POST", "/v1/executions/{execution_id}/interrupt")
FORK_SESSION = Route("POST", "/v1/sessions/{session_id}/fork")
CREATE_UPLOAD = Route("POST", "/v1/sessions/{session_id}/files", body_model="FileUpload")
LIST_FILES = Route("GET", "/v1/sessions/{session_id}/files")
GET_FILE = Route("GET", "/v1/sessions/{session_id}/files/{path+}")
DELETE_FILE = Route("DELETE", "/v1/sessions/{session_id}/files/{path+}")
GET_NOTEBOOK = Route("GET", "/v1/sessions/{session_id}/notebook")
LIST_PACKAGES = Route("GET", "/v1/packages")
GET_USAGE = Route("GET", "/v1/usage")
DIAGNOSTICS = Route("GET", "/v1/diagnostics")

ROUTES: tuple[Route, ...] = (
    PLAYGROUND,
    HEALTH,
    OPENAPI,
    CREATE_SESSION,
    GET_SESSION,
    DELETE_SESSION,
    EXECUTE_IN_SESSION,
    EXECUTE_ONE_SHOT,
    GET_EXECUTION,
    INTERRUPT_EXECUTION,
    FORK_SESSION,
    CREATE_UPLOAD,
    LIST_FILES,
    GET_FILE,
    DELETE_FILE,
    GET_NOTEBOOK,
    LIST_PACKAGES,
    GET_USAGE,
    DIAGNOSTICS,
)

# The resources (one per path, whatever its methods), in declaration order.
RESOURCE_PATHS: tuple[str, ...] = tuple(dict.fromkeys(route.path for route in ROUTES))
PUBLIC_PATHS = frozenset(route.path for route in ROUTES if route.public)
# The greedy parameter of the file routes, as API Gateway names it in `pathParameters`.
GREEDY_PATH_PARAMETER = "path"

# Requests no route above takes still reach the API function (after the key check), so they
# get the product's answers instead of API Gateway's "Missing Authentication Token": every
# resource also has an `ANY` method (API Gateway prefers the specific method), answered
# 405 `METHOD_NOT_ALLOWED` with `Allow`, and the catch-all resources below, answered 404.
ANY_METHOD = "ANY"
ROOT_PATH = "/"
PROXY_PATH = "/{proxy+}"
CATCH_ALL_PATHS: tuple[str, ...] = (ROOT_PATH, PROXY_PATH)


# Missing or unknown `x-api-key` on any path but the public ones: 403, from API Gateway
# (its gateway responses, infra/rest_api.py) or the local stack (local/events.py), before
# the API function runs, so an anonymous caller learns nothing about which routes exist.
FORBIDDEN_CODE = "FORBIDDEN"
FORBIDDEN_MESSAGE = "missing or unknown API key (header x-api-key)"


def allowed_methods(resource: str) -> tuple[str, ...]:
    """The methods routed on a resource (empty for an unknown resource), for `Allow`."""
    return tuple(route.method for route in ROUTES if route.path == resource)
