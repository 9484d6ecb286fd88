"""Chart data: a matplotlib figure also yields `application/vnd.lci.chart+json`.

A model (or the playground) cannot read numbers off a PNG, so every displayed figure also gets
a description of what it plots, in the shape E2B's code interpreter uses for its charts: per
axes the chart type (`line`, `scatter`, `bar`, `pie`, else `unknown`), title, axis labels and
scales, and the plotted series; a figure with several axes is a `superchart` whose elements are
those charts. It reads the artists only: nothing is drawn twice.

Registered on the shell by `kernel.build_shell` (one line); a failure here yields no chart data,
never an error in the cell (IPython would print a formatter's exception as the cell's error).
"""

from __future__ import annotations

import math
from typing import Any

from IPython.core.formatters import BaseFormatter
from traitlets import ObjectName, Unicode

CHART_MIME = "application/vnd.lci.chart+json"
# Plotted values described per figure; past this a series is cut and the chart says
# `truncated: true` (a million-point line would otherwise crowd the PNG out of the result).
MAX_CHART_POINTS = 5_000


class ChartFormatter(BaseFormatter):
    format_type = Unicode(CHART_MIME)
    _return_type = (dict,)
    print_method = ObjectName("_repr_lci_chart_")

    def pop(self, typ: Any, default: Any = None) -> Any:
        # Turning inline plots on (IPython's select_figure_formats, run by the zygote's preload
        # or by matplotlib_inline when an early worker imports pyplot) pops Figure from every
        # formatter; the chart data must survive that.
        if (
            getattr(typ, "__module__", None) == "matplotlib.figure"
            or typ == "matplotlib.figure.Figure"
        ):
            return default
        return super().pop(typ, default)


def register(shell: Any) -> None:
    formatter = ChartFormatter(parent=shell.display_formatter)
    # By name: matplotlib is imported only by code that makes a figure.
    formatter.for_type_by_name("matplotlib.figure", "Figure", figure_chart)
    shell.display_formatter.formatters[CHART_MIME] = formatter


def figure_chart(figure: Any) -> dict[str, Any] | None:
    try:
        return _Extraction().figure(figure)
    except Exception:
        return None


