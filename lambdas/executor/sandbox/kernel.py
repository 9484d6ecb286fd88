"""IPython semantics for the sandboxed worker: the shell, and the capture of one cell's outputs.

Built once in the zygote (so forking a worker costs no shell construction); every cell gets a
fresh `CellCapture` that collects nbformat v4 outputs in order: stream text (capped), display
data, the execute_result and the error. Nothing here talks to the parent.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from lambdas.executor.sandbox import charts

DEEP_TRACEBACK_FRAMES = 50
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# `!pip install x`, `!pip3 install x`, `!python -m pip install x`: the arguments after "pip".
_PIP_COMMAND = re.compile(r"^\s*(?:pip3?|python3?(?:\.\d+)?\s+-m\s+pip)\s+(.*)$", re.DOTALL)
# pip options that would fetch from elsewhere than this deployment's wheelhouse.
_PIP_SOURCE_OPTIONS = ("-r", "--requirement", "-e", "--editable", "-i", "--index-url",
                       "--extra-index-url", "-f", "--find-links", "-t", "--target")  # fmt: skip
_PACKAGES_HINT = "GET /v1/packages lists what this deployment offers"


def strip_ansi(text: str) -> str:
    return _ANSI_ESCAPE.sub("", text)


def _fit_utf8(text: str, budget: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `budget` bytes."""
    piece = text[:budget]
    encoded = piece.encode("utf-8", "surrogatepass")
    if len(encoded) <= budget:
        return piece
    return encoded[:budget].decode("utf-8", "ignore")


def collapse_repeats(entries: list[str], keep: int = 3) -> list[str]:
    """Runs of identical traceback entries (deep recursion) shortened to `keep` plus a note."""
    collapsed: list[str] = []
    index = 0
    while index < len(entries):
        end = index
        while end < len(entries) and entries[end] == entries[index]:
            end += 1
        run = end - index
        collapsed.extend(entries[index : index + min(run, keep)])
        if run > keep:
            collapsed.append(f"[... the previous entry repeated {run - keep} more times]")
        index = end
    return collapsed


def mime_bundle_size(data: dict[str, Any]) -> int:
    return sum(
        len(value) if isinstance(value, str) else len(repr(value)) for value in data.values()
    )


class CellCapture:
    """Outputs of one cell, in order, with per-stream byte caps and an overall size budget."""

    def __init__(self, stream_bytes: int, result_bytes: int) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.stream_parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.stream_room = {"stdout": stream_bytes, "stderr": stream_bytes}
        self.truncated = {"stdout": False, "stderr": False}
        self.display_room = result_bytes - 2 * stream_bytes
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.memory_error = False
        self.warnings: list[str] = []
        self._open_stream: dict[str, Any] | None = None
        # protocol.OutputMirror of the worker: kept stream text also lands where the parent
        # can read it if the worker dies before answering.
        self.mirror: Any = None

    def add_stream(self, name: str, text: str) -> None:
        room = self.stream_room[name]
        if room <= 0:
            if text:
                self.truncated[name] = True
            return
        if len(text) * 4 > room:  # cheap bound first: at most 4 UTF-8 bytes per character
            fitted = _fit_utf8(text, room)
            if len(fitted) < len(text):
                self.truncated[name] = True
            text = fitted
            self.stream_room[name] = room - len(text.encode("utf-8", "surrogatepass"))
        else:
            self.stream_room[name] = room - len(text.encode("utf-8", "surrogatepass"))
        if not text:
            return
        if self.mirror is not None:
            self.mirror.append(name, text)
        self.stream_parts[name].append(text)
        current = self._open_stream
        if current is not None and current["name"] == name:
            current["text"].append(text)
        else:
            current = {"output_type": "stream", "name": name, "text": [text]}
            self.outputs.append(current)
            self._open_stream = current

    def _fits(self, data: dict[str, Any]) -> bool:
        size = mime_bundle_size(data)
        if size > self.display_room:
            self.warnings.append("an output was dropped: the result size limit was reached")
            return False
        self.display_room -= size
        return True

    def add_display(self, data: dict[str, Any], metadata: dict[str, Any] | None) -> None:
        if not self._fits(data):
            return
        self._open_stream = None
        self.outputs.append(
            {"output_type": "display_data", "data": data, "metadata": metadata or {}}
        )

    def set_result(self, data: dict[str, Any], metadata: dict[str, Any], count: int) -> None:
        if not self._fits(data):
            return
        self._open_stream = None
        self.result = data
        self.outputs.append(
            {
                "output_type": "execute_result",
                "execution_count": count,
                "data": data,
                "metadata": metadata or {},
            }
        )

    def set_error(self, name: str, value: str, traceback: list[str]) -> None:
        self._open_stream = None
        traceback = collapse_repeats([strip_ansi(line) for line in traceback])
        self.error = {"name": name, "value": value, "traceback": traceback}
        self.outputs.append(
            {"output_type": "error", "ename": name, "evalue": value, "traceback": traceback}
        )

    def clear(self) -> None:
        self.outputs.clear()
        self._open_stream = None

    def finished_outputs(self) -> list[dict[str, Any]]:
        for output in self.outputs:
            if output["output_type"] == "stream" and isinstance(output["text"], list):
                output["text"] = "".join(output["text"])
        return self.outputs

    def stream_text(self, name: str) -> str:
        return "".join(self.stream_parts[name])


class _Sink:
    """Where the shell's hooks write; the worker swaps `capture` for every cell."""

    capture: CellCapture = CellCapture(0, 0)


SINK = _Sink()


