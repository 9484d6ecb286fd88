"""The Lambda background runner claims a stored job once, wherever the job is kept."""

from __future__ import annotations

import pytest

from lambdas.api.adapters.dynamodb import DynamoTable
from lambdas.api.domain import ExecutionRecord, JsonDocument
from lambdas.shared.models import ExecutionStatus
from tests.functional.conftest import TABLE


def _running(execution_id: str, job: JsonDocument) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id,
        principal="p",
        status=ExecutionStatus.RUNNING,
        created_at="2026-11-30T00:00:00Z",
        ttl=2_000_000_000,
        lost_after=2_000_000_000,
        job=job,
    )


@pytest.mark.parametrize(
    "job",
    [
        JsonDocument(text='{"code": "print(1)"}'),
        # A job over the item-size threshold lives in S3 (a one-shot run with inline files can
        # reach it): the record then holds only its key, and must still be claimable.
        JsonDocument(s3_key="executions/e1/job.json"),
    ],
    ids=["inline", "in-s3"],
)
def test_a_stored_job_is_claimed_exactly_once(aws: None, job: JsonDocument) -> None:
    table = DynamoTable(TABLE, None)
    table.create_execution(_running("e1", job))
    assert table.claim_job("e1") is True
    assert table.claim_job("e1") is False  # a duplicate asynchronous delivery
