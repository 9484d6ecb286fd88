"""The session worker: a child forked from the zygote that runs untrusted cells.

It applies the sandbox (rlimits, scrubbed environment, workspace as cwd) before its first
cell, restores the session snapshot when it does not hold the committed version, syncs the
session files, runs the cell with IPython semantics, then snapshots and uploads the namespace
and the changed files through presigned URLs. It only ever talks JSON frames to the parent.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import resource
import signal
import socket
from typing import Any, cast

from lambdas.executor import protocol
from lambdas.executor.sandbox import kernel, packages, snapshot, transfer, workspace
from lambdas.shared import limits

# Variables kept from the zygote's (already scrubbed) environment; everything else goes.
KEPT_ENV_VARS = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "MPLCONFIGDIR",
    "IPYTHONDIR",
    "MPLBACKEND",
    "OPENBLAS_NUM_THREADS",
)
MAX_REPORTED_VARIABLES = 500
INVOCATION_FRAME_BYTES = 16 * 1024 * 1024  # code + inline files (≤ 4 MiB base64) + URLs


def scrub_environment(home: str) -> None:
    kept = {name: os.environ[name] for name in KEPT_ENV_VARS if name in os.environ}
    os.environ.clear()
    os.environ.update(kept)
    os.environ["HOME"] = home


def _count_tasks_of_uid(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return count


def apply_rlimits(spec: dict[str, Any]) -> None:
    """Sandbox rlimits (SPEC invariant 4). Hard limits are lowered once and cannot come back."""
    memory = spec["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["file_size_bytes"], spec["file_size_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (spec["open_files"], spec["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    uid = os.getuid()
    if uid != 0:  # root is exempt from RLIMIT_NPROC anyway; counting costs a /proc scan
        allowed = _count_tasks_of_uid(uid) + spec["extra_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (allowed, allowed))


def reset_cpu_limit(cpu_seconds: int) -> None:
    """RLIMIT_CPU counts from process start: move the soft limit to `used + cpu_seconds`.
    The hard limit stays open so later cells can move it again; the wall clock is the backstop."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + cpu_seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _reap_children() -> None:
    """Collect zombies of processes the parent killed after the previous cell."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class PackageError(Exception):
    """A requested package could not be installed (the message is meant for the user)."""


class Worker:
    def __init__(
        self, sock: socket.socket, shell: Any, mirror: protocol.OutputMirror | None = None
    ) -> None:
        self.sock = sock
        self.shell = shell
        self.mirror = mirror
        self.one_shot = False  # set by the first run: a one-shot worker exits after it
        self.sandboxed = False
        self.in_cell = False
        self.workspace = ""
        self.package_cache = ""
        self.held_version: int | None = None
        self.file_etags: dict[str, str] = {}
        self.uploaded_prints: dict[str, workspace.Fingerprint] = {}
        self.memory_mb = limits.DEFAULT_MEMORY_LIMIT_MB
        self.package_warnings: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            try:
                request = protocol.recv_frame(self.sock, INVOCATION_FRAME_BYTES)
            except (protocol.ProtocolError, OSError):
                return
            if not isinstance(request, dict) or request.get("op") != "run":
                return  # only the trusted parent writes here
            reply = self.run(cast(protocol.RunRequest, request))
            protocol.send_frame(self.sock, reply)
            if self.one_shot:
                return

    def send_partial(self, signum: int, frame: Any) -> None:
        """SIGUSR1 from the parent when the cell's time is up: send what it printed so far,
        so a timed-out cell still shows its output (the parent kills the worker right after)."""
        if not self.in_cell:
            return
        capture = kernel.SINK.capture
        outputs = [
            dict(output, text="".join(output["text"]))
            if output["output_type"] == "stream" and isinstance(output["text"], list)
            else output
            for output in capture.outputs
        ]
        with contextlib.suppress(Exception):
            cell = protocol.Cell(
                status=protocol.CellStatus.TIMEOUT.value,
                stdout=capture.stream_text("stdout"),
                stderr=capture.stream_text("stderr"),
                stdout_truncated=capture.truncated["stdout"],
                stderr_truncated=capture.truncated["stderr"],
                result=None,
                outputs=outputs,
                error=None,
                warnings=capture.warnings,
            )
            protocol.send_frame(self.sock, protocol.PartialFrame(kind="partial", cell=cell))
        self.in_cell = False  # once is enough

    def _enter_sandbox(self, request: protocol.RunRequest) -> None:
        self.workspace = request["workspace"]
        self.package_cache = request["package_cache"]
        os.makedirs(self.workspace, mode=0o700, exist_ok=True)
        os.chdir(self.workspace)
        scrub_environment(self.workspace)
        inv = request["inv"]
        spec = inv["limits"]
        self.memory_mb = spec["memory_mb"]
        apply_rlimits(spec)
        wheelhouse = inv.get("wheelhouse") or {}
        try:
            packages.install_import_hook(
                wheelhouse_url=wheelhouse.get("index_url"),
                allow_pypi=bool(wheelhouse.get("allow_pypi")),
                cache_dir=self.package_cache,
                on_install=self.package_warnings.append,
            )
        except Exception as exc:
            self.package_warnings.append(f"on-demand imports are unavailable: {exc}")
        else:
            self.shell.package_installer = functools.partial(
                packages.install_requirements,
                wheelhouse_url=wheelhouse.get("index_url"),
                allow_pypi=bool(wheelhouse.get("allow_pypi")),
                cache_dir=self.package_cache,
            )
        self.sandboxed = True

    # -- one invocation ------------------------------------------------------------------------

    def run(self, request: protocol.RunRequest) -> protocol.ResultFrame:
        if self.mirror is not None:
            self.mirror.reset()  # the parent must never read an earlier run's output
        inv = request["inv"]
        if not self.sandboxed:
            self.one_shot = request["one_shot"]
            self._enter_sandbox(request)
        _reap_children()
        warnings: list[str] = []
        restored = False
        transferred = False
        try:
            restored, transferred = self._prepare(inv, warnings)
        except PackageError as exc:
            cell = protocol.failed_cell("PackageInstallError", str(exc))
            return self._final(cell, None, [], warnings)
        except (transfer.TransferError, workspace.UnsafePathError, ValueError, OSError) as exc:
            return self._final(
                protocol.failed_cell("PreparationFailed", str(exc)), None, [], warnings
            )
        if transferred:
            protocol.send_frame(self.sock, protocol.PhaseFrame(kind="phase", phase="run"))

        cell = self._run_cell(inv)
        state = inv.get("state") or {}
        files = inv.get("files") or {}
        wants_save = bool(state.get("upload")) or bool(files.get("upload"))
        if wants_save:
            protocol.send_frame(self.sock, protocol.SavingFrame(kind="saving", cell=cell))
        state_report = self._save_state(inv, warnings)
        if not self.one_shot:
            state_report = state_report or protocol.empty_state_report()
            state_report["variables"] = self._variables()
        output_files = self._collect_files(inv, warnings)
        return self._final(cell, state_report, output_files, warnings, restored, wants_save)

    def _final(
        self,
        cell: protocol.Cell,
        state_report: protocol.StateReport | None,
        files: list[protocol.ReportedFile],
        warnings: list[str],
        restored: bool = False,
        cell_sent: bool = False,
    ) -> protocol.ResultFrame:
        cell["warnings"] = cell["warnings"] + warnings + self.package_warnings
        self.package_warnings = []
        return protocol.ResultFrame(
            kind="result",
            cell=None if cell_sent else cell,
            late_warnings=cell["warnings"] if cell_sent else [],
            files=files,
            state=state_report or protocol.empty_state_report(),
            restored=restored,
        )

    def _prepare(self, inv: dict[str, Any], warnings: list[str]) -> tuple[bool, bool]:
        restored = transferred = False
        state = inv.get("state")
        if state is not None and self.held_version != state["version"]:
            if state.get("download_url"):
                blob = transfer.download(state["download_url"], limits.MAX_STATE_BYTES)
                self._replace_namespace(blob, warnings)
                restored = transferred = True
            elif self.held_version is not None:
                self._replace_namespace(None, warnings)
            self.held_version = state["version"]
        files = inv.get("files")
        if files is not None:
            transferred = self._sync_files(files["files"]) or transferred
        for inline in inv.get("inline_files") or ():
            workspace.write_inline_file(self.workspace, inline["path"], inline["content_base64"])
        if inv.get("packages"):
            wheelhouse = inv.get("wheelhouse") or {}
            try:
                installed = packages.install_requirements(
                    inv["packages"],
                    wheelhouse_url=wheelhouse.get("index_url"),
                    allow_pypi=bool(wheelhouse.get("allow_pypi")),
                    cache_dir=self.package_cache,
                )
            except packages.PackageInstallError as exc:
                warnings.extend(exc.warnings)
                raise PackageError(str(exc)) from exc
            warnings.extend(installed or [])
            transferred = True
        return restored, transferred

    def _replace_namespace(self, blob: bytearray | None, warnings: list[str]) -> None:
        namespace = self.shell.user_ns
        hidden = self.shell.user_ns_hidden
        for name in [n for n, v in namespace.items() if snapshot.is_snapshot_name(n, hidden, v)]:
            del namespace[name]
        if blob is None:
            return
        values, problems = snapshot.load_namespace(blob)
        namespace.update(values)
        warnings.extend(problems)

    def _sync_files(self, refs: list[dict[str, Any]]) -> bool:
        downloaded = False
        wanted = set()
        for ref in refs:
            relative = workspace.safe_relative_path(ref["path"])
            wanted.add(relative)
            target = os.path.join(self.workspace, relative)
            if self.file_etags.get(relative) == ref["etag"] and os.path.isfile(target):
                continue
            uploaded = self.uploaded_prints.get(relative)
            if uploaded is not None and uploaded[1] == ref["size"]:
                with contextlib.suppress(OSError):
                    info = os.stat(target, follow_symlinks=False)
                    if (info.st_mtime_ns, info.st_size) == uploaded:
                        self.file_etags[relative] = ref["etag"]
                        continue
            target = workspace.resolve_inside(self.workspace, relative)
            transfer.download_to_file(ref["download_url"], target, limits.MAX_UPLOAD_BYTES)
            self.file_etags[relative] = ref["etag"]
            downloaded = True
        # Files the session no longer has (deleted through the API) leave the workspace too.
        for relative in set(self.file_etags) - wanted:
            self.file_etags.pop(relative, None)
            self.uploaded_prints.pop(relative, None)
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.workspace, relative))
        return downloaded

    def _run_cell(self, inv: dict[str, Any]) -> protocol.Cell:
        spec = inv["limits"]
        capture = kernel.CellCapture(spec["stream_bytes"], spec["result_bytes"])
        capture.mirror = self.mirror
        kernel.SINK.capture = capture
        self.before_files = workspace.scan(self.workspace)
        env = inv.get("env") or {}
        saved_env = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            reset_cpu_limit(spec["cpu_seconds"])
            self.in_cell = True
            kernel.run_cell(self.shell, inv["code"], inv["execution_count"])
        except MemoryError:
            capture.memory_error = True
            capture.set_error("MemoryError", "", [])
        except BaseException as exc:  # the shell itself failed: report, keep serving
            capture.set_error(type(exc).__name__, str(exc), [])
        finally:
            self.in_cell = False
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            kernel.SINK.capture = kernel.CellCapture(0, 0)
        status = protocol.CellStatus.OK.value
        error = capture.error
        if capture.memory_error and error is not None:
            status = protocol.CellStatus.MEMORY_EXCEEDED.value
            detail = f": {error['value']}" if error["value"] else ""
            error["value"] = (
                f"the cell exceeded the memory limit ({self.memory_mb} MB address space){detail}"
            )
        elif error is not None:
            status = protocol.CellStatus.ERROR.value
        return protocol.Cell(
            status=status,
            stdout=capture.stream_text("stdout"),
            stderr=capture.stream_text("stderr"),
            stdout_truncated=capture.truncated["stdout"],
            stderr_truncated=capture.truncated["stderr"],
            result=capture.result,
            outputs=capture.finished_outputs(),
            error=protocol.CellError(
                name=error["name"], value=error["value"], traceback=error["traceback"]
            )
            if error is not None
            else None,
            warnings=capture.warnings,
        )

    def _variables(self) -> list[protocol.Variable]:
        namespace = self.shell.user_ns
        names = snapshot.snapshot_names(namespace, self.shell.user_ns_hidden)
        return [
            protocol.Variable(name=name, type=type(namespace[name]).__name__)
            for name in names[:MAX_REPORTED_VARIABLES]
        ]

    def _save_state(self, inv: dict[str, Any], warnings: list[str]) -> protocol.StateReport | None:
        state = inv.get("state")
        if not state or not state.get("upload") or not state.get("upload_key"):
            return None
        report = protocol.empty_state_report()
        try:
            dumped = snapshot.dump_namespace(self.shell.user_ns, self.shell.user_ns_hidden)
        except MemoryError:
            warnings.append("session state was not saved: not enough memory to snapshot it")
            self.held_version = None
            return report
        report["dropped"] = dumped.dropped
        if dumped.dropped:
            warnings.append(
                "not saved in the session state (cannot be pickled): " + ", ".join(dumped.dropped)
            )
        post = state["upload"]
        cap = min(post.get("max_bytes") or limits.MAX_STATE_BYTES, limits.MAX_STATE_BYTES)
        if dumped.size > cap:
            warnings.append(f"session state was not saved: {dumped.size} bytes exceed {cap}")
            self.held_version = None
            return report
        try:
            transfer.upload(
                post, state["upload_key"], dumped.chunks, dumped.size, "application/octet-stream"
            )
        except transfer.TransferError as exc:
            warnings.append(f"session state was not saved: {exc}")
            self.held_version = None
            return report
        report["uploaded"] = True
        report["size"] = dumped.size
        # The API commits this upload as version + 1; a mismatch next time means it did not.
        self.held_version = state["version"] + 1
        return report

    def _collect_files(
        self, inv: dict[str, Any], warnings: list[str]
    ) -> list[protocol.ReportedFile]:
        after = workspace.scan(self.workspace)
        changed = workspace.changed_files(self.before_files, after)
        if not changed:
            return []
        spec = inv["limits"]
        post = (inv.get("files") or {}).get("upload")
        reported: list[protocol.ReportedFile] = []
        for relative in changed:
            size = after[relative][1]
            if len(reported) >= spec["output_files"]:
                warnings.append(f"only the first {spec['output_files']} changed files were kept")
                break
            cap = spec["output_file_bytes"]
            if post is not None:
                cap = min(cap, post.get("max_bytes") or cap)
            if size > cap:
                warnings.append(f"file {relative!r} was not saved: {size} bytes exceed {cap}")
                continue
            if post is not None:
                try:
                    fd = workspace.open_no_follow(self.workspace, relative)
                except OSError:
                    continue
                try:
                    transfer.upload(
                        post,
                        post["key_prefix"] + relative,
                        fd,
                        size,
                        workspace.content_type(relative),
                    )
                except transfer.TransferError as exc:
                    warnings.append(f"file {relative!r} was not saved: {exc}")
                    continue
                finally:
                    os.close(fd)
                self.uploaded_prints[relative] = after[relative]
            reported.append(
                protocol.ReportedFile(
                    path=relative, size=size, content_type=workspace.content_type(relative)
                )
            )
        return reported


def serve(
    sock: socket.socket, shell: Any, warm: bool, mirror: protocol.OutputMirror | None = None
) -> None:
    kernel.install_streams()
    worker = Worker(sock, shell, mirror)
    signal.signal(signal.SIGUSR1, worker.send_partial)
    if warm:
        # A spare worker forked ahead of need: pay the first-cell costs (copy-on-write page
        # faults in the shell's machinery) now, while nobody waits for it.
        with contextlib.suppress(Exception):
            shell.run_cell("pass", store_history=False)
    worker.serve()
