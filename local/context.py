"""A stand-in for the Lambda context object, for handlers called by the local stack."""

from __future__ import annotations

import time
import uuid


class LocalLambdaContext:
    function_version = "$LATEST"
    log_stream_name = "local"

    def __init__(
        self,
        function_name: str,
        timeout_ms: int,
        memory_mb: int = 1024,
        request_id: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.tenant_id = tenant_id
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