class CapturedStream(io.TextIOBase):
    """sys.stdout / sys.stderr replacement feeding the current cell's capture."""

    def __init__(self, name: str, fd: int) -> None:
        self._name = name
        self._fd = fd

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # C-level and subprocess writes go to the real fd, a pipe the parent drains (capped).
        return self._fd

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        SINK.capture.add_stream(self._name, text)
        return len(text)

    def flush(self) -> None:
        return None


class _CapturingDisplayPublisher(DisplayPublisher):
    def publish(  # type: ignore[override]
        self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs
    ) -> None:
        SINK.capture.add_display(data, metadata)

    def clear_output(self, wait: bool = False) -> None:
        SINK.capture.clear()


class _CapturingDisplayHook(DisplayHook):
    def write_output_prompt(self) -> None:
        return None

    def write_format_data(self, format_dict, md_dict=None) -> None:
        SINK.capture.set_result(format_dict, md_dict or {}, self.prompt_count)

    def log_output(self, format_dict) -> None:
        return None  # history is off; keeping bundles would grow forever

    def finish_displayhook(self) -> None:
        self._is_active = False


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
            f"packages) and `%pip list` work; {_PACKAGES_HINT}"
        )
    refused = [arg for arg in argv[1:] if arg.split("=", 1)[0] in _PIP_SOURCE_OPTIONS]
    if refused:
        raise PackageNotAvailable(
            f"pip option {refused[0]} is not supported: packages come only from this "
            f"deployment's whitelist; {_PACKAGES_HINT}"
        )
    specs = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not specs:
        raise PackageNotAvailable("name the packages to install: %pip install <package> ...")
    if shell.package_installer is None:
        raise PackageNotAvailable(
            f"on-demand packages are not available in this environment; {_PACKAGES_HINT}"
        )
    try:
        for line in shell.package_installer(specs):
            print(line)
    except Exception as exc:
        raise PackageNotAvailable(f"{exc}; {_PACKAGES_HINT}") from None
    for spec in specs:
        name = re.split(r"[\s<>=!~;\[]", spec.strip(), maxsplit=1)[0]
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        pinned = "==" in spec and spec.split("==", 1)[1].strip() != version
        note = f" (this deployment pins {name} at {version})" if pinned else ""
        print(f"{name} {version} is ready to import{note}")


class SandboxShell(InteractiveShell):
    """An InteractiveShell without a terminal; outputs go to the current `CellCapture`."""

    # Set by the worker once it knows the deployment's wheelhouse: installs whitelisted
    # packages (requirement specs in, one message per install out).
    package_installer: Callable[[list[str]], list[str]] | None = None

    def enable_gui(self, gui=None) -> None:
        return None  # the inline matplotlib backend needs no event loop

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

    def ask_exit(self) -> None:
        """`exit()` / `quit()`: a session ends through the API, not from inside a cell."""
        SINK.capture.warnings.append(
            "exit() does nothing here: the session keeps running (delete it through the API)"
        )

    def showtraceback(self, exc_tuple=None, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Context mode (stack_data) needs seconds for a deep stack such as a RecursionError;
        # plain formatting is instant and still collapses the repeated frames.
        try:
            _etype, _value, tb = self._get_exc_info(exc_tuple)
        except ValueError:
            tb = None
        depth = 0
        while tb is not None and depth <= DEEP_TRACEBACK_FRAMES:
            tb = tb.tb_next
            depth += 1
        if depth <= DEEP_TRACEBACK_FRAMES:
            super().showtraceback(exc_tuple, *args, **kwargs)
            return
        mode = self.InteractiveTB.mode
        self.InteractiveTB.set_mode("Plain")
        try:
            super().showtraceback(exc_tuple, *args, **kwargs)
        finally:
            self.InteractiveTB.set_mode(mode)

    def _showtraceback(self, etype, evalue, stb: list[str]) -> None:
        capture = SINK.capture
        if isinstance(etype, type) and issubclass(etype, MemoryError):
            capture.memory_error = True
        name = getattr(etype, "__name__", str(etype))
        capture.set_error(name, str(evalue), list(stb))


def build_shell(ipython_dir: str) -> SandboxShell:
    config = Config()
    config.HistoryManager.enabled = False  # no history thread may exist at fork time
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.xmode = "Context"
    config.BaseIPythonApplication.ipython_dir = ipython_dir
    # instance(): IPython.display.display() publishes through the singleton only.
    shell = SandboxShell.instance(config=config)
    shell.display_pub = _CapturingDisplayPublisher(shell=shell)
    shell.displayhook = _CapturingDisplayHook(shell=shell)
    shell.display_trap.hook = shell.displayhook
    # matplotlib missing or broken: plots are simply not captured.
    with contextlib.suppress(Exception):
        shell.enable_matplotlib("inline")
    magics = shell.magics_manager
    magics.register_function(lambda line: run_pip(shell, shlex.split(line)), "line", "pip")
    for name in ("conda", "mamba", "micromamba", "uv"):
        magics.register_function(_refuse_package_manager(name), "line", name)
    charts.register(shell)  # figures also yield application/vnd.lci.chart+json
    return shell


def _refuse_package_manager(name: str) -> Callable[[str], None]:
    def refuse(line: str) -> None:
        raise PackageNotAvailable(
            f"{name} is not available here: `%pip install <package>` installs whitelisted "
            f"packages; {_PACKAGES_HINT}"
        )

    return refuse


def run_cell(shell: InteractiveShell, code: str, execution_count: int) -> None:
    """Run one cell with Jupyter semantics; outputs land in SINK.capture."""
    shell.execution_count = execution_count
    shell.run_cell(textwrap.dedent(code), store_history=True)


def install_streams() -> None:
    sys.stdout = CapturedStream("stdout", 1)
    sys.stderr = CapturedStream("stderr", 2)
