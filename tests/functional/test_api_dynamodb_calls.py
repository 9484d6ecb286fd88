"""Issue 16: a warm run in a session costs at most 2 DynamoDB requests on its critical path
(the acquire transaction and the commit transaction), counted with the local stack's hook
(`local/aws_calls.py`). The quota check reads through its cache (0 requests when warm)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.aws_calls import AwsCallCounter
from tests.functional.conftest import ApiClient, FakeExecutor

FAST = {"timeout_ms": 1000}
WARM_RUNS = 5
MAX_DYNAMODB_CALLS_PER_RUN = 2


@pytest.fixture
def dynamodb_calls(api: ApiClient) -> Iterator[AwsCallCounter]:
    import boto3

    counter = AwsCallCounter("dynamodb")
    events = boto3._get_default_session().events
    counter.attach(events)
    yield counter
    counter.detach(events)


def test_a_warm_session_run_makes_at_most_two_dynamodb_requests(
    api: ApiClient, fake_executor: FakeExecutor, dynamodb_calls: AwsCallCounter
) -> None:
    sid = api.new_session()
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "warm-up", **FAST}).status == 200
    before = dynamodb_calls.total()
    for index in range(WARM_RUNS):
        response = api.post(f"/v1/sessions/{sid}/execute", {"code": f"run {index}", **FAST})
        assert response.status == 200 and response.json()["status"] == "ok"
    per_run = (dynamodb_calls.total() - before) / WARM_RUNS
    assert per_run <= MAX_DYNAMODB_CALLS_PER_RUN, dynamodb_calls.counts()
