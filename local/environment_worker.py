"""One executor environment: `python -m local.environment_worker`, started by the pool.

The local stand-in for a Lambda execution environment of one tenant. It isolates itself (see
`local.isolation`), drops to its pool uid, imports and warms the real executor handler, then
serves invocations over a private pipe protocol: one JSON line in (`{"event": ...,
"timeout_ms": ...}`), one JSON line out (`{"ok": true, "payload": ...}` or `{"ok": false,
"error": ...}`). The first line out is `{"ready": true, ...}`. fd 0/1 are re-pointed at
/dev/null and stderr before any user code can run, so nothing can write into the protocol by
printing.

Environment variables (set by the pool): LCI_ENV_TMP (private dir), LCI_ENV_UID/LCI_ENV_GID
(drop to these when root), LCI_ENV_PRIVATE_MOUNTS=1 (enter a mount namespace),
LCI_ENV_NEEDED_PATHS (os.pathsep-separated paths that must stay reachable).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
FUNCTION_NAME = "lci-executor-local"


def _take_protocol_fds() -> tuple[BinaryIO, BinaryIO]:
    requests = os.fdopen(os.dup(0), "rb")
    responses = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return requests, responses


def _isolate() -> dict[str, Any]:
    """Mount namespace, private temp dirs, privilege drop. Returns what was achieved."""
    from local import isolation

    private_tmp = Path(os.environ["LCI_ENV_TMP"])
    needed = [Path(p) for p in os.environ.get("LCI_ENV_NEEDED_PATHS", "").split(os.pathsep) if p]
    achieved = {"private_tmp": False, "uid": os.geteuid()}
    if os.environ.get("LCI_ENV_PRIVATE_MOUNTS") == "1":
        achieved["private_tmp"] = isolation.enter_private_mounts(private_tmp, needed)
    scratch = Path("/tmp") if achieved["private_tmp"] else private_tmp
    for name, sub in (("HOME", ""), ("MPLCONFIGDIR", ".matplotlib"), ("IPYTHONDIR", ".ipython")):
        path = scratch / sub if sub else scratch
        path.mkdir(exist_ok=True)
        os.environ[name] = str(path)
    os.environ["TMPDIR"] = str(scratch)
    os.environ["LCI_TMP_ROOT"] = str(scratch)  # the executor's scratch root (its settings)
    import tempfile

    tempfile.tempdir = None
    uid, gid = os.environ.get("LCI_ENV_UID"), os.environ.get("LCI_ENV_GID")
    if uid and gid and os.geteuid() == 0:
        for path in (scratch / ".matplotlib", scratch / ".ipython"):
            os.chown(path, int(uid), int(gid))
        os.chown(scratch, int(uid), int(gid))
        isolation.drop_privileges(int(uid), int(gid))
        achieved["uid"] = os.geteuid()
    os.umask(0o077)
    os.chdir(scratch)
    return achieved


def _watch_parent(parent_pid: int) -> None:
    # Reset by the uid change, so set here: if the stack dies, we get SIGTERM and clean up.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # Orphans of anything below (even if the executor's zygote dies) stay in this process's
    # tree, which is what the pool kills: it never kills by uid (local/isolation.py).
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if os.getppid() != parent_pid:
        raise SystemExit(0)


def main() -> int:
    parent_pid = os.getppid()
    requests, responses = _take_protocol_fds()
    achieved = _isolate()
    _watch_parent(parent_pid)

    from lambdas.executor import handler as executor  # type: ignore[attr-defined]
    from local.context import LocalLambdaContext

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        started = time.monotonic()
        executor.warm_up()
        ready = {"ready": True, "pid": os.getpid(), **achieved}
        ready["warm_up_ms"] = int((time.monotonic() - started) * 1000)
        _send(responses, ready)
        for line in requests:
            _send(responses, _serve(executor, LocalLambdaContext, line))
    finally:
        with contextlib.suppress(Exception):
            executor.shutdown()
    return 0


def _serve(executor: Any, context_class: Any, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        event = request["event"]
        context = context_class(
            FUNCTION_NAME,
            timeout_ms=int(request.get("timeout_ms", 900_000)),
            memory_mb=int(request.get("memory_mb", 0)),
            request_id=str(event.get("execution_id", "")),
            tenant_id=str(event.get("tenant_id", "")),
        )
        started = time.perf_counter()
        payload = executor.handler(event, context)
        handler_ms = round((time.perf_counter() - started) * 1000, 3)
        return {"ok": True, "payload": payload, "handler_ms": handler_ms}
    except Exception as exc:
        # Like a Lambda function error: only the type goes back (no user data in messages).
        return {"ok": False, "error": type(exc).__name__}


def _send(stream: BinaryIO, document: dict[str, Any]) -> None:
    stream.write(json.dumps(document, separators=(",", ":")).encode() + b"\n")
    stream.flush()


if __name__ == "__main__":
    sys.exit(main())
