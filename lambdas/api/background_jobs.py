"""Background jobs: this function invoked asynchronously by itself (`adapters/background.py`,
`LambdaBackground`) with `{"lci_background": {"execution_id": ...}}` runs the stored job."""

from __future__ import annotations

from typing import Any

from lambdas.api import container
from lambdas.api.adapters.background import BACKGROUND_EVENT_KEY


def is_background_event(event: Any) -> bool:
    return isinstance(event, dict) and BACKGROUND_EVENT_KEY in event


def handle(event: dict[str, Any]) -> dict[str, Any]:
    execution_id = str(event[BACKGROUND_EVENT_KEY].get("execution_id", ""))
    result = container.services().executions.run_stored_job(execution_id)
    return {"execution_id": execution_id, "ran": result is not None}
