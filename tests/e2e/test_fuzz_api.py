"""Fuzz the HTTP API of a started local stack with schemathesis, from its own
`/v1/openapi.json`: requests that fit the schema and requests that do not, every operation,
bounded (`EXAMPLES_PER_OPERATION` per operation and mode). What must hold for every one of
them: no 5xx, every 4xx in the `{"error": {"code", "message"}}` shape with no path of the
host, every 2xx a JSON document (or an empty 204).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from .conftest import TargetStack

pytestmark = pytest.mark.e2e

EXAMPLES_PER_OPERATION = 25
TIME_BUDGET_SECONDS = 120
HOST_PATH_MARKERS = ("/work/", "/root/", "/home/", "site-packages", 'File "/')


# The browser playground is the one operation whose success is not JSON: its page, script and
# stylesheet (lambdas/api/http/playground.py).
PAGE_OPERATION = "GET /"
PAGE_TYPES = ("text/html", "text/javascript", "text/css")


def check_response(response: requests.Response, label: str) -> None:
    status = response.status_code
    assert status < 500, f"{label}: {status} {response.text[:300]}"
    if status == 204 or response.request.method == "HEAD":
        return
    if label.endswith(f" {PAGE_OPERATION}") and status < 300:
        content_type = response.headers.get("content-type") or [""]  # schemathesis: a list
        assert str(content_type[0]).startswith(PAGE_TYPES), f"{label}: {content_type}"
        return
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(
            f"{label}: {status} body is not JSON: {response.text[:200]!r}"
        ) from None
    if status >= 400:
        assert isinstance(body, dict) and set(body) == {"error"}, f"{label}: {body}"
        error = body["error"]
        assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), body
        for marker in HOST_PATH_MARKERS:
            assert marker not in response.text, f"{label}: {response.text[:300]}"


# Deleting the session every other case uses would turn the rest into 404s.
KEEP = frozenset({"DELETE /v1/sessions/{session_id}"})


def _existing_ids(stack: TargetStack) -> dict[str, str]:
    """A session (with a file) and an execution of it, for path parameters."""
    from lci import Client

    with Client(stack.endpoint, stack.keys[0], timeout=120) as api:
        session = api.create_session(ttl_seconds=3600).session_id
        api.upload_file(session, b"a,b\n1,2\n", "data.csv")
        execution = api.execute("x = 1", session_id=session).execution_id
    return {"session_id": session, "execution_id": execution, "file_path": "data.csv"}


@dataclass
class Fuzzer:
    """Runs one operation's generated requests against the stack and tallies the answers."""

    endpoint: str
    headers: dict[str, str]
    existing: dict[str, str]
    http: requests.Session
    statuses: Counter[int] = field(default_factory=Counter)
    nothing_invalid: list[str] = field(default_factory=list)

    def run(self, operation: Any, mode: GenerationMode) -> None:
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,  # the same requests on every run: a failure reproduces
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), real_ids=st.booleans())
        def fuzz(case: schemathesis.Case, real_ids: bool) -> None:
            # Negative cases may drop the key; a missing key has its own tests
            # (test_robustness_api.py): here every request gets past it.
            case.headers = {**(case.headers or {}), **self.headers}
            # Random ids only ever meet a 404: half the cases use ids that exist.
            if real_ids and case.path_parameters and operation.label not in KEEP:
                for name, value in self.existing.items():
                    if name in case.path_parameters:
                        case.path_parameters[name] = value
            response = case.call(
                base_url=self.endpoint, session=self.http, headers=self.headers, timeout=60
            )
            self.statuses[response.status_code] += 1
            check_response(response, f"{mode} {operation.label}")

        try:
            fuzz()
        except Unsatisfiable:
            # Nothing about this operation can be invalid (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE, operation.label
            self.nothing_invalid.append(operation.label)


@pytest.mark.local_only
@pytest.mark.attack(
    "API edge",
    "schemathesis on every operation of `/v1/openapi.json`: requests that fit it and requests "
    "that do not",
    "no 5xx; every 4xx in the JSON error shape with no host path",
)
def test_schemathesis_finds_no_5xx_and_only_json_errors(local_stack: TargetStack) -> None:
    schema = schemathesis.openapi.from_url(f"{local_stack.endpoint}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14, [op.label for op in operations]
    started = time.monotonic()
    with requests.Session() as http:
        fuzzer = Fuzzer(
            local_stack.endpoint,
            {"x-api-key": local_stack.keys[0]},
            _existing_ids(local_stack),
            http,
        )
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzzer.run(operation, mode)
    elapsed = time.monotonic() - started
    statuses = fuzzer.statuses
    print(
        f"schemathesis: {sum(statuses.values())} requests, {len(operations)} operations, "
        f"{elapsed:.1f} s, statuses {dict(sorted(statuses.items()))}, "
        f"no invalid request possible: {fuzzer.nothing_invalid}"
    )
    assert sum(statuses.values()) >= len(operations) * 10
    assert not [status for status in statuses if status >= 500]
    assert elapsed < TIME_BUDGET_SECONDS, elapsed
