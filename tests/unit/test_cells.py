"""The plain-cell runner (sandbox/cells.py) against IPython's own `run_cell`.

Each side runs in a fresh process (tests/unit/cells_corpus.py): the shell is a singleton whose
history and namespace the corpus builds up cell by cell.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from typing import Any

import pytest

from tests.unit.cells_corpus import CORPUS

REPO_ROOT = __file__.rsplit("/tests/", 1)[0]


@cache
def _report(mode: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.unit.cells_corpus", mode],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(completed.stdout)


def test_the_corpus_mostly_takes_the_plain_path() -> None:
    # Magics, `!`, `await`, autocall, cells that do not compile whole go to IPython; the rest
    # must not, or the comparison below would prove nothing.
    assert _report("plain")["plain_runs"] >= 40


@pytest.mark.parametrize("number", range(1, len(CORPUS) + 1))
def test_each_cell_shows_what_ipython_shows(number: int) -> None:
    plain = _report("plain")["cells"][number - 1]
    ipython = _report("ipython")["cells"][number - 1]
    assert plain == ipython, CORPUS[number - 1]


@pytest.mark.parametrize(
    "key",
    [
        *("In", "Out", "history", "numbered_inputs", "numbered_outputs", "variables"),
        *("hidden", "compile_flags", "execution_count"),
    ],
)
def test_the_session_ends_in_the_same_state(key: str) -> None:
    assert _report("plain")[key] == _report("ipython")[key]


def test_the_corpus_covers_results_errors_and_streams() -> None:
    cells = _report("ipython")["cells"]
    assert sum(1 for cell in cells if cell["result"]) >= 20
    assert sum(1 for cell in cells if cell["error"]) >= 10
    assert any(cell["stdout"] for cell in cells) and any(cell["stderr"] for cell in cells)


def test_observers_events_and_transformers_still_see_every_cell() -> None:
    report = _report("hooks")
    # An observer of execution_count is notified: the runner only skips traitlets' machinery
    # for traits nobody watches.
    assert report["seen"]["counts"] == [2, 3, 4]
    assert report["seen"]["raw_cells"] == ["a = 40", "a + 1", "b + 0"]
    # An AST transformer (every int doubled) and an input transformer (b -> a) were applied:
    # such cells go through IPython.
    assert report["doubled"]["result"] == {"text/plain": "42"}
    assert report["replaced"]["result"] == {"text/plain": "40"}


def test_the_shell_keeps_no_copy_of_what_cells_printed() -> None:
    # IPython 9 keeps every printed text and a formatted traceback of every failed cell in
    # its history, for the life of the session: 20 cells of 1 MB held 20 MB.
    report = _report("retained_output")
    assert report["history_outputs"] == 0
    assert report["history_exceptions"] == 0
