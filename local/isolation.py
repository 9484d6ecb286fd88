"""OS-level isolation of executor environments: what Lambda's microVMs give, approximated.

Started as root, each environment gets its own unprivileged uid from a pool (system users
`lci-env-N`, created when missing; a bare uid range when `useradd` is unavailable), a private
temp directory (mode 0700, owned by that uid) and, when the kernel allows a mount namespace,
a private `/tmp` and a `/root` that shows only what the interpreter needs. Two environments can
then neither read each other's files nor signal each other's processes. Started as a normal user
none of that is possible; `describe_gaps` says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

USER_PREFIX = "lci-env-"
# Identities are looked for among lci-env-0 .. lci-env-(limit-1) on the whole machine.
UID_INDEX_LIMIT = 4096
FALLBACK_UID_BASE = 64_000  # uids without passwd entries when useradd is unavailable
_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_FREEZE_ROUNDS = 20  # rounds of stopping newly found descendants before the kill


@dataclass(frozen=True)
class Identity:
    """Who an environment runs as. uid/gid None: the stack's own user (no uid isolation)."""

    uid: int | None
    gid: int | None
    name: str


@dataclass(frozen=True)
class IsolationMode:
    run_as_pool_uids: bool
    private_mounts: bool

    @property
    def full(self) -> bool:
        return self.run_as_pool_uids and self.private_mounts


def detect_mode(paths_needed: list[Path]) -> IsolationMode:
    """What this process can give environments."""
    if os.geteuid() != 0:
        return IsolationMode(run_as_pool_uids=False, private_mounts=False)
    mounts = probe_private_mounts()
    # Without a mount namespace, a pool uid must be able to reach the interpreter and the code.
    reachable = mounts or not any(blocked_ancestors(path) for path in paths_needed)
    return IsolationMode(run_as_pool_uids=reachable, private_mounts=mounts)


def describe_gaps(mode: IsolationMode) -> list[str]:
    """Human sentences: which protections the local stack cannot give in this mode."""
    gaps: list[str] = []
    if not mode.run_as_pool_uids:
        who = "your user" if os.geteuid() != 0 else "root (the interpreter is not reachable)"
        gaps.append(
            f"environments all run as {who}: code in one environment can signal another's "
            "processes and read files that are not mode 0700"
        )
    gaps.append(
        "moto accepts unsigned requests: code in an environment that finds the local S3/DynamoDB "
        "port can read other sessions' stored data (on AWS the executor has no credentials)"
    )
    if not mode.private_mounts:
        gaps.append(
            "no mount namespace: /tmp is shared between environments (each still gets a "
            "private 0700 TMPDIR and HOME)"
        )
    return gaps


