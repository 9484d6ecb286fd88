"""The API's HTTP entry for a threaded server: one Powertools resolver per concurrent request.

Powertools keeps the request being resolved in class attributes (`BaseRouter.current_event`,
`lambda_context`) and per-request state in the resolver's `context`: once per process, which is
right on Lambda (one request at a time) but not for the local stack's threaded HTTP server.
Here each resolver keeps its request on the instance, and a pool hands every concurrent request
a resolver of its own.
"""

from __future__ import annotations

import functools
import queue
from collections.abc import Callable
from typing import Any, cast

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent


class PerInstanceResolver(APIGatewayRestResolver):
    def resolve(self, event: Any, context: Any) -> dict[str, Any]:
        # What APIGatewayRestResolver.resolve does, minus the process-wide class attributes.
        # Starts from an empty context: `include_router` copies the context of the resolver a
        # shared Router last served, which may hold another thread's request.
        self.clear_context()
        self.current_event = cast(APIGatewayProxyEvent, self._to_proxy_event(dict(event)))
        self.lambda_context = context
        try:
            return self._build_response(self._resolve())
        finally:
            self.clear_context()


class ResolverPool:
    def __init__(self, build: Callable[[], APIGatewayRestResolver]) -> None:
        self._build = build
        self._idle: queue.SimpleQueue[APIGatewayRestResolver] = queue.SimpleQueue()

    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            resolver = self._idle.get_nowait()
        except queue.Empty:
            resolver = self._build()
        try:
            return resolver.resolve(event, context)
        finally:
            self._idle.put(resolver)


def threaded_api_handler() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The real API handler's HTTP path, safe to call from many threads at once."""
    from lambdas.api.http import app

    pool = ResolverPool(lambda: app.build_resolver(PerInstanceResolver))
    return functools.partial(app.handle, resolve=pool.resolve)
