"""HTTP adapter for presigned S3 URLs, used by the sandboxed worker only (stdlib urllib).

The worker does the transfers itself so the trusted parent never holds state bytes (SPEC
invariant 3) and never needs network access for them; the URLs only allow this session's keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

# urllib.request, secrets and hashlib are imported where they are used: a new environment's
# zygote can fork its first worker ~18 ms sooner, and it preloads them right after
# (sandbox/zygote.py).

_CHUNK = 1 << 20
HTTP_TIMEOUT_SECONDS = 120


class TransferError(Exception):
    """A presigned download or upload failed."""


def download(url: str, max_bytes: int) -> bytearray:
    """The whole object as a (writable) bytearray, read in place without extra copies."""
    import urllib.request

    request = urllib.request.Request(url, method="GET")  # noqa: S310 - presigned http(s) URL
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
            length = response.headers.get("Content-Length")
            if length is not None and int(length) > max_bytes:
                raise TransferError(f"download exceeds {max_bytes} bytes")
            if length is not None:
                data = bytearray(int(length))
                view = memoryview(data)
                filled = 0
                while filled < len(data):
                    count = response.readinto(view[filled:])
                    if not count:
                        raise TransferError("download ended early")
                    filled += count
                return data
            data = bytearray(response.read(max_bytes + 1))
    except TransferError:
        raise
    except Exception as exc:
        raise TransferError(f"download failed: {type(exc).__name__}") from exc
    if len(data) > max_bytes:
        raise TransferError(f"download exceeds {max_bytes} bytes")
    return data


def download_to_file(url: str, target: str, max_bytes: int) -> int:
    import urllib.request

    request = urllib.request.Request(url, method="GET")  # noqa: S310
    written = 0
    try:
        with (
            urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response,  # noqa: S310
            open(target, "wb") as handle,
        ):
            while chunk := response.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise TransferError(f"download exceeds {max_bytes} bytes")
                handle.write(chunk)
    except TransferError:
        raise
    except Exception as exc:
        raise TransferError(f"download failed: {type(exc).__name__}") from exc
    return written


Content = bytes | int | list[memoryview | bytes]  # bytes, an open fd, or chunks to stream


def _multipart(
    fields: dict[str, str], content: Content, size: int, content_type: str, digests: list[Any]
) -> tuple[str, int, Iterator[bytes | memoryview]]:
    """multipart/form-data body for an S3 POST: policy fields first, the file last (fed to
    each of `digests` too as it goes out)."""
    import secrets

    boundary = "lci" + secrets.token_hex(16)
    head = bytearray()
    for name, value in fields.items():
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes | memoryview]:
        if isinstance(content, bytes):
            yield content
        elif isinstance(content, list):
            for chunk in content:
                yield memoryview(chunk).cast("B")
        else:
            while chunk := os.read(content, _CHUNK):
                yield chunk

    def body() -> Iterator[bytes | memoryview]:
        yield bytes(head)
        for chunk in chunks():
            for digest in digests:
                digest.update(chunk)
            yield chunk
        yield tail

    return boundary, len(head) + size + len(tail), body()


def upload(
    post: dict[str, Any],
    key: str,
    content: Content,
    size: int,
    content_type: str,
    checksum: bool = False,
    timeout: float = HTTP_TIMEOUT_SECONDS,
    observer: Any = None,
) -> str | None:
    """POST `content` (`size` bytes) under `key` with a presigned POST.

    checksum: return the stored object's ETag, S3's own if it answers one, else the MD5 of
    what was sent (S3's ETag of a single-part upload with S3-managed keys). A wrong guess costs
    one download later, never a stale file (lambdas/executor/sandbox/workspace.py SyncedFiles).
    observer: a hash fed `content` as it is sent (the worker's snapshot digest).
    """
    import hashlib
    import urllib.request

    fields = dict(post["fields"])
    fields["key"] = key
    # A policy that pins the content type wins over the guessed one.
    content_type = fields.get("Content-Type") or fields.get("content-type") or content_type
    digest = hashlib.md5(usedforsecurity=False) if checksum else None
    digests = [hasher for hasher in (digest, observer) if hasher is not None]
    boundary, length, body = _multipart(fields, content, size, content_type, digests)
    request = urllib.request.Request(  # noqa: S310 - presigned http(s) URL
        post["url"],
        data=cast("Iterator[bytes]", body),  # http.client sends memoryviews as they are
        method="POST",
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(length),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
            answered_etag = response.headers.get("ETag")
    except Exception as exc:
        raise TransferError(f"upload failed: {type(exc).__name__}") from exc
    if status >= 300:
        raise TransferError(f"upload failed: HTTP {status}")
    if digest is None:
        return None
    return str(answered_etag).strip('"') if answered_etag else digest.hexdigest()
