"""The API function's logger and metrics (Powertools), shared by every event source."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

from lambdas.api.settings import ApiSettings

_DEFAULTS = ApiSettings.model_fields
logger = Logger(
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", _DEFAULTS["POWERTOOLS_SERVICE_NAME"].default)
)
metrics = Metrics(
    service=logger.service,
    namespace=os.environ.get(
        "POWERTOOLS_METRICS_NAMESPACE", _DEFAULTS["POWERTOOLS_METRICS_NAMESPACE"].default
    ),
)


def flush_metrics() -> None:
    if not metrics.metric_set:
        return
    try:
        metrics.flush_metrics()
    except Exception:  # metrics must never cost a user their response
        logger.warning("could not publish metrics", exc_info=True)
    finally:
        metrics.clear_metrics()  # also when disabled: Powertools would print them at 100
