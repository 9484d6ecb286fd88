"""AWS behaviours the API relies on that moto does not reproduce, emulated around the real
adapters (issue 12): DynamoDB's ClientRequestToken idempotency."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from lambdas.api import container
from tests.functional.conftest import TABLE, ApiClient, FakeExecutor

FAST = {"timeout_ms": 2000}


class StrictTransactionTokens:
    """DynamoDB's rule for `ClientRequestToken` (moto ignores it): a token names one
    transaction for 10 minutes after its first request completed (cancelled or not); the same
    token with other items is IdempotentParameterMismatchException, with the same items a
    no-op."""

    def __init__(self, client: Any) -> None:
        self._send = client.transact_write_items
        self._client = client
        self.calls: list[tuple[str, str]] = []
        self._seen: dict[str, str] = {}

    def __call__(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        token = kwargs.get("ClientRequestToken", "")
        items = json.dumps(kwargs["TransactItems"], sort_keys=True, default=str)
        self.calls.append((token, items))
        if token and token in self._seen:
            if self._seen[token] != items:
                raise ClientError(
                    {
                        "Error": {
                            "Code": "IdempotentParameterMismatchException",
                            "Message": "token reused with different parameters",
                        }
                    },
                    "TransactWriteItems",
                )
            return {}
        try:
            return self._send(**kwargs)
        finally:
            if token:
                self._seen[token] = items


@pytest.fixture
def strict_tokens(api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> StrictTransactionTokens:
    client = container.services().deps.table._client  # type: ignore[attr-defined]
    strict = StrictTransactionTokens(client)
    monkeypatch.setattr(client, "transact_write_items", strict)
    return strict


def test_each_commit_attempt_of_other_items_has_its_own_transaction_token(
    api: ApiClient, fake_executor: FakeExecutor, strict_tokens: StrictTransactionTokens
) -> None:
    """A run whose lease was taken over falls back to writing its record alone: another
    transaction, so another token (the first one's would be refused for 10 minutes)."""
    sid = api.new_session()
    table = boto3.resource("dynamodb").Table(TABLE)
    normal = fake_executor.behaviour

    def lease_taken_over(invocation: Any) -> Any:
        table.update_item(
            Key={"pk": f"SESSION#{sid}", "sk": "META"},
            UpdateExpression="SET lease_id = :other",
            ExpressionAttributeValues={":other": "someone-else"},
        )
        fake_executor.behaviour = normal
        return fake_executor.invoke(invocation)

    fake_executor.behaviour = lease_taken_over
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "late", **FAST})
    assert response.status == 200, response.text
    result = response.json()
    assert any("lease expired" in warning for warning in result["warnings"])
    stored = api.get(f"/v1/executions/{result['execution_id']}")
    assert stored.status == 200 and stored.json()["stdout"] == "ran: late\n"
    tokens = [token for token, _ in strict_tokens.calls]
    assert len(tokens) == 2 and len(set(tokens)) == 2, tokens
    assert all(1 <= len(token) <= 36 for token in tokens)


def test_a_retried_commit_of_the_same_items_reuses_its_token(
    api: ApiClient, fake_executor: FakeExecutor, strict_tokens: StrictTransactionTokens
) -> None:
    """A retry after a lost response must be the same transaction: DynamoDB then answers
    success without writing twice."""
    from botocore.exceptions import ClientError

    sends = {"n": 0}
    strict = strict_tokens

    def lose_first_response(**kwargs: Any) -> Any:
        response = strict(**kwargs)
        sends["n"] += 1
        if sends["n"] == 1:  # written, but the answer is lost on the way back
            raise ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "lost"}},
                "TransactWriteItems",
            )
        return response

    client = container.services().deps.table._client  # type: ignore[attr-defined]
    client.transact_write_items = lose_first_response
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "once", **FAST})
    assert response.status == 200 and response.json()["execution_count"] == 1
    assert len(strict.calls) == 2 and strict.calls[0] == strict.calls[1]
