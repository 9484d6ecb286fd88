"""A plain Python cell run the way IPython's `run_cell` runs it, without its generic machinery.

IPython's `run_cell` costs ~190 us for a warm `print(2+2)` here (issue 16): an async runner,
two stream tees that copy every print into its history, trait notifications, input and AST
transformers that change nothing in a plain cell, and one compile per statement. A cell that
is plain Python — no magics, `!`, help syntax, prompts, top-level `await`, no input or AST
transformer installed, default interactivity — runs here through the same steps that matter:
the same `In`/`Out`/`_`/`_N`/`_iN`, execution count, history, `__future__` flags, displayhook
(the last expression and `;`), events (inline plots are flushed on `post_execute`), traceback
source lines and exception handling. Every other cell, and any cell this runner cannot
compile as a whole, goes to IPython's own `run_cell` before anything of it has run.
tests/unit/test_cells.py runs a corpus of cells through both and compares what a user sees.
"""

from __future__ import annotations

import ast
import bdb
import re
import sys
from typing import Any

from IPython.core.autocall import IPyAutocall
from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult, softspace
from IPython.core.macro import Macro
from IPython.core.splitinput import LineInfo
from traitlets import All

# What IPython's token transformers look for: magics and `x = %magic`, `!cmd` and `x = !cmd`,
# `obj?`, autocall escapes at a line start (`/f x`, `,f x`, `;f x`). sandbox/kernel.py skips
# the token pass of a cell without it.
IPYTHON_SYNTAX_PATTERN = r"[%!?]|^[ \t]*[/,;]"
# And what else sends a cell to IPython: prompts pasted with the code (`>>> `, `... `,
# `In [1]: `), top-level `await` / `async for` / `async with`, and a call IPython's history
# treats apart (`%paste`).
_SPECIAL_SYNTAX = re.compile(
    IPYTHON_SYNTAX_PATTERN
    + r"|^[ \t]*(?:>>>|\.\.\.)|In \[\d|await|async|get_ipython\(\)\.run_line_magic\(",
    re.MULTILINE,
)
# Lines of only blanks: IPython's `leading_indent` (textwrap.dedent) would empty them.
_BLANK_LINE = re.compile(r"^[ \t]+$", re.MULTILINE)
_COMPILE_ERRORS = (OverflowError, SyntaxError, ValueError, TypeError, MemoryError)


def _assign(owner: Any, name: str, value: Any) -> None:
    """`owner.name = value` for a trait of IPython's, without traitlets' validation and change
    notification (~4 us each, ten per cell) when nothing observes or validates that trait."""
    notifiers = owner._trait_notifiers
    if (
        any(notifiers.get(name, {}).values())
        or any(notifiers.get(All, {}).values())
        or name in owner._trait_validators
    ):
        setattr(owner, name, value)
    else:
        owner._trait_values[name] = value


