"""The local stack's moto patch keeps DynamoDB transactions all-or-nothing while backing up
only the touched items (moto itself deep-copies the whole table per transaction)."""

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from lambdas.shared.storage import table_create_kwargs
from local import moto_tuning


@pytest.fixture
def table_client():
    moto_tuning.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**table_create_kwargs("t"))
        yield client


def _item(client, pk):
    return client.get_item(TableName="t", Key={"pk": {"S": pk}, "sk": {"S": "M"}}).get("Item")


def _put(pk, value, condition=None):
    op = {"TableName": "t", "Item": {"pk": {"S": pk}, "sk": {"S": "M"}, "v": {"N": value}}}
    if condition:
        op["ConditionExpression"] = condition
    return {"Put": op}


def _update(pk, value):
    return {
        "Update": {
            "TableName": "t",
            "Key": {"pk": {"S": pk}, "sk": {"S": "M"}},
            "UpdateExpression": "SET v = :v",
            "ExpressionAttributeValues": {":v": {"N": value}},
        }
    }


def test_a_cancelled_transaction_changes_nothing(table_client):
    table_client.put_item(**{k: v for k, v in _put("a", "1")["Put"].items()})
    table_client.put_item(**{k: v for k, v in _put("b", "1")["Put"].items()})
    with pytest.raises(ClientError) as caught:
        table_client.transact_write_items(
            TransactItems=[
                _update("a", "2"),  # applied first by moto, then rolled back
                _put("new", "9"),
                _put("b", "3", condition="attribute_not_exists(pk)"),  # fails
            ]
        )
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _item(table_client, "a")["v"] == {"N": "1"}
    assert _item(table_client, "b")["v"] == {"N": "1"}
    assert _item(table_client, "new") is None


def test_a_successful_transaction_applies_every_write(table_client):
    table_client.put_item(**{k: v for k, v in _put("a", "1")["Put"].items()})
    table_client.transact_write_items(TransactItems=[_update("a", "5"), _put("c", "7")])
    assert _item(table_client, "a")["v"] == {"N": "5"}
    assert _item(table_client, "c")["v"] == {"N": "7"}
