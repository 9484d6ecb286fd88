"""Executor environments of the local stack: the `ExecutorPort` adapter that stands in for
Lambda with tenant isolation.

Each invocation is routed by `tenant_id` (session id, or principal for one-shot runs) to a warm
environment process (`local.environment_worker`) that only ever serves that tenant. A tenant
may have up to `per_tenant` environments: a call that finds all of its tenant's environments
busy gets another one (Lambda scales a tenant out the same way) and waits only once that many
are busy. Environments are evicted when idle longer than `idle_seconds` or, least recently used
first, when the stack holds `max_environments`. An environment that crashes or overruns its
deadline is killed with its whole process tree and the call returns an executor error result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdas.shared.executor_responses import failed_response, parse_response
from lambdas.shared.models import ExecutorInvocation, ExecutorResponse
from local import isolation, lambda_limits
from local.isolation import Identity, IsolationMode, UidPool

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 60.0  # a cold environment imports the data stack; generous on a busy box
# Beyond the run's own timeout: package installs, state snapshot and file transfers.
CALL_MARGIN_SECONDS = 120.0
REAP_INTERVAL_SECONDS = 1.0
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class PoolSettings:
    max_environments: int = 32
    per_tenant: int = 2
    idle_seconds: float = 600.0
    tmp_root: Path = Path("/tmp/lci-local")
    acquire_timeout_seconds: float = 300.0
    spares: int = 1  # environments started ahead of demand, handed to new tenants
    worker_module: str = "local.environment_worker"  # tests substitute a light stand-in


class EnvironmentFailed(RuntimeError):
    pass


@dataclass(eq=False)
class Environment:
    tenant_id: str
    number: int
    identity: Identity
    tmp_dir: Path
    process: subprocess.Popen[bytes] | None = None
    busy: bool = True
    last_used: float = field(default_factory=time.monotonic)
    info: dict[str, Any] = field(default_factory=dict)
    destroyed: bool = False
    _buffer: bytearray = field(default_factory=bytearray)

    def start(self, mode: IsolationMode, timeout: float, worker_module: str) -> None:
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "USER": self.identity.name,
            "LOGNAME": self.identity.name,
            "HOME": str(self.tmp_dir),
            "TMPDIR": str(self.tmp_dir),
            "LCI_ENV_TMP": str(self.tmp_dir),
            "LCI_ENV_NEEDED_PATHS": os.pathsep.join(str(p) for p in needed_paths()),
        }
        if mode.private_mounts:
            env["LCI_ENV_PRIVATE_MOUNTS"] = "1"
        if self.identity.uid is not None:
            env["LCI_ENV_UID"] = str(self.identity.uid)
            env["LCI_ENV_GID"] = str(self.identity.gid)
        self.process = subprocess.Popen(
            [sys.executable, "-m", worker_module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the executor's own logs go to the stack's stderr
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,  # its own process group: killed as a whole
        )
        ready = self._read_line(time.monotonic() + timeout)
        if not ready.get("ready"):
            raise EnvironmentFailed("environment did not start")
        self.info = ready

    def call(self, event: dict[str, Any], timeout: float, memory_mb: int) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        request = {"event": event, "timeout_ms": int(timeout * 1000), "memory_mb": memory_mb}
        try:
            self.process.stdin.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise EnvironmentFailed("environment is gone") from exc
        return self._read_line(time.monotonic() + timeout)

    def _read_line(self, deadline: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        poller = select.poll()  # not select(): fds above 1023 are fine
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EnvironmentFailed("environment did not answer in time")
            if not poller.poll(remaining * 1000):
                continue
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                raise EnvironmentFailed(f"environment exited (code {self.process.poll()})")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return json.loads(line)

    def kill(self) -> None:
        """SIGKILL the environment and every process it started (even ones that left its
        process group), then reap it."""
        if self.process is None:
            return
        isolation.kill_process_tree(self.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()


def needed_paths() -> list[Path]:
    """What an environment's uid must be able to reach: interpreter, venv, code."""
    paths = {Path(sys.executable).resolve().parent, Path(sys.base_prefix).resolve()}
    paths.add(Path(sys.prefix).resolve())
    paths.add(REPO_ROOT)
    return sorted(paths)