def _transformers(shell: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """The input transformers of `shell`'s manager, as lists to compare."""
    manager = shell.input_transformer_manager
    return (
        list(manager.cleanup_transforms),
        list(manager.line_transforms),
        list(manager.token_transformers),
    )


class PlainCellRunner:
    """Runs plain cells of one shell; `run` says False for a cell it leaves to IPython."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        # The transformers a plain cell passes through unchanged; anything added later (an
        # extension, a user's `input_transformers_cleanup.append`) sends cells to IPython.
        self._default_transformers = _transformers(shell)
        prefilter = shell.prefilter_manager
        self._default_checkers = list(prefilter._checkers)
        # Which checker is enabled decides what a one-line cell becomes (_prefilter_keeps).
        self._default_enabled = [checker.enabled for checker in self._default_checkers]
        self._checkers_as_built = True
        for checker in self._default_checkers:
            checker.observe(self._checker_changed, "enabled")

    def _checker_changed(self, change: Any) -> None:
        enabled = [checker.enabled for checker in self._default_checkers]
        self._checkers_as_built = enabled == self._default_enabled

    def _eligible(self, raw: str) -> bool:
        shell = self.shell
        return (
            bool(raw)
            and not raw.isspace()
            and raw[0] not in " \t\r\n\f"  # leading blank lines or indentation: IPython's
            and _SPECIAL_SYNTAX.search(raw) is None
            and _BLANK_LINE.search(raw) is None
            and not shell.ast_transformers
            and not shell.input_transformers_post
            and shell.ast_node_interactivity == "last_expr"
            and not shell.trio_runner
            and not shell.custom_exceptions
            and not shell.logger.log_active
            and _transformers(shell) == self._default_transformers
        )

    def _prefilter_keeps(self, line: str) -> bool:
        """True when IPython's prefilter would give this one-line cell back unchanged, decided
        the way its default checkers decide (prefilter.py: macro, IPyAutocall, assignment,
        automagic, Python operator, autocall; the Emacs one is off) without their ~40 us of
        machinery; False when unsure (the prefilter itself then decides)."""
        shell = self.shell
        prefilter = shell.prefilter_manager
        if (
            not self._checkers_as_built
            or prefilter._checkers != self._default_checkers
            or prefilter._transformers
            or shell.autocall
        ):
            return False
        info = LineInfo(line)
        shell._last_input_line = line  # as prefilter_line leaves it
        if isinstance(shell.user_ns.get(info.ifun), (Macro, IPyAutocall)):
            return False
        rest = info.the_rest
        if rest and rest[0] in "=,":
            return True  # an assignment: never a magic or an autocall
        return not (shell.automagic and shell.find_magic(info.ifun))

    def _compile(self, cell: str, filename: str) -> tuple[Any, Any] | None:
        """The cell as (statements code, last expression code or None), compiled with the
        shell's `__future__` flags; None if it does not compile as a whole (IPython compiles
        statement by statement, so some such cells still run partly there)."""
        compiler = self.shell.compile
        try:
            tree = compiler.ast_parse(cell, filename=filename)
            body = tree.body
            last = None
            if body and isinstance(body[-1], ast.Expr):
                last = compiler(ast.Interactive([body[-1]]), filename, "single")
                body = body[:-1]
            statements = compiler(ast.Module(body, []), filename, "exec") if body else None
        except _COMPILE_ERRORS:
            return None
        return statements, last

    def run(self, raw: str, execution_count: int) -> bool:
        """Run `raw` as cell `execution_count` (store_history=True); False if IPython must."""
        if not self._eligible(raw):
            return False
        shell = self.shell
        cell = raw if raw.endswith("\n") else raw + "\n"
        if len(cell.splitlines()) == 1 and not self._prefilter_keeps(cell[:-1]):
            # One line that IPython's dynamic transformations may rewrite (automagic `pwd`,
            # `exit` autocall): IPython's, whose prefilter must run only once (autocall prints).
            return False
        # Compiled before anything runs: a cell that does not compile as a whole is IPython's.
        # The name is the one IPython gives the cell (its source lines show in tracebacks).
        cell_name = shell.compile.cache(cell, execution_count, raw_code=raw)
        compiled = self._compile(cell, cell_name)
        if compiled is None:
            return False
        statements, last = compiled

        info = ExecutionInfo(raw, True, False, True, None, None, transformed_cell=cell)
        result = ExecutionResult(info)
        result.execution_count = execution_count
        _assign(shell, "execution_count", execution_count + 1)
        events = shell.events
        try:
            events.trigger("pre_execute")
            events.trigger("pre_run_cell", info)
            self._store_inputs(execution_count, cell, raw)
            with shell.builtin_trap, shell.display_trap:
                displayhook = shell.displayhook
                _assign(displayhook, "exec_result", result)
                failed = statements is not None and self._run_code(statements, result)
                if not failed and last is not None:
                    failed = self._run_code(last, result)
                if not failed and softspace(sys.stdout, 0):
                    print()
                _assign(shell, "last_execution_succeeded", not failed)
                _assign(shell, "last_execution_result", result)
                _assign(displayhook, "exec_result", None)
        finally:
            events.trigger("post_execute")
            events.trigger("post_run_cell", result)
        return True

    def _store_inputs(self, execution_count: int, cell: str, raw: str) -> None:
        """IPython's `HistoryManager.store_inputs`: `In`, `_ih`, `_i`, `_ii`, `_iii`, `_iN`."""
        history = self.shell.history_manager
        source = cell.rstrip("\n")
        source_raw = raw.rstrip("\n")
        if history._exit_re.match(source_raw.strip()):
            return
        history.input_hist_parsed.append(source)
        history.input_hist_raw.append(source_raw)
        if history.enabled:  # a database would be written from this cache; here none is
            with history.db_input_cache_lock:
                history.db_input_cache.append((execution_count, source, source_raw))
        values = history._trait_values
        last, before, earlier = values["_i00"], values["_i"], values["_ii"]
        _assign(history, "_iii", earlier)
        _assign(history, "_ii", before)
        _assign(history, "_i", last)
        _assign(history, "_i00", source_raw)
        shell_values = {"_i": last, "_ii": before, "_iii": earlier}
        shell_values[f"_i{execution_count}"] = source_raw
        self.shell.push(shell_values, interactive=False)

    def _run_code(self, code: Any, result: Any) -> bool:
        """IPython's `run_code` for a code object; True if it raised. The traceback shown
        starts at the cell: IPython's formatter hides its own `run_code` frame by its module,
        so this frame is left out of it instead."""
        shell = self.shell
        old_excepthook, sys.excepthook = sys.excepthook, shell.excepthook
        shell.sys_excepthook = old_excepthook
        try:
            try:
                exec(code, shell.user_global_ns, shell.user_ns)  # noqa: S102 - the user's cell
            finally:
                sys.excepthook = old_excepthook
        except SystemExit as exc:
            result.error_in_exec = exc
            shell.showtraceback(exception_only=True)
        except bdb.BdbQuit as exc:
            result.error_in_exec = exc
        except BaseException as exc:
            result.error_in_exec = exc
            shell.showtraceback(
                (type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None),
                running_compiled_code=True,
            )
        else:
            return False
        return True
