"""Idempotency-Key handling: a key names one execution of one request for 24 h; a retry with
the same request replays it (202 while it runs), a different request under the key is a 400."""

from __future__ import annotations

import hashlib
import json

from lambdas.api.errors import InvalidRequest
from lambdas.api.models import ExecuteAccepted, ExecuteRequest
from lambdas.api.service.common import Deps
from lambdas.api.service.dispatch import ExecuteOutcome
from lambdas.api.service.records import ExecutionRecords
from lambdas.shared import limits
from lambdas.shared.models import ExecutionStatus


class Idempotency:
    def __init__(self, deps: Deps, records: ExecutionRecords) -> None:
        self._deps = deps
        self._records = records

    def hashes(
        self,
        principal: str,
        key: str | None,
        session_id: str | None,
        request: ExecuteRequest,
    ) -> tuple[str | None, str]:
        if key is None:
            return None, ""
        if not key or len(key) > limits.MAX_IDEMPOTENCY_KEY_LENGTH:
            raise InvalidRequest(
                f"Idempotency-Key must be 1..{limits.MAX_IDEMPOTENCY_KEY_LENGTH} characters"
            )
        key_hash = hashlib.sha256(key.encode()).hexdigest()
        canonical = json.dumps(
            # `wait` only changes how the answer is delivered: a retry may flip it.
            {
                "session_id": session_id,
                "request": request.model_dump(mode="json", exclude={"wait"}),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return key_hash, hashlib.sha256(canonical.encode()).hexdigest()

    def replay(self, principal: str, key_hash: str, request_hash: str) -> ExecuteOutcome | None:
        claim = self._deps.table.get_idempotency(principal, key_hash)
        if not claim or claim.ttl < self._deps.now():
            return None
        if claim.request_hash != request_hash:
            raise InvalidRequest(
                "this Idempotency-Key was already used with a different request",
                details={"reason": "idempotency_key_reused"},
            )
        record = self._deps.table.get_execution(claim.execution_id)
        if not record:
            return None
        result = self._records.result_of(record)
        if result.status == ExecutionStatus.RUNNING:
            return ExecuteOutcome(
                accepted=ExecuteAccepted(
                    execution_id=result.execution_id, session_id=result.session_id
                )
            )
        return ExecuteOutcome(result=result)
