"""The browser playground (`GET /`) in a real browser: Debian's chromium, headless, driven by
selenium through /usr/bin/chromedriver (selenium never downloads a driver or a browser),
against the started local stack. `make test` installs chromium when it is missing and it runs
as root; without it these tests skip, saying so. The screenshot is left in .cache/ for people
to look at."""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import REPO_ROOT, TargetStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for chromium's own sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1360,1500",
)
SCREENSHOT = REPO_ROOT / ".cache" / "playground.png"
WAIT_SECONDS = 90  # a new session's first run can pay an environment cold start on a busy box

CHART_CELL = """import matplotlib.pyplot as plt
print("sum:", sum(range(10)))
plt.plot([1, 2, 3], [2, 4, 8], label="growth")
plt.title("Doubling")
plt.xlabel("step")
plt.ylabel("value")
plt.show()
"""


def _browser_or_skip() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        reason = (
            f"no browser: {', '.join(missing)} missing; `apt-get install chromium "
            "chromium-driver` (make test does it when run as root)"
        )
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def page(driver: Any, local_stack: TargetStack) -> Any:
    """The playground with the key entered and a session created through its buttons."""
    from selenium.webdriver.common.by import By

    driver.get(local_stack.endpoint + "/")
    key_field = driver.find_element(By.ID, "api-key")
    key_field.send_keys(local_stack.keys[0])
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait_for(driver, lambda: "Key accepted" in status(driver))
    assert (
        driver.execute_script("return sessionStorage.getItem('lci.apiKey')")
        == (local_stack.keys[0])
    )
    assert driver.execute_script("return localStorage.length") == 0
    driver.find_element(By.ID, "new-session").click()
    wait_for(driver, lambda: "New session" in status(driver))
    return driver


def wait_for(driver: Any, condition: Callable[[], Any], seconds: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        time.sleep(0.1)
    raise AssertionError(f"timed out; status line: {status(driver)!r}")


def status(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "status").text)


