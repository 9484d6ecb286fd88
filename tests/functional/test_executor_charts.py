"""Chart data next to a figure's PNG (`application/vnd.lci.chart+json`), through the engine
behind `handler()`; the same through the API over HTTP is in tests/e2e/test_playground.py."""

from __future__ import annotations

from typing import Any

from lambdas.executor.host.engine import Engine
from lambdas.executor.sandbox.charts import CHART_MIME, MAX_CHART_POINTS
from tests.functional.executor_helpers import checked, invocation

LINE_PLOT = """
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([1, 2, 3], [10.5, 20.25, 15.0], label="revenue")
ax.set_title("Quarterly revenue")
ax.set_xlabel("quarter")
ax.set_ylabel("EUR (k)")
"""


def charts(engine: Engine, code: str) -> list[dict[str, Any]]:
    result = checked(engine.invoke(invocation(code, "s-charts")))["result"]
    assert result["status"] == "ok", result["error"]
    figures = [o["data"] for o in result["outputs"] if "image/png" in o.get("data", {})]
    assert all(CHART_MIME in data for data in figures), "every figure has its chart data"
    return [data[CHART_MIME] for data in figures]


def test_a_line_plot_round_trips_title_labels_and_values(engine: Engine) -> None:
    [chart] = charts(engine, LINE_PLOT)
    assert chart == {
        "type": "line",
        "title": "Quarterly revenue",
        "x_label": "quarter",
        "y_label": "EUR (k)",
        "x_scale": "linear",
        "y_scale": "linear",
        "elements": [{"label": "revenue", "points": [[1, 10.5], [2, 20.25], [3, 15.0]]}],
    }


def test_bar_pie_scatter_and_several_axes(engine: Engine) -> None:
    bar, pie, scatter, grid = charts(
        engine,
        "import matplotlib.pyplot as plt\n"
        "plt.figure(); plt.bar(['a', 'b'], [3, 4], label='n'); plt.show()\n"
        "plt.figure(); plt.pie([1, 3], labels=['x', 'y']); plt.show()\n"
        "plt.figure(); plt.scatter([1, 2], [float('nan'), 5]); plt.show()\n"
        "fig, (left, right) = plt.subplots(1, 2); fig.suptitle('both')\n"
        "left.plot([0, 1]); right.imshow([[1, 2], [3, 4]])",
    )
    assert bar["type"] == "bar" and bar["x_scale"] == "categorical"
    assert bar["elements"] == [
        {"label": "n", "group": "a", "value": 3},
        {"label": "n", "group": "b", "value": 4},
    ]
    assert [(e["label"], e["fraction"]) for e in pie["elements"]] == [("x", 0.25), ("y", 0.75)]
    assert scatter["elements"][0]["points"] == [[1.0, None], [2.0, 5.0]]  # NaN -> null
    assert grid["type"] == "superchart" and grid["title"] == "both"
    assert [chart["type"] for chart in grid["elements"]] == ["line", "unknown"]


def test_a_huge_series_is_cut_and_says_so(engine: Engine) -> None:
    [chart] = charts(engine, "import matplotlib.pyplot as plt\nplt.plot(range(100_000))")
    assert chart["truncated"] is True
    assert len(chart["elements"][0]["points"]) == MAX_CHART_POINTS
