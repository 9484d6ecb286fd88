"""S3 adapter: presigned POST/GET and the few direct object operations the API needs.

Key layout (built only by `lambdas/api/service/common.py`): `sessions/{id}/files/{path}`,
`sessions/{id}/state/{version}.pkl`, `sessions/{id}/notebook/…`, `executions/{id}/…`.
State blobs are opaque bytes here: this module never reads them, let alone unpickles them.
Presigned URLs name the bucket's regional virtual-hosted endpoint,
`https://<bucket>.s3.<region>.amazonaws.com/...` (also in us-east-1): S3's global host answers
400 in Regions opened after March 2019, redirects young buckets elsewhere (a 307 that breaks the
signature and CORS), and the executor's VPC gateway endpoint serves only its own Region.
`S3_ENDPOINT_URL` overrides it (the local stack's verifying S3 front, `local/s3_front.py`, on
127.0.0.1, path-style).
"""

from __future__ import annotations

from typing import Any

from lambdas.api.domain import StoredObject
from lambdas.shared.models import PresignedPost

_FILENAME_PLACEHOLDER = "${filename}"


class S3BlobStore:
    def __init__(self, bucket: str, endpoint_url: str = "") -> None:
        import boto3  # lazy: keeps the handler module cheap to import
        from botocore.config import Config

        s3_config: Any = (
            {"addressing_style": "path"}
            if endpoint_url
            else {"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"}
        )
        self._bucket = bucket
        from lambdas.api.adapters.unreachable import translate_unreachable

        self._client = translate_unreachable(
            boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                config=Config(signature_version="s3v4", s3=s3_config),
            )
        )

    # --- presigning ---------------------------------------------------------------------------

    def presigned_post(
        self,
        *,
        key_prefix: str,
        max_bytes: int,
        expires_in: int,
        exact_key: str | None = None,
    ) -> PresignedPost:
        """A POST policy pinning `content-length-range` 0..max_bytes and the key.

        exact_key: the policy allows only that key. Otherwise it allows any key starting with
        `key_prefix` and the uploader supplies `key` itself.
        """
        conditions: list[Any] = [["content-length-range", 0, max_bytes]]
        key = exact_key or f"{key_prefix}{_FILENAME_PLACEHOLDER}"
        post = self._client.generate_presigned_post(
            Bucket=self._bucket, Key=key, Conditions=conditions, ExpiresIn=expires_in
        )
        fields = {k: str(v) for k, v in post["fields"].items()}
        if exact_key is None:
            fields.pop("key", None)
        return PresignedPost(
            url=post["url"], fields=fields, key_prefix=exact_key or key_prefix, max_bytes=max_bytes
        )

    def presigned_get(self, key: str, expires_in: int) -> str:
        return str(
            self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_in
            )
        )

    # --- objects ------------------------------------------------------------------------------

    def list_objects(self, prefix: str) -> list[StoredObject]:
        paginator = self._client.get_paginator("list_objects_v2")
        found: list[StoredObject] = []
        for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found.append(
                    StoredObject(
                        key=obj["Key"],
                        size=int(obj["Size"]),
                        etag=str(obj.get("ETag", "")).strip('"'),
                        last_modified=obj.get("LastModified"),
                    )
                )
        return found

    def list_keys(self, prefix: str, limit: int) -> list[str]:
        """The first `limit` keys under `prefix`, in key order, with one request."""
        page = self._client.list_objects_v2(Bucket=self._bucket, Prefix=prefix, MaxKeys=limit)
        return [str(obj["Key"]) for obj in page.get("Contents", [])]

    def copy(self, source_key: str, target_key: str) -> None:
        """A server-side copy within the bucket (CopyObject: up to 5 GB, more than any state
        snapshot or session file may be)."""
        self._client.copy_object(
            Bucket=self._bucket,
            Key=target_key,
            CopySource={"Bucket": self._bucket, "Key": source_key},
        )

    def count_objects(self, prefix: str, stop_at: int) -> int:
        """How many objects are under `prefix`, counting no further than `stop_at`.

        Pages with `MaxKeys` no larger than what is still missing, so a cap check never lists
        more keys than the cap.
        """
        counted = 0
        token: str | None = None
        while counted < stop_at:
            request: dict[str, Any] = {
                "Bucket": self._bucket,
                "Prefix": prefix,
                "MaxKeys": min(1000, stop_at - counted),
            }
            if token:
                request["ContinuationToken"] = token
            page = self._client.list_objects_v2(**request)
            counted += int(page.get("KeyCount", len(page.get("Contents", []))))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
        return min(counted, stop_at)

    def head(self, key: str) -> StoredObject | None:
        try:
            meta = self._client.head_object(Bucket=self._bucket, Key=key)
        except self._client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return StoredObject(
            key=key,
            size=int(meta["ContentLength"]),
            etag=str(meta.get("ETag", "")).strip('"'),
            last_modified=meta.get("LastModified"),
        )

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self._client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)

    def get_bytes(self, key: str) -> bytes:
        return bytes(self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read())

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self._bucket, Key=key)

    def delete_prefix(self, prefix: str, page_size: int = 1000) -> int:
        """Delete every object under `prefix`, one page (≤ 1000 keys) per DeleteObjects."""
        deleted = 0
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self._bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
        )
        for page in pages:
            keys: list[Any] = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                self._client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": keys, "Quiet": True}
                )
                deleted += len(keys)
        return deleted