def run_cell(driver: Any, code: str, *, finished: bool = True) -> Any:
    """Type `code` into the last cell and press Shift+Enter, as a person would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    cell = driver.find_elements(By.CSS_SELECTOR, "#cells .cell")[-1]
    editor = cell.find_element(By.TAG_NAME, "textarea")
    editor.clear()
    editor.send_keys(code.rstrip("\n"))
    editor.send_keys(Keys.SHIFT, Keys.ENTER)
    if finished:
        wait_for(driver, lambda: prompt(cell) not in ("[*]:", "[ ]:"))
    return cell


def prompt(cell: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(cell.find_element(By.CLASS_NAME, "prompt").text)


def outputs_text(cell: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(cell.find_element(By.CLASS_NAME, "outputs").text)


def severe_console_messages(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_page_loads_without_a_key_under_its_policy(local_stack: TargetStack) -> None:
    response = httpx.get(local_stack.endpoint + "/", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    for asset in ("app.js", "app.css"):
        assert httpx.get(f"{local_stack.endpoint}/?asset={asset}", timeout=30).status_code == 200


def test_a_cell_runs_and_shows_its_output_a_chart_and_the_charts_data(page: Any) -> None:
    from selenium.webdriver.common.by import By

    cell = run_cell(page, CHART_CELL)
    assert prompt(cell).startswith("[") and prompt(cell)[1:-2].isdigit(), prompt(cell)
    assert "sum: 45" in outputs_text(cell)
    figure = cell.find_element(By.CSS_SELECTOR, "img.figure")
    wait_for(page, lambda: page.execute_script("return arguments[0].naturalWidth", figure) > 100)

    cell.find_element(By.CSS_SELECTOR, ".chart-data button").click()
    table = cell.find_element(By.CSS_SELECTOR, "table.data")
    assert "Doubling" in table.find_element(By.TAG_NAME, "caption").text
    header = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    rows = [
        [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    assert header == ["step", "value"]
    assert rows == [["1", "2"], ["2", "4"], ["3", "8"]]

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.save_screenshot(str(SCREENSHOT))
    assert severe_console_messages(page) == []


def test_upload_by_drag_and_drop_and_read_it_from_code(page: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    # A drop, as the drop zone receives it from the desktop...
    page.execute_script(
        """
        const transfer = new DataTransfer();
        transfer.items.add(new File([arguments[1]], arguments[0], {type: "text/csv"}));
        document.getElementById("drop-zone").dispatchEvent(
            new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        """,
        "dropped.csv",
        "city,people\nLyon,522\n",
    )
    wait_for(page, lambda: "Uploaded dropped.csv" in status(page))
    # ...and the file chooser of the same zone.
    chosen = tmp_path / "chosen.txt"
    chosen.write_text("picked by hand")
    page.find_element(By.ID, "file-input").send_keys(str(chosen))
    wait_for(page, lambda: "Uploaded chosen.txt" in status(page))

    links = wait_for(
        page,
        lambda: (
            {
                a.text: a.get_attribute("href")
                for a in page.find_elements(By.CSS_SELECTOR, "#file-list a")
                if a.text in ("dropped.csv", "chosen.txt")
            }
            if len(page.find_elements(By.CSS_SELECTOR, "#file-list a")) >= 2
            else None
        ),
    )
    assert httpx.get(links["chosen.txt"], timeout=30).text == "picked by hand"  # presigned GET

    cell = run_cell(page, "import pandas as pd\nprint(pd.read_csv('dropped.csv').people.sum())")
    assert "522" in outputs_text(cell)


def test_html_renders_sandboxed_and_text_output_is_never_markup(page: Any) -> None:
    from selenium.webdriver.common.by import By

    title = page.title
    cell = run_cell(
        page,
        "from IPython.display import HTML, display\n"
        "display(HTML('<script>parent.document.title = \"owned\"</script><b>bold</b>'))\n"
        "print('<img src=x onerror=alert(1)>')\n"
        "import pandas as pd\n"
        "pd.DataFrame({'a': [1, 2]})",
    )
    frames = cell.find_elements(By.CSS_SELECTOR, "iframe.html-output")
    assert len(frames) == 2  # the HTML display and the DataFrame
    assert all(frame.get_attribute("sandbox") == "" for frame in frames)
    assert "<img src=x onerror=alert(1)>" in outputs_text(cell)
    assert not cell.find_elements(By.CSS_SELECTOR, ".outputs img")
    page.switch_to.frame(frames[1])
    try:
        assert page.find_elements(By.CSS_SELECTOR, "table")
    finally:
        page.switch_to.default_content()
    assert page.title == title


def test_an_error_shows_a_readable_traceback(page: Any) -> None:
    cell = run_cell(page, "def inner():\n    return 1 / 0\n\ninner()")
    text = outputs_text(cell)
    assert "ZeroDivisionError" in text and "inner()" in text
    assert "\x1b[" not in text  # no colour codes
    assert "error" in status(page)


def test_outputs_arrive_while_running_and_interrupt_keeps_state(page: Any) -> None:
    from selenium.webdriver.common.by import By

    cell = run_cell(
        page,
        "import time\nticks = 0\nwhile True:\n"
        "    ticks += 1\n    print('tick', ticks, flush=True)\n    time.sleep(0.2)",
        finished=False,
    )
    # Live output: the first ticks show while the cell is still running.
    wait_for(page, lambda: "tick 1" in outputs_text(cell) and prompt(cell) == "[*]:", 60)
    interrupt = page.find_element(By.ID, "interrupt")
    wait_for(page, interrupt.is_enabled)
    interrupt.click()
    wait_for(page, lambda: prompt(cell) != "[*]:", 30)
    assert "KeyboardInterrupt" in outputs_text(cell)
    again = run_cell(page, "ticks > 1")
    assert "True" in outputs_text(again)


def test_notebook_download_and_package_list(page: Any, local_stack: TargetStack) -> None:
    from selenium.webdriver.common.by import By

    page.find_element(By.CSS_SELECTOR, "#packages-panel summary").click()
    wait_for(page, lambda: "numpy" in page.find_element(By.ID, "package-list").text)
    assert "executions" in page.find_element(By.ID, "usage").text
    # The .ipynb is a blob download: capture what the page would save.
    page.execute_script(
        """
        window.savedNotebook = null;
        const original = URL.createObjectURL;
        URL.createObjectURL = (blob) => { blob.text().then((t) => window.savedNotebook = t);
                                          return original(blob); };
        """
    )
    page.find_element(By.ID, "download-notebook").click()
    saved = wait_for(page, lambda: page.execute_script("return window.savedNotebook"))
    notebook = json.loads(saved)
    assert notebook["nbformat"] == 4
    sources = ["".join(c["source"]) for c in notebook["cells"]]
    assert any("Doubling" in source for source in sources)
    assert severe_console_messages(page) == []


def test_delete_session(page: Any) -> None:
    from selenium.webdriver.common.by import By

    page.find_element(By.ID, "delete-session").click()
    wait_for(page, lambda: "Deleted session" in status(page))
    assert page.execute_script("return sessionStorage.getItem('lci.sessionId')") is None
