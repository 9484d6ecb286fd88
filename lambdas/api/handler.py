"""API function entry: one Lambda handler for its three event sources.

- API Gateway REST proxy events: the HTTP API (`lambdas/api/http/`);
- `{"lci_background": ...}`: a run continued after the sync window (`background_jobs.py`);
- the table's DynamoDB stream (`{"Records": [...]}`): purge removed sessions
  (`session_stream.py`).
"""

from __future__ import annotations

import os
from typing import Any

from lambdas.api import background_jobs, session_stream
from lambdas.api.http import app as http

# X-Ray matters only on Lambda; importing its SDK costs ~0.3 s, so the local stack skips it.
_ON_LAMBDA = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if background_jobs.is_background_event(event):
        return background_jobs.handle(event)
    if session_stream.is_stream_event(event):
        return session_stream.handle(event)
    return http.handle(event, context)


def _traced(entry: Any) -> Any:
    if not _ON_LAMBDA:
        return entry
    from aws_lambda_powertools import Tracer

    # A response holds user output and presigned URLs signed with the role's session token:
    # traces keep timings only (the function's environment says the same for any other capture).
    return Tracer().capture_lambda_handler(entry, capture_response=False)


handler = _traced(_handle)
