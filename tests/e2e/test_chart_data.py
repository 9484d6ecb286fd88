"""Chart data through the API over real HTTP: a line plot's title, labels and plotted values come
back next to its PNG as `application/vnd.lci.chart+json` (in the result and in the notebook)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CHART_MIME = "application/vnd.lci.chart+json"


def test_a_line_plots_chart_data_round_trips_through_the_api(client: Any) -> None:
    session = client.create_session()
    try:
        result = client.execute(
            "import matplotlib.pyplot as plt\n"
            "plt.plot([0, 1, 2], [1.5, -2.0, 3.25], label='signal')\n"
            "plt.title('Sensor')\nplt.xlabel('t (s)')\nplt.ylabel('volts')",
            session_id=session.session_id,
        )
        assert result.success, result.error
        [figure] = [o["data"] for o in result.outputs if "image/png" in o.get("data", {})]
        chart = figure[CHART_MIME]
        assert chart["type"] == "line"
        assert (chart["title"], chart["x_label"], chart["y_label"]) == ("Sensor", "t (s)", "volts")
        assert chart["elements"] == [
            {"label": "signal", "points": [[0, 1.5], [1, -2.0], [2, 3.25]]}
        ]
        cells = client.notebook(session.session_id)["cells"]
        saved = [o["data"] for c in cells for o in c.get("outputs", []) if "data" in o]
        assert any(data.get(CHART_MIME) == chart for data in saved)
    finally:
        client.delete_session(session.session_id)
