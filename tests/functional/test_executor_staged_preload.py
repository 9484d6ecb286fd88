"""Staged start of an environment (sandbox/zygote.py): the zygote forks its first worker before
the data stack is preloaded; a session that arrives that early imports what it uses and gets
correct results, and sessions started once the preload completed find it all loaded."""

from __future__ import annotations

import ast
from collections.abc import Iterator

import pytest

from lambdas.executor.host.engine import Engine
from lambdas.executor.settings import ExecutorSettings
from tests.functional.executor_helpers import checked, invocation

PRELOADED_AT_CELL_START = (
    "import sys\n[name in sys.modules for name in ('numpy', 'pandas', 'matplotlib.pyplot')]"
)
DATA_CELL = (
    "import numpy as np, pandas as pd\n"
    "frame = pd.DataFrame({'a': np.arange(4), 'b': ['w', 'x', 'y', 'z']})\n"
    "[int(frame['a'].sum()), frame.shape[0], str(frame['b'].iloc[-1])]"
)
PLOT_CELL = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('staged')\nplt.show()"


@pytest.fixture
def engine(tmp_path) -> Iterator[Engine]:
    engine = Engine(ExecutorSettings(LCI_TMP_ROOT=str(tmp_path)))
    yield engine
    engine.shutdown()


def _run(engine: Engine, code: str, session_id: str | None) -> dict:
    result = checked(engine.invoke(invocation(code, session_id)))["result"]
    assert result["status"] == "ok", result
    return result


def _value(result: dict) -> object:
    return ast.literal_eval(result["result"]["text/plain"])


def _has_png(result: dict) -> bool:
    return any(
        output["output_type"] == "display_data" and "image/png" in output["data"]
        for output in result["outputs"]
    )


def test_a_session_arriving_before_the_preload_gets_correct_results(engine: Engine) -> None:
    first = _run(engine, PRELOADED_AT_CELL_START, "s-early")
    assert _value(first) == [False, False, False]  # forked before the data stack was loaded
    assert engine.preload_report is None
    assert _value(_run(engine, DATA_CELL, "s-early")) == [6, 4, "z"]
    assert _has_png(_run(engine, PLOT_CELL, "s-early"))  # inline plots without preloading
    # A one-shot run of the same moment, in a worker of its own.
    assert _value(_run(engine, DATA_CELL, None)) == [6, 4, "z"]


def test_sessions_after_the_preload_find_the_data_stack_loaded(engine: Engine) -> None:
    _run(engine, "x = 1", "s-early")
    assert engine.wait_until_preloaded(timeout_s=120)
    report = engine.preload_report
    assert report is not None
    assert {"numpy", "pandas", "matplotlib"} <= set(report["modules"])
    assert report["immortal_objects"] > 0  # the memory shaping ran once the preload completed
    later = _run(engine, PRELOADED_AT_CELL_START, "s-later")
    assert _value(later) == [True, True, True]
    assert _value(_run(engine, DATA_CELL, "s-later")) == [6, 4, "z"]
    assert _has_png(_run(engine, PLOT_CELL, "s-later"))
    # The early session keeps its worker and its variables.
    assert _run(engine, "x + 1", "s-early")["result"] == {"text/plain": "2"}


def test_workers_forked_before_and_after_the_preload_draw_their_own_random_numbers(
    engine: Engine,
) -> None:
    code = "import numpy\nnumpy.random.randint(0, 2**31)"
    early = [_run(engine, code, None)["result"]["text/plain"] for _ in range(2)]
    assert engine.wait_until_preloaded(timeout_s=120)
    later = [_run(engine, code, None)["result"]["text/plain"] for _ in range(2)]
    assert len(set(early + later)) == 4