class EnvironmentPool:
    """`ExecutorPort` for the local stack (see module docstring)."""

    def __init__(self, settings: PoolSettings, mode: IsolationMode) -> None:
        self.settings = settings
        self.mode = mode
        self._uids = UidPool(settings.max_environments + 1) if mode.run_as_pool_uids else None
        self._by_tenant: dict[str, list[Environment]] = {}
        self._spares: list[Environment] = []  # started, never served anyone
        self._spares_starting = 0
        self._waiting = 0  # callers waiting for an environment
        self._starting: list[Environment] = []  # spares being started (killed on close)
        self._cond = threading.Condition()
        self._counter = 0
        self._closed = False
        self.started_total = 0
        self.stack_dir = settings.tmp_root / f"stack-{os.getpid()}"
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        # Pool uids must traverse to their own private directories.
        os.chmod(settings.tmp_root, 0o711)  # noqa: S103 - traverse only, no listing
        os.chmod(self.stack_dir, 0o711)  # noqa: S103
        if mode.run_as_pool_uids and not mode.private_mounts:
            for blocked in isolation.blocked_ancestors(self.stack_dir):
                logger.warning("LCI_TMP_ROOT: pool uids cannot traverse %s", blocked)
        self._wake_spares = threading.Event()
        self._wake_spares.set()  # start the spares right away
        threading.Thread(target=self._reap_loop, name="lci-reaper", daemon=True).start()
        threading.Thread(target=self._spare_loop, name="lci-spares", daemon=True).start()

    # -- ExecutorPort ------------------------------------------------------------------------------

    def invoke(self, invocation: ExecutorInvocation) -> ExecutorResponse:
        lambda_limits.request_too_large(invocation)  # raises PayloadTooLarge, as the adapter
        try:
            environment = self._acquire(invocation.tenant_id)
        except EnvironmentFailed as exc:
            return failed_response(invocation, f"no executor environment could start ({exc})")
        timeout = invocation.timeout_ms / 1000 + CALL_MARGIN_SECONDS
        try:
            reply = environment.call(
                invocation.model_dump(mode="json"), timeout, invocation.limits.memory_mb
            )
        except (EnvironmentFailed, OSError, ValueError) as exc:
            logger.warning("environment %s failed: %s", environment.number, exc)
            self._discard(environment)
            return failed_response(
                invocation, "the executor environment crashed or timed out and was reset"
            )
        if not reply.get("ok"):
            error = str(reply.get("error", "Unhandled"))[:80]
            self._discard(environment)
            return failed_response(
                invocation, f"the executor environment crashed ({error}) and was reset"
            )
        self._release(environment)
        too_large = lambda_limits.response_too_large(invocation, reply.get("payload"))
        if too_large is not None:
            return too_large
        return parse_response(invocation, reply.get("payload"))

    # -- pool ------------------------------------------------------------------------------------

    def _acquire(self, tenant_id: str) -> Environment:
        deadline = time.monotonic() + self.settings.acquire_timeout_seconds
        with self._cond:
            while True:
                if self._closed:
                    raise EnvironmentFailed("the local stack is shutting down")
                environments = self._by_tenant.get(tenant_id, [])
                for environment in environments:
                    if not environment.busy:
                        environment.busy = True
                        return environment
                if len(environments) < self.settings.per_tenant:
                    if self._spares:
                        # A pre-started environment that never served anyone: the tenant's own
                        # from now on (tenant isolation holds), and no cold start on this path.
                        environment = self._spares.pop(0)
                        environment.tenant_id = tenant_id
                        environment.busy = True
                        self._by_tenant.setdefault(tenant_id, []).append(environment)
                        self._wake_spares.set()
                        return environment
                    if self._spares_starting == 0 and self._room_locked():
                        environment = self._reserve_locked(tenant_id)
                        break
                    # Spares are on their way: cold starts in parallel only slow each other.
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EnvironmentFailed("every environment is busy")
                self._waiting += 1
                self._wake_spares.set()
                try:
                    self._cond.wait(min(remaining, 1.0))
                finally:
                    self._waiting -= 1
        self._start(environment)
        self._wake_spares.set()
        return environment

    def _start(self, environment: Environment) -> None:
        try:
            environment.start(self.mode, START_TIMEOUT_SECONDS, self.settings.worker_module)
        except Exception as exc:
            self._discard(environment)
            raise EnvironmentFailed(str(exc)) from exc
        with self._cond:
            self.started_total += 1

    def _room_locked(self) -> bool:
        return self._total() < self.settings.max_environments or self._evict_lru_locked()

    def _reserve_locked(self, tenant_id: str | None) -> Environment:
        self._counter += 1
        identity = (
            self._uids.acquire() if self._uids else Identity(None, None, f"env-{self._counter}")
        )
        tmp_dir = isolation.make_private_dir(self.stack_dir / f"env-{self._counter}", identity)
        environment = Environment(tenant_id or "", self._counter, identity, tmp_dir)
        if tenant_id is not None:
            self._by_tenant.setdefault(tenant_id, []).append(environment)
        return environment

    def _spare_loop(self) -> None:
        """Keep `spares` environments started ahead of demand (never more than room allows)."""
        while not self._closed:
            self._wake_spares.wait(REAP_INTERVAL_SECONDS)
            self._wake_spares.clear()
            while True:
                with self._cond:
                    wanted = (
                        self.settings.spares
                        + min(self._waiting, 1)
                        - len(self._spares)
                        - self._spares_starting
                    )
                    if (
                        self._closed
                        or wanted <= 0
                        or self._total() >= self.settings.max_environments
                    ):
                        break
                    environment = self._reserve_locked(None)
                    self._spares_starting += 1
                    self._starting.append(environment)
                try:
                    environment.start(self.mode, START_TIMEOUT_SECONDS, self.settings.worker_module)
                except Exception as exc:
                    logger.warning("spare environment failed to start: %s", exc)
                    with self._cond:
                        self._spares_starting -= 1
                        self._starting.remove(environment)
                    self._destroy(environment)
                    break
                with self._cond:
                    self._spares_starting -= 1
                    self._starting.remove(environment)
                    self.started_total += 1
                    if self._closed:
                        stale = environment
                    else:
                        environment.busy = False
                        self._spares.append(environment)
                        self._cond.notify_all()
                        stale = None
                if stale is not None:
                    stale.kill()  # close() may have "destroyed" it before its process existed

    def _release(self, environment: Environment) -> None:
        with self._cond:
            environment.busy = False
            environment.last_used = time.monotonic()
            self._cond.notify_all()

    def _discard(self, environment: Environment) -> None:
        with self._cond:
            self._remove_locked(environment)
            self._cond.notify_all()
        self._destroy(environment)
        self._wake_spares.set()

    def _remove_locked(self, environment: Environment) -> None:
        if environment in self._spares:
            self._spares.remove(environment)
            return
        environments = self._by_tenant.get(environment.tenant_id, [])
        if environment in environments:
            environments.remove(environment)
        if not environments:
            self._by_tenant.pop(environment.tenant_id, None)

    def _destroy(self, environment: Environment) -> None:
        with self._cond:
            if environment.destroyed:
                return
            environment.destroyed = True
        environment.kill()
        if self._uids is not None:
            self._uids.release(environment.identity)
        shutil.rmtree(environment.tmp_dir, ignore_errors=True)

    def _total(self) -> int:
        assigned = sum(len(envs) for envs in self._by_tenant.values())
        return assigned + len(self._spares) + self._spares_starting

    def _evict_lru_locked(self) -> bool:
        idle = [e for envs in self._by_tenant.values() for e in envs if not e.busy]
        if not idle:
            return False
        victim = min(idle, key=lambda e: e.last_used)
        self._remove_locked(victim)
        # Killing takes a moment; do it off the caller's path.
        threading.Thread(target=self._destroy, args=(victim,), daemon=True).start()
        return True

    def _reap_loop(self) -> None:
        while not self._closed:
            time.sleep(REAP_INTERVAL_SECONDS)
            now = time.monotonic()
            with self._cond:
                expired = [
                    e
                    for envs in self._by_tenant.values()
                    for e in envs
                    if not e.busy and now - e.last_used > self.settings.idle_seconds
                ]
                for environment in expired:
                    self._remove_locked(environment)
            for environment in expired:
                self._destroy(environment)

    # -- introspection and shutdown ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "environments": self._total(),
                "tenants": len(self._by_tenant),
                "spares": len(self._spares),
                "busy": sum(e.busy for envs in self._by_tenant.values() for e in envs),
                "started_total": self.started_total,
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            everything = [e for envs in self._by_tenant.values() for e in envs]
            everything += self._spares + self._starting
            self._by_tenant.clear()
            self._spares = []
            self._cond.notify_all()
        self._wake_spares.set()
        for environment in everything:
            self._destroy(environment)
        if self._uids is not None:
            self._uids.close()
        shutil.rmtree(self.stack_dir, ignore_errors=True)
