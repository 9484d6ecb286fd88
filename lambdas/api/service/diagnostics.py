"""What a deployment really does: the executor reports which of its protections hold in its
execution environment (lambdas/executor/host/protections.py), invoked with the diagnostics flag
in the caller's own tenant (as its one-shot runs are); no code runs and nothing is counted."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

from lambdas.api.models import Diagnostics
from lambdas.api.service.common import Deps, new_id
from lambdas.shared import limits
from lambdas.shared.models import ExecutorInvocation


class DiagnosticsService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    def report(self, principal: str) -> Diagnostics:
        invocation = ExecutorInvocation(
            execution_id=new_id(), tenant_id=principal, code="", diagnostics=True
        )
        response = self._deps.executor.invoke(invocation)  # a throttle is a 429
        error = None
        if response.diagnostics is None:
            failure = response.result.error
            error = failure.value if failure else "the executor sent no report"
        return Diagnostics(
            executor=response.diagnostics, executor_error=error, api=self._api_facts()
        )

    def _api_facts(self) -> dict[str, str | int]:
        settings = self._deps.settings
        try:
            botocore = version("botocore")
        except PackageNotFoundError:
            botocore = "unknown"
        return {
            "stage": settings.STAGE,
            "region": os.environ.get("AWS_REGION", ""),
            "network_mode": settings.NETWORK_MODE,
            "sync_wait_ms": settings.SYNC_WAIT_MS,
            "max_timeout_ms": settings.MAX_TIMEOUT_MS,
            "response_budget_bytes": limits.API_RESPONSE_BUDGET_BYTES,
            "botocore": botocore,
        }
