"""A light stand-in for `local.environment_worker` (same pipe protocol, no executor): answers
each invocation with its own pid and the tenants it has served, so pool tests can see which
process served what (and, when it dropped to a pool uid, which uid). Code "crash" kills it
mid-call; "wait:PATH" blocks until PATH exists; "big:N" pads the response with N bytes."""

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    served: list[str] = []
    identity = {}
    uid, gid = os.environ.get("LCI_ENV_UID"), os.environ.get("LCI_ENV_GID")
    if uid and gid and os.geteuid() == 0:  # as the real worker does (local.isolation)
        os.setgroups([])
        os.setresgid(int(gid), int(gid), int(gid))
        os.setresuid(int(uid), int(uid), int(uid))
        identity = {"uid": os.getuid()}
    sys.stdout.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        event = json.loads(line)["event"]
        if event["code"] == "crash":
            os._exit(3)
        if event["code"].startswith("wait:"):  # block until the test creates this file
            release = Path(event["code"].split(":", 1)[1])
            deadline = time.monotonic() + 120
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        padding = ""
        if event["code"].startswith("big:"):  # a response of about that many bytes
            padding = "x" * int(event["code"].split(":", 1)[1])
        if event["tenant_id"] not in served:
            served.append(event["tenant_id"])
        result = {
            "execution_id": event["execution_id"],
            "session_id": event.get("session_id"),
            "status": "ok",
            "success": True,
            "stdout": json.dumps({"pid": os.getpid(), "served": served, **identity}),
            "stderr": padding,
        }
        sys.stdout.write(json.dumps({"ok": True, "payload": {"result": result}}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
