"""Executor Lambda entry point: `handler(event, context)`.

Thin by design: the event is an `ExecutorInvocation` dict, the answer an `ExecutorResponse`
dict (see lambdas/shared/models.py); all the work is in the `Engine` of host/engine.py. On
Lambda the zygote starts during init (free-ish and outside the first request); elsewhere at
first invocation or when `warm_up()` is called. `shutdown()` kills every child (tests, the
local stack).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lambdas.executor.host import protections
from lambdas.executor.host.engine import Engine
from lambdas.executor.settings import ExecutorSettings

_engine: Engine | None = None
_engine_lock = threading.Lock()


def _get_engine() -> Engine:
    global _engine
    engine = _engine
    if engine is None:
        with _engine_lock:
            if _engine is None:
                settings = ExecutorSettings()
                if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
                    # The runtime process is ours alone on Lambda.
                    settings = settings.model_copy(update={"LCI_OWN_PROCESS": True})
                _engine = Engine(settings)
            engine = _engine
    return engine


# Kept back from the Lambda deadline to kill the worker and answer with a `timeout` result.
LAMBDA_DEADLINE_MARGIN_MS = 1500


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    budget_ms = None
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        budget_ms = max(int(remaining()) - LAMBDA_DEADLINE_MARGIN_MS, 100)
    return _get_engine().invoke(event, budget_ms)


def warm_up() -> bool:
    """Start the zygote now (data stack preloaded); True if this call started it."""
    return _get_engine().warm_up()


def shutdown() -> None:
    """Kill the zygote and every worker; the next invocation starts a fresh environment."""
    global _engine
    with _engine_lock:
        engine, _engine = _engine, None
    if engine is not None:
        engine.shutdown()


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    warm_up()
    protections.log_at_init(_get_engine().zygote_huge_pages)  # what holds in this environment
