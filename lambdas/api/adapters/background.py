"""Background adapters (the port is `lambdas/api/ports.py`'s `Background`): where a run keeps
going after the sync window closes.

`ThreadBackground` (local stack, tests) runs the job on a thread pool of this process; its
handle's `wait` is an Event wait. `LambdaBackground` invokes this very function asynchronously
with `{"lci_background": {"execution_id": ...}}` (the handler recognises that event and runs the
stored job); its handle polls the execution record with strongly consistent reads and backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
)

from lambdas.api.ports import BackgroundHandle, Poller, Runner
from lambdas.shared.models import ExecutionResult

BACKGROUND_EVENT_KEY = "lci_background"


class _ThreadHandle:
    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: ExecutionResult | None = None
        self._error: BaseException | None = None

    def finish(self, result: ExecutionResult | None, error: BaseException | None = None) -> None:
        self._result = result
        self._error = error
        self._done.set()

    def wait(self, timeout_s: float) -> ExecutionResult | None:
        """The result, None while the run goes on; what the run raised is raised here."""
        if not self._done.wait(max(0.0, timeout_s)):
            return None
        if self._error is not None:
            raise self._error
        return self._result


class ThreadBackground:
    runs_remotely = False

    def __init__(self, max_workers: int = 64) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lci-run")

    def submit(self, execution_id: str, run: Runner, poll: Poller) -> BackgroundHandle:
        handle = _ThreadHandle()

        def job() -> None:
            try:
                result = run()
            except BaseException as exc:  # the waiting caller raises it (e.g. a 429)
                handle.finish(None, exc)
                return
            handle.finish(result)

        self._pool.submit(job)
        return handle

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


# The record is polled 20 ms after the first read, then less and less often, at most 1 s apart.
_POLL_BACKOFF = wait_exponential(multiplier=0.02, exp_base=1.6, max=1.0)


class _PollingHandle:
    def __init__(self, poll: Poller, sleep: Callable[[float], None] = time.sleep) -> None:
        self._poll = poll
        self._sleep = sleep

    def wait(self, timeout_s: float) -> ExecutionResult | None:
        def until_next_poll(state: RetryCallState) -> float:
            # The last sleep is cut short: the final poll falls on the deadline.
            remaining = timeout_s - (state.seconds_since_start or 0.0)
            return min(_POLL_BACKOFF(state), max(0.0, remaining))

        polling = Retrying(
            retry=retry_if_result(lambda result: result is None),
            wait=until_next_poll,
            stop=stop_after_delay(timeout_s),
            sleep=self._sleep,
            retry_error_callback=lambda _: None,
        )
        result: ExecutionResult | None = polling(self._poll)
        return result


class LambdaBackground:
    runs_remotely = True

    def __init__(self, function_name: str) -> None:
        import boto3  # lazy: keeps the handler module cheap to import

        self._function_name = function_name
        self._client: Any = boto3.client("lambda")

    def submit(self, execution_id: str, run: Runner, poll: Poller) -> BackgroundHandle:
        import json

        self._client.invoke(
            FunctionName=self._function_name,
            InvocationType="Event",
            Payload=json.dumps({BACKGROUND_EVENT_KEY: {"execution_id": execution_id}}).encode(),
        )
        return _PollingHandle(poll)