def probe_private_mounts() -> bool:
    """Can a child create a private mount namespace? (needs root / CAP_SYS_ADMIN)"""
    code = (
        "import ctypes,sys;libc=ctypes.CDLL(None,use_errno=True);"
        f"sys.exit(0 if libc.unshare({_CLONE_NEWNS})==0 and "
        f"libc.mount(None,b'/',None,{_MS_REC | _MS_PRIVATE},None)==0 else 1)"
    )
    try:
        return subprocess.run([sys.executable, "-I", "-c", code], timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def blocked_ancestors(path: Path) -> list[Path]:
    """Directories on the way to `path` that other users may not traverse (no o+x)."""
    blocked: list[Path] = []
    current = Path("/")
    for part in path.resolve().parts[1:]:
        try:
            mode = current.stat().st_mode
        except OSError:
            break
        if not mode & stat.S_IXOTH:
            blocked.append(current)
        current = current / part
    return blocked


# -- inside the environment process (before dropping privileges) ----------------------------


def enter_private_mounts(private_tmp: Path, paths_needed: list[Path]) -> bool:
    """New mount namespace: `private_tmp` becomes /tmp (unless needed code lives under /tmp;
    returns whether it did); directories others cannot traverse (e.g. /root holding the
    interpreter) are replaced by a tmpfs that shows only the needed subtrees. Raises OSError
    when the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)

    def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None):
        if libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"mount {target}: {os.strerror(errno)}")

    if libc.unshare(_CLONE_NEWNS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare: {os.strerror(errno)}")
    mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
    needed = [p.resolve() for p in paths_needed]
    # Top-down: once a blocked directory is replaced, re-check (a needed child may be blocked too).
    for _ in range(16):
        blocked = sorted(
            {b for p in needed for b in blocked_ancestors(p)}, key=lambda b: len(b.parts)
        )
        if not blocked:
            break
        directory = blocked[0]
        children = sorted(
            {p.relative_to(directory).parts[0] for p in needed if directory in p.parents}
        )
        handles = {name: os.open(directory / name, os.O_PATH) for name in children}
        mount("tmpfs", str(directory), "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
        for name, handle in handles.items():
            target = directory / name
            if stat.S_ISDIR(os.fstat(handle).st_mode):
                target.mkdir()
            else:
                target.touch()
            mount(f"/proc/self/fd/{handle}", str(target), None, _MS_BIND | _MS_REC, None)
            os.close(handle)
    if any(Path("/tmp") in p.parents or p == Path("/tmp") for p in needed):
        return False
    mount(str(private_tmp), "/tmp", None, _MS_BIND | _MS_REC, None)
    return True


def _b(value: str | None) -> bytes | None:
    return value.encode() if value is not None else None


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


# -- in the stack: the uid pool and cleanup -------------------------------------------------


class UidPool:
    """Unprivileged identities for environments, owned by this stack while it holds them.

    Every stack on the machine numbers its identities `lci-env-0`, `lci-env-1`, ...; an index is
    this stack's only while it holds an exclusive `flock` on `<lock_dir>/lci-env-N.lock` (the
    kernel drops the lock when the holder dies, so a crashed stack frees its uids). An index
    held by another stack, or whose uid still runs a process nobody holds a lock for (a stack
    without these locks, or an escaped process), is skipped. Releasing an identity never kills
    by uid: the environment's own process tree was killed by its owner (`kill_process_tree`).
    """

    def __init__(self, size: int, lock_dir: Path | None = None) -> None:
        self._size = size
        self._lock_dir = lock_dir or default_uid_lock_dir()
        self._lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._held: dict[int, int] = {}  # index -> fd of its held lock file
        self._reported_busy: set[int] = set()  # indexes whose skip was logged once
        self._lock = threading.Lock()
        self._use_useradd = shutil.which("useradd") is not None

    def acquire(self) -> Identity:
        with self._lock:
            if len(self._held) >= self._size:
                raise RuntimeError("no free environment identity")
            for index in range(UID_INDEX_LIMIT):
                if index in self._held:
                    continue
                fd = self._try_lock(index)
                if fd is None:
                    continue
                try:
                    identity = self._identity(index)
                except Exception:
                    os.close(fd)
                    raise
                if identity.uid is not None and uid_has_processes(identity.uid):
                    if index not in self._reported_busy:
                        self._reported_busy.add(index)
                        logger.warning("skipping %s: its uid still runs processes", identity.name)
                    os.close(fd)
                    continue
                self._held[index] = fd
                return identity
        raise RuntimeError("no free environment identity on this machine")

    def release(self, identity: Identity) -> None:
        index = int(identity.name.removeprefix(USER_PREFIX))
        with self._lock:
            fd = self._held.pop(index, None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    def close(self) -> None:
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for fd in held:
            os.close(fd)

    def _try_lock(self, index: int) -> int | None:
        path = self._lock_dir / f"{USER_PREFIX}{index}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def _identity(self, index: int) -> Identity:
        name = f"{USER_PREFIX}{index}"
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return Identity(entry.pw_uid, entry.pw_gid, name)
        if self._use_useradd:
            result = subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ],
                capture_output=True,
                timeout=60,
            )
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return Identity(entry.pw_uid, entry.pw_gid, name)
            if result.returncode not in (0, 9):  # 9: exists (a concurrent creator won)
                self._use_useradd = False
        uid = FALLBACK_UID_BASE + index
        return Identity(uid, uid, name)


def default_uid_lock_dir() -> Path:
    """Where stacks lock their identities: shared by every stack of the machine (root only)."""
    run = Path("/run")
    if os.access(run, os.W_OK):
        return run / "lci-local" / "uids"
    return Path(tempfile.gettempdir()) / "lci-local-uids"


def uid_has_processes(uid: int) -> bool:
    """Does any process run as `uid`? (read only: whose processes they are is unknown)"""
    return any(_owner(pid) == uid for pid in _pids())


def kill_process_tree(root_pid: int) -> int:
    """SIGKILL `root_pid` and every descendant, and nothing else.

    The tree is frozen first (SIGSTOP, repeated until no new descendant appears: a stopped
    process can neither fork nor reap), then killed, so no child escapes by forking during the
    kill. Orphans stay in the tree because the environment worker and the executor's zygote are
    child subreapers (local/environment_worker.py, lambdas/executor/host/procs.py).
    """
    frozen: list[int] = []
    for _ in range(_FREEZE_ROUNDS):
        tree = [root_pid, *_descendants(root_pid)]
        new = [pid for pid in tree if pid not in frozen]
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root_pid, signal.SIGKILL)
    killed = 0
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:
        return []


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def make_private_dir(path: Path, identity: Identity) -> Path:
    """A fresh 0700 directory owned by the environment's identity."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    if identity.uid is not None and os.geteuid() == 0:
        os.chown(path, identity.uid, identity.gid if identity.gid is not None else identity.uid)
    os.chmod(path, 0o700)
    return path
