"""IPython semantics for the sandboxed worker: the shell, its magics and `!` commands.

Built once in the zygote (so forking a worker costs no shell construction); what one cell
outputs is collected by `capture.py`. Nothing here talks to the parent.
"""

from __future__ import annotations

import codecs
import codeop
import contextlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from IPython.core.inputtransformer2 import TransformerManager
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from lambdas.executor.sandbox import cells, charts, mime, tracebacks
from lambdas.executor.sandbox.capture import (
    SINK,
    CapturedStream,
    CapturingDisplayHook,
    CapturingDisplayPublisher,
)
from lambdas.executor.sandbox.tracebacks import PACKAGES_HINT

DEEP_TRACEBACK_FRAMES = 50
# `!pip install x`, `!pip3 install x`, `!python -m pip install x`: the arguments after "pip".
_PIP_COMMAND = re.compile(r"^\s*(?:pip3?|python3?(?:\.\d+)?\s+-m\s+pip)\s+(.*)$", re.DOTALL)
# pip options that would fetch from elsewhere than this deployment's wheelhouse.
_PIP_SOURCE_OPTIONS = ("-r", "--requirement", "-e", "--editable", "-i", "--index-url",
                       "--extra-index-url", "-f", "--find-links", "-t", "--target")  # fmt: skip


def run_shell_command(command: str) -> int:
    """`!cmd` without a pty (pexpect needs one, Lambda may not have it): stdout and stderr
    merged and streamed, in order, into the cell's captured stdout."""
    process = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    with process.stdout:
        fd = process.stdout.fileno()
        while chunk := os.read(fd, 65536):
            sys.stdout.write(decoder.decode(chunk))
    sys.stdout.write(decoder.decode(b"", final=True))
    return process.wait()


class PackageNotAvailable(RuntimeError):
    """`%pip install` asked for something this deployment does not offer."""


def run_pip(shell: SandboxShell, argv: list[str]) -> None:
    """`%pip` and `!pip`: there is no pip (and on Lambda no internet) in the sandbox, but the
    habit is strong, so `install` installs whitelisted packages the way an import would (from
    the deployment's wheelhouse) and `list` lists what is importable; anything else is refused
    at once with a clear message instead of hanging on a network that is not there."""
    from importlib import metadata

    command = argv[0] if argv else ""
    if command in ("list", "freeze"):
        seen = {(dist.metadata["Name"] or "?"): dist.version for dist in metadata.distributions()}
        separator = "==" if command == "freeze" else " "
        for name in sorted(seen, key=str.lower):
            print(f"{name}{separator}{seen[name]}")
        return
    if command != "install":
        raise PackageNotAvailable(
            f"`pip {command}` is not available here: only `%pip install <package>` (whitelisted "
            f"packages) and `%pip list` work; {PACKAGES_HINT}"
        )
    refused = [arg for arg in argv[1:] if arg.split("=", 1)[0] in _PIP_SOURCE_OPTIONS]
    if refused:
        raise PackageNotAvailable(
            f"pip option {refused[0]} is not supported: packages come only from this "
            f"deployment's whitelist; {PACKAGES_HINT}"
        )
    specs = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not specs:
        raise PackageNotAvailable("name the packages to install: %pip install <package> ...")
    if shell.package_installer is None:
        raise PackageNotAvailable(
            f"on-demand packages are not available in this environment; {PACKAGES_HINT}"
        )
    _refuse_unsatisfiable_pins(specs)  # what is importable already
    try:
        for line in shell.package_installer(specs):
            print(line)
    except Exception as exc:
        raise PackageNotAvailable(f"{exc}; {PACKAGES_HINT}") from None
    _refuse_unsatisfiable_pins(specs)  # what was just installed
    for spec in specs:
        name = re.split(r"[\s<>=!~;\[]", spec.strip(), maxsplit=1)[0]
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        print(f"{name} {version} is ready to import")


