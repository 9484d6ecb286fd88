"""Which of the executor's protections actually hold where it runs (SPEC invariant 4).

Nobody can tell from here what a Lambda execution environment allows, so the executor checks
itself: each check does what the protection relies on, from a child process as user code
would, and reports whether it worked. On Lambda the report is written once at init, as one
JSON line on stderr (`{"lci_protections": ...}`: Lambda's log level may hide INFO records, and
stdout is the protocol channel of `serve.py`); a diagnostics invocation returns it (the API's
`GET /v1/diagnostics`, `lci doctor`).

Each check is `ok: true` (holds), `false` (does not) or `null` (not applicable here):
- non_dumpable: a child cannot read this process's /proc/<pid>/environ (PR_SET_DUMPABLE 0);
- rlimits: a child can lower every rlimit the worker sets, and the address-space one stops an
  allocation past it;
- process_group_kill: SIGKILL to a process group takes a grandchild with it;
- pidfd: pidfd_open works (the parent then sees a worker die at once);
- huge_pages: transparent huge pages are available and the zygote's heap got some;
- runtime_api_isolated: a child cannot connect to the Lambda Runtime API (AWS_LAMBDA_RUNTIME_API).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from lambdas.shared import limits

PR_GET_DUMPABLE = 3
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
PROBE_TIMEOUT_SECONDS = 10.0
# What the probe child sets: the rlimits a worker sets (sandbox/worker.py), at small values.
PROBE_ADDRESS_SPACE_BYTES = 512 * 1024 * 1024
PROBE_RLIMITS = {
    "RLIMIT_AS": PROBE_ADDRESS_SPACE_BYTES,
    "RLIMIT_FSIZE": 1024 * 1024,
    "RLIMIT_NOFILE": limits.DEFAULT_OPEN_FILES_LIMIT,
    "RLIMIT_CORE": 0,
    "RLIMIT_NPROC": 4096,
    "RLIMIT_CPU": limits.DEFAULT_CPU_LIMIT_SECONDS,
}

# Run in a child (`python -I -c`), as user code would be: what can it see and do?
_PROBE = r"""
import json, os, resource, socket, sys
spec = json.loads(sys.argv[1])
out = {"uid": os.getuid()}
try:
    with open("/proc/%d/environ" % os.getppid(), "rb") as handle:
        handle.read(1)
    out["parent_environ_readable"] = True
except OSError as exc:
    out["parent_environ_readable"] = False
address = spec.get("runtime_api")
if address:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
        out["runtime_api_reachable"] = True
    except (OSError, ValueError) as exc:
        out["runtime_api_reachable"] = False
        out["runtime_api_error"] = type(exc).__name__
failed = []
for name, value in spec["rlimits"].items():
    which = getattr(resource, name)
    try:
        resource.setrlimit(which, (value, value))
        if resource.getrlimit(which) != (value, value):
            failed.append(name)
    except (ValueError, OSError):
        failed.append(name)
out["rlimits_failed"] = failed
try:
    block = bytearray(2 * spec["rlimits"]["RLIMIT_AS"])
    out["address_space_capped"] = False
except MemoryError:
    out["address_space_capped"] = True
