"""The local stack's per-request resolver pool (`local/resolvers.py`): requests served at the same
time on several threads each see their own event and principal.

Every request stops at a barrier after its resolver has taken its event and matched its route,
before the handler reads the request, so all of them are in flight at once when they read it.
One shared resolver holds one current event and one routing context for all of them: a request
then reads another request's event, or fails because another one cleared the context.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Request
from aws_lambda_powertools.event_handler.api_gateway import Router

from local.events import HttpRequest, to_proxy_event
from local.resolvers import PerInstanceResolver, ResolverPool, threaded_api_handler

CONCURRENT_REQUESTS = 4
Resolve = Callable[[dict[str, Any], Any], dict[str, Any]]


def _probe_router(barrier: threading.Barrier) -> Router:
    router = Router()

    def all_in_flight(app: Any, next_middleware: Any) -> Any:
        barrier.wait(timeout=10)
        return next_middleware(app)

    @router.get("/probe", middlewares=[all_in_flight])
    def probe(request: Request) -> dict[str, Any]:
        event = request.resolved_event
        return {
            "principal": event.request_context.identity.api_key_id,
            "n": (event.query_string_parameters or {}).get("n"),
        }

    return router


def _event(n: int) -> dict[str, Any]:
    request = HttpRequest(method="GET", target=f"/probe?n={n}", headers=[("Host", "local")])
    return to_proxy_event(request, f"principal-{n}")


def _answers(resolve: Resolve) -> list[dict[str, Any]]:
    """What each of CONCURRENT_REQUESTS simultaneous probes saw, in request order (a request
    that failed instead: its status, or the exception it raised)."""

    def answer(n: int) -> dict[str, Any]:
        try:
            response = resolve(_event(n), None)
        except Exception as exc:
            return {"raised": repr(exc)}
        if response["statusCode"] != 200:
            return {"status": response["statusCode"]}
        return dict(json.loads(response["body"]))

    with ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS) as threads:
        return list(threads.map(answer, range(CONCURRENT_REQUESTS)))


def _own_events() -> list[dict[str, Any]]:
    return [{"principal": f"principal-{n}", "n": str(n)} for n in range(CONCURRENT_REQUESTS)]


@pytest.fixture
def barrier() -> Iterator[threading.Barrier]:
    barrier = threading.Barrier(CONCURRENT_REQUESTS)
    yield barrier
    barrier.abort()  # a failed test must not leave a thread waiting


def _build_with_probe(
    barrier: threading.Barrier,
) -> Callable[..., APIGatewayRestResolver]:
    probe = _probe_router(barrier)

    def build(
        resolver_class: type[APIGatewayRestResolver] = APIGatewayRestResolver,
    ) -> APIGatewayRestResolver:
        resolver = resolver_class(enable_validation=True)
        resolver.include_router(probe)
        return resolver

    return build


def test_pooled_resolvers_keep_each_request_to_itself(barrier: threading.Barrier) -> None:
    build = _build_with_probe(barrier)
    pool = ResolverPool(lambda: build(PerInstanceResolver))
    assert _answers(pool.resolve) == _own_events()


def test_one_shared_resolver_mixes_requests_up(barrier: threading.Barrier) -> None:
    """Why the pool exists, and proof that the probe above notices its loss: requests read
    another request's event, or fail because another one cleared the shared routing context."""
    shared = _build_with_probe(barrier)()
    answers = _answers(shared.resolve)
    assert answers != _own_events()


def test_the_local_api_handler_serves_concurrent_requests_apart(
    barrier: threading.Barrier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`threaded_api_handler` (what the local stack and the API tests call) goes through the
    pool: the probe is added to the resolvers it builds from `lambdas/api/http/app.py`."""
    from lambdas.api.http import app

    monkeypatch.setattr(app, "build_resolver", _build_with_probe(barrier))
    assert _answers(threaded_api_handler()) == _own_events()


def test_a_resolver_is_reused_once_its_request_is_answered() -> None:
    built: list[APIGatewayRestResolver] = []
    build = _build_with_probe(threading.Barrier(1))

    def counted() -> APIGatewayRestResolver:
        built.append(build(PerInstanceResolver))
        return built[-1]

    pool = ResolverPool(counted)
    for n in range(3):
        response = pool.resolve(_event(n), None)
        assert json.loads(response["body"])["principal"] == f"principal-{n}"
    assert len(built) == 1
