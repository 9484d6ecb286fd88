"""Storage that cannot be reached is `ServiceUnavailable` (503), not a generic 500.

botocore raises its connection errors (refused, reset, closed mid-response, timed out) from
inside a call, after its own retries. `translate_unreachable(client)` hooks two of the client's
events: `needs-retry` stops retrying a connection failure after `CONNECTION_ATTEMPTS` (the
default retry modes would keep a caller waiting up to ~25 s, close to API Gateway's 29 s), and
`after-call-error` replaces the failure with `ServiceUnavailable`, which the error registry
(`lambdas/api/errors.py`) answers as 503 `SERVICE_UNAVAILABLE`. Other errors (throttling,
conditional checks, missing keys) keep botocore's retries and types.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from lambdas.api.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

CONNECTION_ATTEMPTS = 3

Client = TypeVar("Client")


def _is_unreachable(error: BaseException | None) -> bool:
    from botocore.exceptions import ConnectionError as EndpointUnreachable
    from botocore.exceptions import HTTPClientError

    # HTTPClientError: ConnectionClosedError, ReadTimeoutError and the other transport errors.
    return isinstance(error, EndpointUnreachable | HTTPClientError)


def _stop_retrying(attempts: int = 0, caught_exception: Any = None, **_: Any) -> bool | None:
    if _is_unreachable(caught_exception) and attempts >= CONNECTION_ATTEMPTS:
        return False  # botocore: do not retry (None would leave it to its retry handler)
    return None


def _raise_unavailable(exception: Any = None, **_: Any) -> None:
    if _is_unreachable(exception):
        logger.warning("storage unreachable: %s", type(exception).__name__)
        raise ServiceUnavailable() from exception


def translate_unreachable(client: Client) -> Client:
    events = client.meta.events  # type: ignore[attr-defined]
    events.register_first("needs-retry", _stop_retrying)
    events.register("after-call-error", _raise_unavailable)
    return client