print(json.dumps(out), flush=True)
"""
# A process-group leader whose child (a grandchild of ours) must die with the group.
_GROUP = (
    "import subprocess, sys, time\n"
    "member = subprocess.Popen([sys.executable, '-I', '-c', 'import time; time.sleep(60)'])\n"
    "print(member.pid, flush=True)\n"
    "time.sleep(60)\n"
)

_lock = threading.Lock()
_report: dict[str, Any] | None = None


def report(zygote_huge_pages: int | None = None) -> dict[str, Any]:
    """The checks, run once per process (protections do not change while it lives); only the
    huge pages one follows the zygote, which may have started since."""
    global _report
    with _lock:
        if _report is None:
            _report = check(zygote_huge_pages)
        ok, detail = _huge_pages(zygote_huge_pages)
        checks = {**_report["checks"], "huge_pages": {"ok": ok, "detail": detail}}
        return {**_report, "checks": checks}


def log_at_init(zygote_huge_pages: int | None = None) -> None:
    """One structured line with the report, on stderr (see the module docstring)."""
    line = json.dumps({"lci_protections": report(zygote_huge_pages)}, separators=(",", ":"))
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def check(zygote_huge_pages: int | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    probe, probe_error = _probe()
    checks = {
        "non_dumpable": _non_dumpable(probe, probe_error),
        "rlimits": _rlimits(probe, probe_error),
        "process_group_kill": _guarded(_process_group_kill),
        "pidfd": _guarded(_pidfd),
        "huge_pages": _huge_pages(zygote_huge_pages),
        "runtime_api_isolated": _runtime_api(probe, probe_error),
    }
    return {
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
        "on_lambda": bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")),
        "uid": os.getuid(),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "checked_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_ms": int((time.perf_counter() - started) * 1000),
    }


Check = tuple[bool | None, str]


def _guarded(run: Any) -> Check:
    try:
        result: Check = run()
    except Exception as exc:  # a check that cannot run says so; it never breaks the executor
        return False, f"could not check: {type(exc).__name__}: {exc}"[:300]
    return result


def _probe() -> tuple[dict[str, Any], str]:
    spec = {"rlimits": PROBE_RLIMITS, "runtime_api": os.environ.get("AWS_LAMBDA_RUNTIME_API")}
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            check=False,
        )
        return json.loads(done.stdout.strip().splitlines()[-1]), ""
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {}, f"the probe process failed: {type(exc).__name__}"


def _non_dumpable(probe: dict[str, Any], error: str) -> Check:
    flag = ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    if error:
        return False, error
    if probe["parent_environ_readable"]:
        why = " (uid 0 reads it anyway)" if probe.get("uid") == 0 else ""
        return False, f"a child can read this process's environment{why}; dumpable={flag}"
    return True, f"a child cannot read this process's /proc environ; dumpable={flag}"


def _rlimits(probe: dict[str, Any], error: str) -> Check:
    if error:
        return False, error
    failed = probe["rlimits_failed"]
    if failed:
        return False, f"could not set {', '.join(failed)}"
    if not probe["address_space_capped"]:
        return False, "RLIMIT_AS was set but an allocation past it succeeded"
    note = " (RLIMIT_NPROC does not bind uid 0)" if probe.get("uid") == 0 else ""
    return True, f"{', '.join(PROBE_RLIMITS)} set; RLIMIT_AS stops an allocation{note}"


def _runtime_api(probe: dict[str, Any], error: str) -> Check:
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        return None, "not on Lambda (AWS_LAMBDA_RUNTIME_API is not set)"
    if error:
        return False, error
    if probe.get("runtime_api_reachable"):
        return False, (
            f"a child process can connect to the Runtime API at {address}: user code can talk "
            "to this environment's own Runtime API (tenant isolation keeps other tenants out)"
        )
    return True, f"a child cannot connect to {address} ({probe.get('runtime_api_error')})"


def _process_group_kill() -> Check:
    leader = subprocess.Popen(
        [sys.executable, "-I", "-c", _GROUP],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert leader.stdout is not None
    member = 0
    try:
        ready, _, _ = select.select([leader.stdout], [], [], PROBE_TIMEOUT_SECONDS)
        if ready:
            member = int(leader.stdout.readline() or 0)
        os.killpg(leader.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(OSError):
            leader.kill()
        leader.wait(PROBE_TIMEOUT_SECONDS)
        leader.stdout.close()
    if member <= 0:
        return False, "the group's member did not start"
    deadline = time.monotonic() + 2.0
    while _alive(member) and time.monotonic() < deadline:
        time.sleep(0.01)
    if _alive(member):
        with contextlib.suppress(OSError):
            os.kill(member, signal.SIGKILL)
        return False, "SIGKILL to the process group left its member running"
    return True, "SIGKILL to a process group took its member with it"


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie); reaps it if it is our zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def _pidfd() -> Check:
    child = subprocess.Popen([sys.executable, "-I", "-c", "pass"])
    try:
        pid_fd = os.pidfd_open(child.pid)
    except (OSError, AttributeError) as exc:
        child.wait(PROBE_TIMEOUT_SECONDS)
        return False, f"pidfd_open failed ({type(exc).__name__}): deaths show as socket EOF only"
    try:
        exited = bool(select.select([pid_fd], [], [], PROBE_TIMEOUT_SECONDS)[0])
    finally:
        os.close(pid_fd)
        child.wait(PROBE_TIMEOUT_SECONDS)
    if not exited:
        return False, "a pidfd did not report its process's exit"
    return True, "pidfd_open works and reports a child's exit"


def _huge_pages(zygote_huge_pages: int | None) -> Check:
    try:
        with open(THP_ENABLED) as handle:
            setting = handle.read().strip()
    except OSError:
        return False, f"{THP_ENABLED} is not readable: no transparent huge pages"
    mode = setting.split("[", 1)[-1].split("]", 1)[0] if "[" in setting else setting
    if mode == "never":
        return False, "transparent huge pages are off (never)"
    if zygote_huge_pages is None:
        return True, f"transparent huge pages: {mode} (no zygote started yet)"
    if zygote_huge_pages == 0:
        return False, f"transparent huge pages: {mode}, but the zygote's heap got none"
    return True, f"transparent huge pages: {mode}; the zygote's heap is in {zygote_huge_pages}"