def _refuse_unsatisfiable_pins(specs: list[str]) -> None:
    """`pip install requests==1.0` when the whitelist pins requests at 2.34.2 must fail, not
    report success: the code that asked for 1.0 would run against another version."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    conflicts = []
    for spec in specs:
        try:
            requirement = Requirement(spec)
        except InvalidRequirement:
            continue  # the installer says what is wrong with it
        if not requirement.specifier:
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            conflicts.append(
                f"{spec} cannot be installed: this deployment pins {requirement.name} at {version}"
            )
    if conflicts:
        raise PackageNotAvailable(f"{'; '.join(conflicts)}; {PACKAGES_HINT}")


# A cell with none of what IPython's token transformers look for goes through them unchanged.
_TOKEN_SYNTAX = re.compile(cells.IPYTHON_SYNTAX_PATTERN, re.MULTILINE)


class _TransformerManager(TransformerManager):
    """IPython's, without tokenizing a cell that has none of its token syntax (~40 us of a warm
    run's worker CPU): the result is the same, so the token pass is skipped."""

    def __init__(self) -> None:
        super().__init__()
        self._default_token_transformers = list(self.token_transformers)

    def do_token_transforms(self, lines: list[str]) -> list[str]:
        default = self.token_transformers == self._default_token_transformers
        if default and not _TOKEN_SYNTAX.search("".join(lines)):
            return lines
        return super().do_token_transforms(lines)


