"""The session worker: a child forked from the zygote that runs untrusted cells.

It applies the sandbox (rlimits, scrubbed environment, workspace as cwd) before its first
cell, restores the session snapshot when it does not hold the committed version, syncs the
session files, runs the cell with IPython semantics, then snapshots and uploads the namespace
and the changed files through presigned URLs. It only ever talks JSON frames to the parent.

The channel is the worker's alone: a process user code forks (os.fork, multiprocessing) loses
it at once (an at-fork hook), prints straight to the fds, and exits when its copy of the cell
ends, so it can never answer for the worker (issue 11). What a cell changes about the process
that would break the next run is put back around every cell (sandbox/hygiene.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
from typing import Any, NoReturn, cast

from lambdas.executor import protocol
from lambdas.executor.sandbox import capture as cell_capture
from lambdas.executor.sandbox import (
    confinement,
    hygiene,
    kernel,
    packages,
    snapshot,
    transfer,
    workspace,
)
from lambdas.shared import limits

MAX_REPORTED_VARIABLES = 500
INVOCATION_FRAME_BYTES = 16 * 1024 * 1024  # code + inline files (≤ 4 MiB base64) + URLs


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
        # The committed state version this worker's namespace holds (None: unknown), and the
        # digest of the snapshot this worker uploaded as that version (None: it did not upload
        # it, e.g. restored it). Both always change together (`_hold`).
        self.held_version: int | None = None
        self.held_digest: snapshot.Digest | None = None
        self.synced_files = workspace.SyncedFiles()
        # The workspace as the last run's file report left it; what wrote there since (our
        # transfers: reset; a thread or process of that run: reported by this run) shows.
        self.last_scan: dict[str, workspace.Fingerprint] | None = None
        self.memory_mb = limits.DEFAULT_MEMORY_LIMIT_MB
        self.package_warnings: list[str] = []
        self.pid = os.getpid()  # a process with another pid was forked by user code
        self.run_id = ""  # the current run's, echoed in every frame
        self.guard = hygiene.ProcessGuard()
        self.partial_handler = self.send_partial  # one bound method: compared by identity

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
            if os.getpid() != self.pid:  # forked by user code while the state was saved
                os._exit(0)
            self.send(reply)
            if self.one_shot:
                return

    def send(self, message: protocol.WorkerFrame) -> None:
        """A frame to the parent. Output JSON cannot encode was cleaned when it was captured
        (sandbox/mime.py); should anything still slip through, the cell fails with a clear
        error instead of the worker dying with it."""
        try:
            data = protocol.encode_frame(message)
        except (TypeError, ValueError) as exc:
            if message.get("cell") is None:
                raise
            failed = protocol.failed_cell(
                "OutputNotEncodable",
                f"the cell's output could not be encoded as JSON ({type(exc).__name__}); "
                "it was dropped",
            )
            data = protocol.encode_frame({**message, "cell": failed})
        self.sock.sendall(data)

    def forked_by_user_code(self) -> None:
        """At-fork hook, in the child: this process is not the worker. It drops the channel
        and the output mirror, and its prints go straight to the fds (`_run_cell` ends it)."""
        with contextlib.suppress(OSError):
            os.close(self.sock.detach())
        self.mirror = None
        cell_capture.SINK.capture.mirror = None
        cell_capture.SINK.to_fds = True

    @staticmethod
    def leave_forked_child(capture: cell_capture.CellCapture) -> NoReturn:
        """A forked child's copy of the cell ended: exit as a script's child would (its error
        on stderr, sys.exit's code), instead of going back to serve runs it was never sent."""
        error = capture.error
        if error is None:
            os._exit(0)
        if error["name"] == "SystemExit":
            value = error["value"]
            os._exit(int(value) & 0xFF if value.lstrip("-").isdigit() else int(bool(value)))
        text = "\n".join(error["traceback"]) or error["name"]  # as IPython's stb2text
        with contextlib.suppress(OSError):
            os.write(2, text.encode("utf-8", "backslashreplace") + b"\n")
        os._exit(1)

    def send_partial(self, signum: int, frame: Any) -> None:
        """SIGUSR1 from the parent when the cell's time is up: send what it printed so far,
        so a timed-out cell still shows its output (the parent kills the worker right after)."""
        if not self.in_cell or os.getpid() != self.pid:
            return
        capture = cell_capture.SINK.capture
        outputs = capture.current_outputs()
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
            self.send(protocol.PartialFrame(kind="partial", run=self.run_id, cell=cell))
        self.in_cell = False  # once is enough

    def _enter_sandbox(self, request: protocol.RunRequest) -> None:
        self.workspace = request["workspace"]
        self.package_cache = request["package_cache"]
        os.makedirs(self.workspace, mode=0o700, exist_ok=True)
        os.chdir(self.workspace)
        confinement.scrub_environment(self.workspace)
        inv = request["inv"]
        spec = inv["limits"]
        self.memory_mb = spec["memory_mb"]
        confinement.apply_rlimits(spec)
        self.guard.remember_rlimits()
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
        self.run_id = request["run"]
        if self.mirror is not None:
            self.mirror.reset()  # the parent must never read an earlier run's output
        inv = request["inv"]
        if not self.sandboxed:
            self.one_shot = request["one_shot"]
            self._enter_sandbox(request)
        hygiene.forget_killed_helpers(confinement.reap_children())
        warnings: list[str] = []
        restored = False
        try:
            restored = self._prepare(inv, warnings)
        except PackageError as exc:
            cell = protocol.failed_cell("PackageInstallError", str(exc))
            return self._final(cell, None, [], warnings)
        except (transfer.TransferError, workspace.UnsafePathError, ValueError, OSError) as exc:
            return self._final(
                protocol.failed_cell("PreparationFailed", str(exc)), None, [], warnings
            )
        if request["announce_run"]:
            self.send(protocol.PhaseFrame(kind="phase", run=self.run_id, phase="run"))

        cell = self._run_cell(inv)
        state = inv.get("state") or {}
        files = inv.get("files") or {}
        wants_save = bool(state.get("upload")) or bool(files.get("upload"))
        if wants_save:
            self.send(protocol.SavingFrame(kind="saving", run=self.run_id, cell=cell))
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
        # A cell sent before the saving went with its own warnings: only what came after
        # (preparing, saving, installs) is late.
        late = warnings + self.package_warnings
        cell["warnings"] = cell["warnings"] + late
        self.package_warnings = []
        return protocol.ResultFrame(
            kind="result",
            run=self.run_id,
            cell=None if cell_sent else cell,
            late_warnings=late if cell_sent else [],
            files=files,
            state=state_report or protocol.empty_state_report(),
            restored=restored,
        )

    def _prepare(self, inv: dict[str, Any], warnings: list[str]) -> bool:
        """State, files and packages before the cell; True if the state was restored."""
        restored = False
        state = inv.get("state")
        if state is not None and self.held_version != state["version"]:
            self.held_digest = None  # whatever happens next, this worker did not dump it
            if state.get("download_url"):
                blob = transfer.download(state["download_url"], limits.MAX_STATE_BYTES)
                self._replace_namespace(blob, warnings)
                restored = True
            elif self.held_version is not None:
                self._replace_namespace(None, warnings)
            self._hold(state["version"])
        files = inv.get("files")
        if files is not None:
            self._sync_files(files)
        if inv.get("inline_files"):
            self.last_scan = None
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
        return restored

    def _hold(self, version: int | None, digest: snapshot.Digest | None = None) -> None:
        """The namespace is committed `version`; `digest`: of the snapshot this worker uploaded
        as it. Without one, the next save uploads whatever it dumps (a false "changed" costs one
        upload; a false "unchanged" would lose the user's state)."""
        self.held_version = version
        self.held_digest = digest

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

    def _sync_files(self, files: dict[str, Any]) -> bool:
        """Make the workspace hold exactly the session's stored files (workspace.SyncedFiles)."""
        plan = self.synced_files.plan(self.workspace, files["files"], files.get("complete", True))
        if plan.removals or plan.downloads:
            self.last_scan = None
        for relative in plan.removals:
            self.synced_files.remove(self.workspace, relative)
        for ref in plan.downloads:
            target = workspace.resolve_inside(self.workspace, ref["path"])
            transfer.download_to_file(ref["download_url"], target, limits.MAX_UPLOAD_BYTES)
            self.synced_files.record(self.workspace, ref["path"], ref["etag"])
        return bool(plan.downloads)

    def _run_cell(self, inv: dict[str, Any]) -> protocol.Cell:
        spec = inv["limits"]
        capture = cell_capture.CellCapture(spec["stream_bytes"], spec["result_bytes"])
        capture.mirror = self.mirror
        cell_capture.SINK.capture = capture
        self.before_files = (
            self.last_scan if self.last_scan is not None else workspace.scan(self.workspace)
        )
        env = inv.get("env") or {}
        saved_env = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        kernel.ensure_streams()
        self.guard.before_cell()
        if signal.getsignal(signal.SIGUSR1) is not self.partial_handler:
            signal.signal(signal.SIGUSR1, self.partial_handler)  # the last cell took it over
        try:
            confinement.reset_cpu_limit(spec["cpu_seconds"])
            self.in_cell = True
            try:
                confinement.accept_interrupts(True)
                kernel.run_cell(self.shell, inv["code"], inv["execution_count"])
            finally:
                confinement.stop_accepting_interrupts()
        except MemoryError:
            capture.memory_error = True
            capture.set_error("MemoryError", "", [])
        except BaseException as exc:  # the shell itself failed: report, keep serving
            capture.set_error(type(exc).__name__, kernel.safe_str(exc), [])
        finally:
            self.in_cell = False
            if os.getpid() != self.pid:
                self.leave_forked_child(capture)
            self.guard.after_cell()
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            cell_capture.SINK.capture = cell_capture.CellCapture(0, 0)
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
            self._hold(None)
            return report
        report["dropped"] = dumped.dropped
        if dumped.dropped:
            warnings.append(
                "not saved in the session state (cannot be pickled): " + ", ".join(dumped.dropped)
            )
        head, running = dumped.head_digest()
        if self._unchanged(dumped, state["version"], head, running):
            # The committed snapshot is byte for byte this one: keep it, upload nothing.
            report["unchanged"] = True
            report["size"] = dumped.size
            return report
        post = state["upload"]
        cap = min(post.get("max_bytes") or limits.MAX_STATE_BYTES, limits.MAX_STATE_BYTES)
        if dumped.size > cap:
            warnings.append(f"session state was not saved: {dumped.size} bytes exceed {cap}")
            self._hold(None)
            return report
        sent = dumped.upload_hash()
        try:
            transfer.upload(
                post,
                state["upload_key"],
                dumped.chunks,
                dumped.size,
                "application/octet-stream",
                observer=sent,
            )
        except transfer.TransferError as exc:
            warnings.append(f"session state was not saved: {exc}")
            self._hold(None)
            return report
        report["uploaded"] = True
        report["size"] = dumped.size
        # The API commits this upload as version + 1; a mismatch next time means it did not.
        self._hold(state["version"] + 1, snapshot.Digest(head, bytes(sent.digest())))
        return report

    def _unchanged(
        self, dumped: snapshot.Snapshot, committed: int, head: bytes, running: Any
    ) -> bool:
        """Whether `dumped` is what this worker uploaded as the `committed` version (`head`,
        `running`: from its `head_digest`). The out-of-band buffers, the bulk of a DataFrame,
        are hashed only when the listing and the header already match."""
        held = self.held_digest
        if held is None or self.held_version != committed or head != held.head:
            return False
        return dumped.finish_digest(running) == held.whole

    def _collect_files(
        self, inv: dict[str, Any], warnings: list[str]
    ) -> list[protocol.ReportedFile]:
        after = self.last_scan = workspace.scan(self.workspace)
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
                    etag = transfer.upload(
                        post,
                        post["key_prefix"] + relative,
                        fd,
                        size,
                        workspace.content_type(relative),
                        checksum=not self.one_shot,
                    )
                except transfer.TransferError as exc:
                    warnings.append(f"file {relative!r} was not saved: {exc}")
                    continue
                finally:
                    os.close(fd)
                if etag is not None:
                    self.synced_files.record(self.workspace, relative, etag, after[relative])
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
    signal.signal(signal.SIGUSR1, worker.partial_handler)
    os.register_at_fork(after_in_child=worker.forked_by_user_code)
    signal.signal(signal.SIGINT, confinement.interrupt_outside_cell)
    if warm:
        # A spare worker forked ahead of need: pay the first-cell costs (copy-on-write page
        # faults in the shell's machinery) now, while nobody waits for it.
        with contextlib.suppress(Exception):
            shell.run_cell("pass", store_history=False)
    worker.serve()
