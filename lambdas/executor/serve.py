"""Run one executor environment as a process that speaks JSON lines on stdin/stdout.

`python -m lambdas.executor.serve` reads one request per line and answers one line each:
`{"op": "invoke", "event": {...}}` -> the handler's response; `{"op": "info"}` -> pids of this
process, the zygote and the live workers; `{"op": "shutdown"}` -> stops everything and exits.
Used by the security tests (run as an unprivileged user) and usable by a local stack that keeps
one long-lived process per tenant.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from lambdas.executor import handler


def _info() -> dict[str, Any]:
    engine = handler._get_engine()
    return {
        "pid": os.getpid(),
        "zygote_pid": engine.zygote_pid,
        "worker_pids": engine.worker_pids(),
        "environment_pids": engine.environment_pids(),
    }


def main() -> None:
    os.environ["LCI_OWN_PROCESS"] = "1"  # this process exists only for the environment
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.get("op")
        except (ValueError, AttributeError):
            op = None
            request = {}
        if op == "invoke":
            reply: Any = handler.handler(request.get("event"), None)
        elif op == "info":
            reply = _info()
        elif op == "warm_up":
            reply = {"started": handler.warm_up()}
        elif op == "shutdown":
            handler.shutdown()
            out.write(json.dumps({"stopped": True}) + "\n")
            out.flush()
            return
        else:
            reply = {"error": {"code": "INVALID_REQUEST", "message": "unknown request"}}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    handler.shutdown()


if __name__ == "__main__":
    main()