class _Extraction:
    def __init__(self) -> None:
        self.points_left = MAX_CHART_POINTS
        self.truncated = False

    def figure(self, figure: Any) -> dict[str, Any] | None:
        charts = [chart for ax in figure.get_axes() if (chart := self.axes(ax)) is not None]
        if not charts:
            return None
        if len(charts) == 1:
            chart = charts[0]
        else:
            suptitle = figure.get_suptitle() if hasattr(figure, "get_suptitle") else ""
            chart = {"type": "superchart", "title": suptitle or None, "elements": charts}
        if self.truncated:
            chart["truncated"] = True
        return chart

    def axes(self, ax: Any) -> dict[str, Any] | None:
        from matplotlib.collections import PathCollection
        from matplotlib.container import BarContainer
        from matplotlib.patches import Wedge

        lines = [line for line in ax.lines if len(line.get_xdata(orig=False))]
        scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        wedges = [p for p in ax.patches if isinstance(p, Wedge)]
        if not (lines or ax.collections or ax.patches or ax.images):
            return None  # an empty subplot
        kinds = [kind for kind, found in
                 (("line", lines), ("scatter", scatters), ("bar", bars), ("pie", wedges))
                 if found]  # fmt: skip
        title = ax.get_title() or None
        if kinds == ["pie"]:
            return {"type": "pie", "title": title, "elements": [self.wedge(w) for w in wedges]}
        chart: dict[str, Any] = {
            "type": kinds[0] if len(kinds) == 1 else "unknown",
            "title": title,
            "x_label": ax.get_xlabel() or None,
            "y_label": ax.get_ylabel() or None,
            "x_scale": _scale(ax.xaxis, ax.get_xscale()),
            "y_scale": _scale(ax.yaxis, ax.get_yscale()),
            "elements": [],
        }
        if chart["type"] == "line":
            chart["elements"] = [self.line(line) for line in lines]
        elif chart["type"] == "scatter":
            chart["elements"] = [self.scatter(ax, c) for c in scatters]
        elif chart["type"] == "bar":
            chart["elements"] = [bar for c in bars for bar in self.bars(ax, c)]
        return chart

    def take(self, wanted: int) -> int:
        granted = min(wanted, self.points_left)
        self.points_left -= granted
        if granted < wanted:
            self.truncated = True
        return granted

    def line(self, line: Any) -> dict[str, Any]:
        xs = _values(line.get_xdata(orig=True))
        ys = _values(line.get_ydata(orig=True))
        count = self.take(min(len(xs), len(ys)))
        points = [[x, y] for x, y in zip(xs[:count], ys[:count], strict=True)]
        return {"label": _label(line), "points": points}

    def scatter(self, ax: Any, collection: Any) -> dict[str, Any]:
        import numpy as np

        offsets = np.ma.getdata(collection.get_offsets())  # a NaN point is masked whole
        count = self.take(len(offsets))
        points = [[_axis_value(ax.xaxis, x), _axis_value(ax.yaxis, y)] for x, y in offsets[:count]]
        return {"label": _label(collection), "points": points}

    def bars(self, ax: Any, container: Any) -> list[dict[str, Any]]:
        horizontal = getattr(container, "orientation", "vertical") == "horizontal"
        label = _label(container)
        rects = container.patches[: self.take(len(container.patches))]
        elements = []
        for rect in rects:
            if horizontal:
                group = _axis_value(ax.yaxis, rect.get_y() + rect.get_height() / 2)
                value = rect.get_width()
            else:
                group = _axis_value(ax.xaxis, rect.get_x() + rect.get_width() / 2)
                value = rect.get_height()
            elements.append({"label": label, "group": group, "value": _value(value)})
        return elements

    def wedge(self, wedge: Any) -> dict[str, Any]:
        self.take(1)
        angle = float(wedge.theta2 - wedge.theta1)
        return {
            "label": _label(wedge),
            "angle": _value(angle),
            "fraction": _value(angle / 360.0),
            "radius": _value(wedge.r),
        }


def _label(artist: Any) -> str | None:
    label = artist.get_label()
    # matplotlib names unlabelled artists "_child0", "_nolegend_"...: no label given.
    return None if not label or str(label).startswith("_") else str(label)


def _scale(axis: Any, scale: str) -> str:
    from matplotlib import category, dates

    converter = axis.get_converter() if hasattr(axis, "get_converter") else axis.converter
    if isinstance(converter, category.StrCategoryConverter):
        return "categorical"
    if isinstance(converter, dates.DateConverter | dates.ConciseDateConverter) or (
        type(converter).__name__ == "_SwitchableDateConverter"
    ):
        return "datetime"
    return str(scale)


def _axis_value(axis: Any, number: Any) -> Any:
    """A position on an axis as the user gave it: the category's name, the date, or the number."""
    scale = _scale(axis, "")
    if scale == "categorical":
        mapping = getattr(axis.get_units(), "_mapping", {}) or {}
        for name, position in mapping.items():
            if math.isclose(float(position), float(number), abs_tol=1e-9):
                return str(name)
    if scale == "datetime":
        from matplotlib import dates

        return dates.num2date(float(number)).isoformat()
    return _value(number)


def _values(data: Any) -> list[Any]:
    import numpy as np

    array = np.asarray(data)
    if array.dtype.kind == "M":  # datetime64: .tolist() would give integers for ns precision
        return [str(text) for text in np.datetime_as_string(array)]
    return [_value(item) for item in array.ravel().tolist()]


def _value(item: Any) -> Any:
    if hasattr(item, "item") and not isinstance(item, str | bytes):
        item = item.item()  # numpy scalar
    if isinstance(item, bool | int | str) or item is None:
        return item
    if isinstance(item, float):
        return item if math.isfinite(item) else None  # JSON has no NaN / inf
    if hasattr(item, "isoformat"):
        return item.isoformat()
    return str(item)
