"""Runs a corpus of cells in a fresh shell and prints what a user would see, as JSON.

`python -m tests.unit.cells_corpus plain` runs them the way the worker does (the plain-cell
runner of sandbox/cells.py where it applies), `... ipython` through IPython's `run_cell` only.
tests/unit/test_cells.py compares the two. Each mode needs its own process: the shell is a
singleton whose history and namespace the corpus builds up.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
from typing import Any

from lambdas.executor.sandbox import capture, kernel

CORPUS = [
    "x = 1",
    "x",
    "x + 1;",
    "print(x); x * 2",
    "y = [1, 2]\ny.append(3)\ny",
    "def f(n):\n    return 1 / n\nf(0)",
    "_",
    "__, ___",
    "_i, _ii, _iii",
    "In[1], Out[2], _2",
    "from __future__ import annotations\ndef g(a: undefined_name) -> None: pass\ng.__annotations__",
    "def h(a: also_undefined): pass\nh.__annotations__",
    "import sys; sys.exit(3)",
    "raise KeyboardInterrupt",
    "for i in range(3):\n    i",
    "if True:\n    5",
    "1\n2\n3",
    "x = (\n    1 +\n    2\n)\nx",
    "x = 1 \\\n    + 2\nx",
    "a = 1\r\nb = 2\r\na + b",
    "%%capture captured\nprint('hidden')",
    "captured.stdout",
    "!echo hi",
    "exit",
    "who_ls",
    "who_ls = 'shadowed'",
    "who_ls",
    "cd, ls = 1, 2",
    "ls",
    "%macro mac 2",
    "mac",
    "%autocall 1",
    "len 'abc'",
    "%autocall 0",
    "get_ipython().prefilter_manager.checkers[0].enabled = True",
    "1 + 1 # PYTHON-MODE",
    "get_ipython().prefilter_manager.checkers[0].enabled = False",
    "1 + 2 # PYTHON-MODE",
    "abs (-3)",
    "x.y if False else 4",
    "return 5",
    "print(1)\nreturn 5",
    "x = 1\nfrom __future__ import division",
    "def broken(:\n    pass",
    "print(\n",
    "from IPython.display import display\ndisplay(1)\n2",
    "import warnings\nwarnings.warn('careful')",
    "get_ipython().execution_count",
    "a = 1; b = 2\na, b",
    "# only a comment",
    "class C:\n    def _repr_html_(self):\n        return '<b>c</b>'\n\n"
    "    def __repr__(self):\n        return 'C()'\nC()",
    "print('before')\n1/0\nprint('after')",
    "del x\nx",
    "ValueError('v')",
    "raise SystemExit",
    "async def co():\n    return 1",
    "await co()",
    "In[3]",
    "len(In), len(Out) > 0",
    "def deep(n):\n    return deep(n + 1) if n < 30 else n['x']\ndeep(0)",
    "x = 7;",
    "x",
    "try:\n    1/0\nexcept ZeroDivisionError as exc:\n    caught = repr(exc)\ncaught",
    "import os as operating_system\noperating_system.sep",
    "_oh.get(2), _ih[2]",
    "get_ipython().last_execution_succeeded",
    "1/0",
    "get_ipython().last_execution_succeeded",
    "sorted(k for k in globals() if k.startswith('_i') and k[2:].isdigit())[:5]",
]


def _run(code: str, count: int) -> dict[str, Any]:
    cell = capture.CellCapture(1 << 20, 4 << 20)
    capture.SINK.capture = cell
    kernel.ensure_streams()
    kernel.run_cell(SHELL, code, count)
    capture.SINK.capture = capture.CellCapture(0, 0)
    return {
        "stdout": cell.stream_text("stdout"),
        "stderr": cell.stream_text("stderr"),
        "result": cell.result,
        "outputs": cell.finished_outputs(),
        "error": cell.error,
        "warnings": cell.warnings,
        "execution_count": SHELL.execution_count,
    }


def hooks() -> dict[str, Any]:
    """What extensions and users hook into the shell still sees every plain cell."""
    seen: dict[str, list[Any]] = {"counts": [], "raw_cells": []}
    SHELL.observe(lambda change: seen["counts"].append(change["new"]), "execution_count")
    SHELL.events.register("pre_run_cell", lambda info: seen["raw_cells"].append(info.raw_cell))
    first = _run("a = 40", 1)

    class Doubler(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.Constant:
            return ast.Constant(node.value * 2) if isinstance(node.value, int) else node

    SHELL.ast_transformers.append(Doubler())
    doubled = _run("a + 1", 2)
    SHELL.ast_transformers.clear()
    SHELL.input_transformers_cleanup.append(lambda lines: [s.replace("b", "a") for s in lines])
    replaced = _run("b + 0", 3)
    return {
        "first": first,
        "doubled": doubled,
        "replaced": replaced,
        "seen": seen,
        "plain_runs": None,
    }


def retained_output() -> dict[str, Any]:
    """Cells printing 1 MB each, then failing, through IPython's own `run_cell` (cells with
    magics still go there): what its history holds afterwards."""
    SHELL.plain_cells = None
    for number in range(1, 21):
        _run("print('x' * 1_000_000)\nraise ValueError('v')", number)
    history = SHELL.history_manager
    return {
        "history_outputs": sum(len(outputs) for outputs in history.outputs.values()),
        "history_exceptions": len(history.exceptions),
    }


def main(mode: str) -> None:
    global SHELL
    SHELL = kernel.build_shell(tempfile.mkdtemp())
    kernel.install_streams()
    os.chdir(tempfile.mkdtemp())
    if mode in ("hooks", "retained_output"):
        sys.__stdout__.write(json.dumps(globals()[mode](), default=repr))
        return
    runner = SHELL.plain_cells
    taken = []
    if mode == "ipython":
        SHELL.plain_cells = None
    elif runner is not None:
        run = runner.run

        def counting(raw: str, count: int) -> bool:
            ran = run(raw, count)
            taken.append(ran)
            return ran

        runner.run = counting  # type: ignore[method-assign]
    cells = [_run(code, number) for number, code in enumerate(CORPUS, start=1)]
    user = SHELL.user_ns
    report = {
        "cells": cells,
        "In": list(user["In"]),
        "Out": {str(key): repr(value) for key, value in user["Out"].items()},
        "history": [
            repr(user.get(name)) for name in ("_", "__", "___", "_i", "_ii", "_iii", "_i00")
        ],
        "numbered_inputs": {
            name: value
            for name, value in user.items()
            if name.startswith("_i") and name[2:].isdigit()
        },
        "numbered_outputs": sorted(
            name for name in user if name.startswith("_") and name[1:].isdigit()
        ),
        "variables": sorted(
            f"{name}={value!r}"
            for name, value in user.items()
            if not name.startswith("_")
            and isinstance(value, (int, str, list, tuple, dict, float, bool))
        ),
        "hidden": sorted(SHELL.user_ns_hidden),
        "compile_flags": SHELL.compile.flags,
        "execution_count": SHELL.execution_count,
        "plain_runs": sum(taken),
    }
    sys.__stdout__.write(json.dumps(report, default=repr))


if __name__ == "__main__":
    main(sys.argv[1])