class SandboxShell(InteractiveShell):
    """An InteractiveShell without a terminal; outputs go to the current `CellCapture`."""

    # Set by the worker once it knows the deployment's wheelhouse: installs whitelisted
    # packages (requirement specs in, one message per install out).
    package_installer: Callable[[list[str]], list[str]] | None = None
    plain_cells: cells.PlainCellRunner | None = None  # set by build_shell
    _completer: Any = None
    # While an object is being displayed: what its rich reprs raised (_guard_display_formatter).
    format_failures: list[str] | None = None

    def enable_gui(self, gui=None) -> None:
        return None  # the inline matplotlib backend needs no event loop

    def init_completer(self) -> None:
        # Nothing here completes code: IPython's completer (~40 ms of every new environment's
        # start) is built on first use only, by the `Completer` property below.
        return None

    @property
    def Completer(self) -> Any:  # IPython's attribute name
        if self._completer is None:
            super().init_completer()  # assigns self.Completer
        return self._completer

    @Completer.setter
    def Completer(self, completer: Any) -> None:
        self._completer = completer

    def system_piped(self, cmd: str) -> None:
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        expanded = self.var_expand(cmd, depth=1)
        pip = _PIP_COMMAND.match(expanded)
        if pip is not None:
            run_pip(self, shlex.split(pip.group(1)))
            self.user_ns["_exit_code"] = 0
            return
        exit_code = run_shell_command(expanded)
        self.user_ns["_exit_code"] = exit_code
        if self.system_raise_on_error and exit_code != 0:
            raise subprocess.CalledProcessError(exit_code, cmd)

    system = system_piped

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0) -> Any:
        """`x = !cmd`, also without a pty."""
        from IPython.utils.text import LSString, SList

        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        completed = subprocess.run(
            ["/bin/sh", "-c", self.var_expand(cmd, depth=depth + 1)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        self.user_ns["_exit_code"] = completed.returncode
        if self.system_raise_on_error and completed.returncode != 0:
            raise subprocess.CalledProcessError(completed.returncode, cmd)
        output = completed.stdout.decode("utf-8", "replace")
        return SList(output.splitlines()) if split else LSString(output)

    def should_run_async(  # type: ignore[override]
        self, raw_cell: str, *, transformed_cell=None, preprocessing_exc_tuple=None
    ) -> bool:
        # Top-level `await`, `async for` and `async with` all contain one of these words; any
        # other cell skips IPython's extra trial compile (a sizeable share of a small cell).
        text = transformed_cell if transformed_cell is not None else raw_cell
        if "await" not in text and "async" not in text:
            return False
        return super().should_run_async(
            raw_cell,
            transformed_cell=transformed_cell,
            preprocessing_exc_tuple=preprocessing_exc_tuple,
        )

    @contextlib.contextmanager
    def _tee(self, channel: str) -> Iterator[None]:
        # IPython 9 copies every print of every cell into `history_manager.outputs` and never
        # lets go: a session printing 1 MB per cell held 20 MB after 20 cells. Nothing here
        # reads that history (outputs are captured by capture.py).
        yield

    def _format_exception_for_storage(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # The same history keeps a second, formatted traceback of every failed cell (run_cell
        # below empties it): not formatted at all.
        return {}

    def ask_exit(self) -> None:
        """`exit()` / `quit()`: a session ends through the API, not from inside a cell."""
        SINK.capture.warn(
            "exit() does nothing here: the session keeps running (delete it through the API)"
        )

    def showtraceback(self, exc_tuple=None, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        try:
            etype, value, tb = self._get_exc_info(exc_tuple)
        except ValueError:
            super().showtraceback(exc_tuple, *args, **kwargs)
            return
        if self.format_failures is not None:
            # A rich repr raised while an object was being displayed: IPython would show the
            # traceback as the cell's error; the object is shown as text instead (_format).
            self.format_failures.append(f"{getattr(etype, '__name__', 'Error')}: {safe_str(value)}")
            return
        tb = tracebacks.for_user(value, tb)
        exc_tuple = (etype, value, tb)
        if isinstance(value, BaseExceptionGroup):
            # IPython prints exception groups to stderr itself, from its own frame on.
            skipped = tb.tb_next if tb is not None else None  # the shell's frame (tb_offset)
            self._showtraceback(etype, value, _format_exception(etype, value, skipped))
            return
        error_before = SINK.capture.error
        # Context mode (stack_data) needs seconds for a deep stack such as a RecursionError;
        # plain formatting is instant and still collapses the repeated frames.
        depth = 0
        entry = tb
        while entry is not None and depth <= DEEP_TRACEBACK_FRAMES:
            entry = entry.tb_next
            depth += 1
        if depth <= DEEP_TRACEBACK_FRAMES:
            super().showtraceback(exc_tuple, *args, **kwargs)
        else:
            mode = self.InteractiveTB.mode
            self.InteractiveTB.set_mode("Plain")
            try:
                super().showtraceback(exc_tuple, *args, **kwargs)
            finally:
                self.InteractiveTB.set_mode(mode)
        if SINK.capture.error is error_before:
            # IPython printed it some other way (an exception group, a `_render_traceback_`
            # that failed): every failed cell still gets its error.
            self._showtraceback(etype, value, _exception_only(etype, value))

    def show_usage_error(self, exc: BaseException) -> None:
        """`%no_such_magic`: an error of the cell, as Jupyter reports it, not just stderr."""
        self._showtraceback(type(exc), exc, [f"UsageError: {safe_str(exc)}"])

    def _showtraceback(self, etype, evalue, stb: list[str]) -> None:
        capture = SINK.capture
        if isinstance(etype, type) and issubclass(etype, MemoryError):
            capture.memory_error = True
        if isinstance(etype, type) and issubclass(etype, SystemExit):
            capture.warn(
                "SystemExit ends the cell, not the session (a session ends when it is deleted "
                "through the API)"
            )
        name = getattr(etype, "__name__", None)
        capture.set_error(name if isinstance(name, str) else "Error", safe_str(evalue), list(stb))


def safe_str(value: Any) -> str:
    """str() of a user's exception, which may itself raise."""
    try:
        text = str(value)
    except Exception:
        return f"<{type(value).__name__} whose str() failed>"
    return text if type(text) is str else f"<{type(value).__name__}>"


def _format_exception(etype: Any, value: BaseException, tb: Any) -> list[str]:
    try:
        return traceback.format_exception(etype, value, tb)
    except Exception:
        return _exception_only(etype, value)


def _exception_only(etype: Any, value: BaseException) -> list[str]:
    try:
        return traceback.format_exception_only(etype, value)
    except Exception:
        return [f"{getattr(etype, '__name__', 'Error')}: {safe_str(value)}\n"]


def _guard_display_formatter(shell: SandboxShell) -> None:
    """An object whose rich repr raises is shown as text/plain with a warning (as IPython
    shows it as text after printing the traceback), never as an error of the cell."""
    formatter = shell.display_formatter
    assert formatter is not None  # built by InteractiveShell.__init__
    format_object = formatter.format

    def format(obj: Any, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        outer, shell.format_failures = shell.format_failures, []
        try:
            data, metadata = format_object(obj, include=include, exclude=exclude)
        finally:
            failures, shell.format_failures = shell.format_failures, outer
        if failures:
            data = dict(data)
            data.setdefault("text/plain", mime.safe_repr(obj))
            SINK.capture.warn(
                f"a rich display of an object of type {type(obj).__name__} failed "
                f"({'; '.join(failures)}); it is shown as text/plain"
            )
        return data, metadata

    formatter.format = format  # type: ignore[method-assign]


def build_shell(ipython_dir: str) -> SandboxShell:
    config = Config()
    config.HistoryManager.enabled = False  # no history thread may exist at fork time
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.xmode = "Context"
    config.BaseIPythonApplication.ipython_dir = ipython_dir
    # instance(): IPython.display.display() publishes through the singleton only.
    shell = SandboxShell.instance(config=config)
    shell.input_transformer_manager = _TransformerManager()
    replaced = shell.display_pub
    shell.display_pub = CapturingDisplayPublisher(shell=shell)
    # IPython's own publisher registered its hooks; replaced, it would still run on every cell.
    for event, hook in (("pre_execute", "_on_pre_execute"), ("post_execute", "_on_post_execute")):
        with contextlib.suppress(ValueError, AttributeError):
            shell.events.unregister(event, getattr(replaced, hook))
    shell.displayhook = CapturingDisplayHook(shell=shell)
    shell.display_trap.hook = shell.displayhook
    _guard_display_formatter(shell)
    # A cell is always complete: `print(` is a SyntaxError ("'(' was never closed"), not
    # codeop's private `_IncompleteInputError: incomplete input`.
    shell.compile.flags &= ~getattr(codeop, "PyCF_ALLOW_INCOMPLETE_INPUT", 0)
    # IPython's terminal advice on SystemExit, with its own path; _showtraceback says better.
    warnings.filterwarnings("ignore", message=r"To exit: use 'exit', 'quit', or Ctrl-D\.")
    # Inline plots: the zygote enables them once matplotlib is preloaded; a worker forked
    # before that gets them from MPLBACKEND when the cell imports pyplot (sandbox/zygote.py).
    magics = shell.magics_manager
    magics.register_function(lambda line: run_pip(shell, shlex.split(line)), "line", "pip")
    for name in ("conda", "mamba", "micromamba", "uv"):
        magics.register_function(_refuse_package_manager(name), "line", name)
    charts.register(shell)  # figures also yield application/vnd.lci.chart+json
    shell.plain_cells = cells.PlainCellRunner(shell)
    return shell


def _refuse_package_manager(name: str) -> Callable[[str], None]:
    def refuse(line: str) -> None:
        raise PackageNotAvailable(
            f"{name} is not available here: `%pip install <package>` installs whitelisted "
            f"packages; {PACKAGES_HINT}"
        )

    return refuse


def run_cell(shell: InteractiveShell, code: str, execution_count: int) -> None:
    """Run one cell with Jupyter semantics; outputs land in SINK.capture."""
    code = textwrap.dedent(code)
    plain = getattr(shell, "plain_cells", None)
    if plain is None or not plain.run(code, execution_count):
        shell.execution_count = execution_count
        shell.run_cell(code, store_history=True)
        if shell.history_manager is not None:  # see _format_exception_for_storage above
            shell.history_manager.exceptions.clear()


_STREAMS: list[CapturedStream] = []


def install_streams() -> None:
    _STREAMS[:] = [CapturedStream("stdout", 1), CapturedStream("stderr", 2)]
    sys.stdout, sys.stderr = _STREAMS


def ensure_streams() -> None:
    """Before a cell: streams an earlier cell replaced or closed come back."""
    if (
        len(_STREAMS) != 2
        or sys.stdout is not _STREAMS[0]
        or sys.stderr is not _STREAMS[1]
        or _STREAMS[0].closed
        or _STREAMS[1].closed
    ):
        install_streams()
