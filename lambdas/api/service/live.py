"""Live execution, the API's side: the channel every invocation carries, the output so far of a
running execution, and interrupt requests.

The executor's trusted parent publishes a running cell's output as chunks under
`executions/<id>/out/` through the presigned POST of the invocation's `LiveChannel`, and polls
`executions/<id>/interrupt` through its presigned GET (lambdas/executor/host/live.py); the chunk
format is lambdas/shared/live.py's. `GET /v1/executions/{id}` of a running execution lists the
newest chunks (their names sort newest first), reads the newest base and the deltas after it,
and shows what they hold with the caps of a finished result. An interrupt request writes the
marker; the parent answers it with SIGINT within a poll interval.
"""

from __future__ import annotations

import contextlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from lambdas.api.errors import ExecutionFinished, ExecutionNotFound
from lambdas.api.models import InterruptAccepted
from lambdas.api.ports import BlobStore
from lambdas.api.service.common import Deps, execution_output_prefix, interrupt_key, iso
from lambdas.shared import limits, live
from lambdas.shared.models import ExecutionResult, ExecutionUsage, LiveChannel, PresignedPost

logger = logging.getLogger(__name__)

# The channel serves the whole run: transfers before the cell (up to 120 s), the cell, saving
# after it (up to 120 s, lambdas/executor/host/channel.py) and the last chunk.
_CHANNEL_EXPIRY_MARGIN_S = 300
# A listing this long holds the newest base (one in every LIVE_BASE_EVERY chunks).
_LISTED_CHUNKS = 2 * limits.LIVE_BASE_EVERY


def live_channel(blobs: BlobStore, execution_id: str, timeout_ms: int) -> LiveChannel:
    """The invocation's channel: a POST policy for the run's chunk prefix only, and a GET of its
    interrupt marker. Neither reaches anything else, nor the sandboxed worker."""
    expires_in = timeout_ms // 1000 + _CHANNEL_EXPIRY_MARGIN_S
    output: PresignedPost = blobs.presigned_post(
        key_prefix=execution_output_prefix(execution_id),
        max_bytes=limits.MAX_LIVE_CHUNK_BYTES,
        expires_in=expires_in,
    )
    return LiveChannel(
        output=output,
        interrupt_url=blobs.presigned_get(interrupt_key(execution_id), expires_in),
    )


def _fitted_view(chunks: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The chunks folded with a finished result's caps, or with smaller ones (rich outputs
    first, then the streams' heads) until the answer fits `API_RESPONSE_BUDGET_BYTES` as API
    Gateway's proxy encodes it (JSON text inside JSON: escapes count twice)."""
    stream_cap, display_cap = limits.MAX_STREAM_BYTES, limits.MAX_LIVE_DISPLAY_BYTES
    while True:
        folded, usage = live.fold(chunks, stream_cap=stream_cap, display_cap=display_cap)
        fields = folded.fields()
        if stream_cap <= 1024 or _proxy_size(fields) <= limits.API_RESPONSE_BUDGET_BYTES:
            return fields, usage
        if display_cap:
            display_cap = 0
        else:
            stream_cap //= 2  # a cut stream says so: `*_truncated`


def _proxy_size(fields: dict[str, Any]) -> int:
    texts = [fields["stdout"], fields["stderr"]] + [
        str(output.get("text", "")) for output in fields["outputs"]
    ]
    rough = sum(len(text) for text in texts)
    # JSON escapes a character to at most 6, and the proxy's encoding doubles that again.
    if rough * 12 + limits.MAX_LIVE_DISPLAY_BYTES * 2 < limits.API_RESPONSE_BUDGET_BYTES:
        return rough
    return len(json.dumps(json.dumps(fields)))


class LiveService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        # The chunks of one view are read side by side (at most LIVE_BASE_EVERY of them).
        self._io = ThreadPoolExecutor(
            max_workers=limits.LIVE_BASE_EVERY, thread_name_prefix="lci-live"
        )

    def with_output_so_far(self, result: ExecutionResult) -> ExecutionResult:
        """A running execution's result with what it printed and displayed so far (unchanged
        when nothing was published yet or the chunks cannot be read)."""
        blobs = self._deps.blobs
        prefix = execution_output_prefix(result.execution_id)
        try:
            keys = blobs.list_keys(prefix, _LISTED_CHUNKS)
            names = live.chunks_to_read([key[len(prefix) :] for key in keys])
            documents = list(self._io.map(lambda name: self._read(prefix + name), names))
        except Exception:
            logger.exception("reading the output of execution %s failed", result.execution_id)
            return result
        chunks = [document for document in documents if document is not None]
        if not chunks or len(chunks) < len(documents):
            return result
        update, usage = _fitted_view(chunks)
        with contextlib.suppress(ValidationError):
            update["usage"] = ExecutionUsage.model_validate(usage or {})
        return result.model_copy(update=update)

    def _read(self, key: str) -> dict[str, Any] | None:
        return live.decode_chunk(self._deps.blobs.get_bytes(key))

    def interrupt(self, principal: str, execution_id: str) -> InterruptAccepted:
        """Ask a running execution to stop (its cell gets KeyboardInterrupt and ends as
        `interrupted`, its session's state kept). ExecutionNotFound for a missing or foreign
        one, ExecutionFinished once it is over."""
        record = self._deps.table.get_execution(execution_id)
        if not record or record.principal != principal:
            raise ExecutionNotFound()
        now = self._deps.now()
        if not record.is_running() or record.is_lost(now):
            raise ExecutionFinished()
        self._deps.blobs.put_bytes(
            interrupt_key(execution_id), json.dumps({"requested_at": iso(now)}).encode()
        )
        return InterruptAccepted(execution_id=execution_id, session_id=record.session_id)
