"""Session files: presigned POST (policy checked on the policy itself, since moto does not
enforce it), listing, presigned GET, deletion, path validation, ownership, session cleanup."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest
import requests

from lambdas.api import container
from lambdas.api.settings import ApiSettings
from lambdas.shared import limits
from tests.functional.conftest import BUCKET, TABLE, ApiClient, FakeExecutor

MAX_UPLOAD = 100 * 1024 * 1024


def _policy(fields: dict[str, str]) -> dict[str, Any]:
    return json.loads(base64.b64decode(fields["policy"]))


def _upload(api: ApiClient, sid: str, path: str, content: bytes) -> dict[str, Any]:
    response = api.post(f"/v1/sessions/{sid}/files", {"path": path, "size": len(content)})
    assert response.status == 200, response.text
    form = response.json()
    posted = requests.post(
        form["upload"]["url"], data=form["upload"]["fields"], files={"file": content}, timeout=30
    )
    assert posted.status_code in (200, 201, 204), posted.text
    return dict(form)


def test_presigned_post_policy_pins_size_and_key(api: ApiClient) -> None:
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/files", {"path": "data/in.csv"})
    assert response.status == 200
    form = response.json()
    assert form["path"] == "data/in.csv" and form["max_bytes"] == MAX_UPLOAD
    assert form["expires_at"].endswith("Z")
    fields = form["upload"]["fields"]
    assert fields["key"] == f"sessions/{sid}/files/data/in.csv"
    conditions = _policy(fields)["conditions"]
    assert ["content-length-range", 0, MAX_UPLOAD] in conditions
    assert {"key": f"sessions/{sid}/files/data/in.csv"} in conditions  # that key, no other
    assert "expiration" in _policy(fields)

    sized = api.post(f"/v1/sessions/{sid}/files", {"path": "small.txt", "size": 10}).json()
    assert ["content-length-range", 0, 10] in _policy(sized["upload"]["fields"])["conditions"]
    assert sized["max_bytes"] == 10


def test_upload_list_download_delete(api: ApiClient) -> None:
    sid = api.new_session()
    _upload(api, sid, "data/in.csv", b"a,b\n1,2\n")
    _upload(api, sid, "notes.txt", b"hello")

    listing = api.get(f"/v1/sessions/{sid}/files")
    assert listing.status == 200
    files = {f["path"]: f for f in listing.json()["files"]}
    assert set(files) == {"data/in.csv", "notes.txt"}
    assert files["data/in.csv"]["size"] == 8 and files["data/in.csv"]["modified_at"]
    assert requests.get(files["notes.txt"]["download_url"], timeout=30).content == b"hello"

    one = api.get(f"/v1/sessions/{sid}/files/data/in.csv")
    assert one.status == 200
    assert one.json()["path"] == "data/in.csv" and one.json()["size"] == 8
    assert requests.get(one.json()["download_url"], timeout=30).content == b"a,b\n1,2\n"

    assert api.delete(f"/v1/sessions/{sid}/files/data/in.csv").status == 204
    gone = api.get(f"/v1/sessions/{sid}/files/data/in.csv")
    assert gone.status == 404 and gone.error_code == "FILE_NOT_FOUND"
    assert api.delete(f"/v1/sessions/{sid}/files/data/in.csv").error_code == "FILE_NOT_FOUND"
    assert [f["path"] for f in api.get(f"/v1/sessions/{sid}/files").json()["files"]] == [
        "notes.txt"
    ]


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "/abs.txt", "a/../../b", "a\x00b", "", "dir/", "x" * 600, "a\\b", "."],
)
@pytest.mark.attack(
    "presigned URLs",
    "upload paths with `..`, absolute, NUL, backslashes, too long, naming no file",
    "400 `INVALID_PATH`: no form outside the session's prefix",
)
def test_invalid_paths_are_400(api: ApiClient, path: str) -> None:
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/files", {"path": path})
    assert response.status == 400 and response.error_code == "INVALID_PATH"


def test_invalid_path_in_url_is_400(api: ApiClient) -> None:
    sid = api.new_session()
    for method in ("GET", "DELETE"):
        response = api.request(method, f"/v1/sessions/{sid}/files/a/../../other/x")
        assert response.status == 400 and response.error_code == "INVALID_PATH"


def test_paths_are_normalized(api: ApiClient) -> None:
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/files", {"path": "a//b/./c.txt"})
    assert response.status == 200 and response.json()["path"] == "a/b/c.txt"


def test_upload_over_the_limit_is_413(api: ApiClient) -> None:
    container.override(
        settings=ApiSettings(TABLE_NAME=TABLE, BUCKET_NAME=BUCKET, MAX_UPLOAD_BYTES=1000)
    )
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/files", {"path": "big.bin", "size": 1001})
    assert response.status == 413 and response.error_code == "PAYLOAD_TOO_LARGE"
    ok = api.post(f"/v1/sessions/{sid}/files", {"path": "big.bin"})
    assert ["content-length-range", 0, 1000] in _policy(ok.json()["upload"]["fields"])["conditions"]


@pytest.mark.attack(
    "tenant isolation",
    "another API key lists, reads, deletes or uploads a session's files",
    "404 `SESSION_NOT_FOUND`",
)
def test_other_principal_gets_404_for_files(api: ApiClient, other_api: ApiClient) -> None:
    sid = api.new_session()
    _upload(api, sid, "secret.txt", b"mine")
    for response in (
        other_api.get(f"/v1/sessions/{sid}/files"),
        other_api.get(f"/v1/sessions/{sid}/files/secret.txt"),
        other_api.delete(f"/v1/sessions/{sid}/files/secret.txt"),
        other_api.post(f"/v1/sessions/{sid}/files", {"path": "x.txt"}),
    ):
        assert response.status == 404 and response.error_code == "SESSION_NOT_FOUND"
    assert api.get(f"/v1/sessions/{sid}/files/secret.txt").status == 200


def test_deleting_a_session_deletes_all_its_objects(api: ApiClient) -> None:
    sid = api.new_session()
    keep = api.new_session()
    s3 = boto3.client("s3")
    for i in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"sessions/{sid}/files/f{i}.txt", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key=f"sessions/{sid}/state/1.pkl", Body=b"opaque")
    s3.put_object(Bucket=BUCKET, Key=f"sessions/{keep}/files/k.txt", Body=b"k")
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "1", "timeout_ms": 1000}).status == 200

    assert api.delete(f"/v1/sessions/{sid}").status == 204
    left = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"sessions/{sid}/")
    assert left.get("KeyCount", 0) == 0
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"sessions/{keep}/")["KeyCount"] == 1
    table = boto3.resource("dynamodb").Table(TABLE)
    items = table.query(
        KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"SESSION#{sid}"}
    )["Items"]
    assert items == []
    assert api.get(f"/v1/sessions/{sid}/files").status == 404


def test_prefix_deletion_walks_every_page(api: ApiClient) -> None:
    from lambdas.api.adapters.s3 import S3BlobStore

    s3 = boto3.client("s3")
    for i in range(7):
        s3.put_object(Bucket=BUCKET, Key=f"sessions/s1/files/{i}", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="sessions/s10/files/keep", Body=b"x")
    assert S3BlobStore(BUCKET).delete_prefix("sessions/s1/", page_size=2) == 7
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="sessions/")["Contents"]]
    assert keys == ["sessions/s10/files/keep"]


def test_expired_session_objects_are_purged_from_the_table_stream(api: ApiClient) -> None:
    from lambdas.api.handler import handler

    sid = api.new_session()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key=f"sessions/{sid}/files/a.txt", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key=f"sessions/{sid}/state/1.pkl", Body=b"opaque")
    table = boto3.resource("dynamodb").Table(TABLE)
    table.delete_item(Key={"pk": f"SESSION#{sid}", "sk": "META"})  # what TTL expiry does
    stream_event = {
        "Records": [
            {
                "eventID": "1",
                "eventName": "REMOVE",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "Keys": {"pk": {"S": f"SESSION#{sid}"}, "sk": {"S": "META"}},
                    "SequenceNumber": "111",
                    "StreamViewType": "KEYS_ONLY",
                },
                "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
            },
            {
                "eventID": "2",
                "eventName": "REMOVE",
                "eventSource": "aws:dynamodb",
                "dynamodb": {"Keys": {"pk": {"S": "EXECUTION#e1"}, "sk": {"S": "META"}}},
            },
        ]
    }
    assert handler(stream_event, None) == {"purged": 1}
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"sessions/{sid}/").get("KeyCount", 0) == 0


def test_a_full_session_refuses_new_paths_until_a_file_is_deleted(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_FILES_PER_SESSION", 3)
    sid = api.new_session()
    for name in ("a.txt", "b.txt", "c.txt"):
        _upload(api, sid, name, b"x")

    refused = api.post(f"/v1/sessions/{sid}/files", {"path": "d.txt"})
    assert refused.status == 409 and refused.error_code == "TOO_MANY_FILES"
    error = refused.json()["error"]
    assert "3" in error["message"] and "delete" in error["message"]
    assert error["details"] == {"max_files": 3}
    _upload(api, sid, "b.txt", b"replaced")  # replacing an existing path always fits

    assert api.delete(f"/v1/sessions/{sid}/files/a.txt").status == 204
    _upload(api, sid, "d.txt", b"y")
    paths = sorted(f["path"] for f in api.get(f"/v1/sessions/{sid}/files").json()["files"])
    assert paths == ["b.txt", "c.txt", "d.txt"]


def test_a_run_gets_at_most_the_file_cap_and_is_told_what_it_missed(
    api: ApiClient, fake_executor: FakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_FILES_PER_SESSION", 3)
    sid = api.new_session()
    _upload(api, sid, "f0.txt", b"x")
    s3 = boto3.client("s3")
    for i in range(1, 5):  # earlier runs wrote files past the cap
        s3.put_object(Bucket=BUCKET, Key=f"sessions/{sid}/files/f{i}.txt", Body=b"x")

    result = api.post(f"/v1/sessions/{sid}/execute", {"code": "1", "timeout_ms": 2000}).json()
    sent = [ref.path for ref in fake_executor.invocations[-1].files.files]
    assert sent == ["f0.txt", "f1.txt", "f2.txt"]
    assert any("not synced" in w and ": 2 " in w for w in result["warnings"])


def test_counting_files_stops_at_the_cap(api: ApiClient) -> None:
    from lambdas.api.adapters.s3 import S3BlobStore

    s3 = boto3.client("s3")
    for i in range(7):
        s3.put_object(Bucket=BUCKET, Key=f"sessions/s1/files/{i}", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="sessions/s10/files/other", Body=b"x")
    blobs = S3BlobStore(BUCKET)
    asked: list[int] = []
    blobs._client.meta.events.register(  # what each listing request asks for
        "before-parameter-build.s3.ListObjectsV2",
        lambda params, **_: asked.append(params["MaxKeys"]),
    )
    assert blobs.count_objects("sessions/s1/files/", stop_at=3) == 3
    assert asked == [3]  # one request, never more keys than the cap
    assert blobs.count_objects("sessions/s1/files/", stop_at=100) == 7
    assert blobs.count_objects("sessions/none/files/", stop_at=3) == 0
