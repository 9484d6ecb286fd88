"""On-demand packages as `make dev` serves them (issue 11 item 5): a built wheelhouse uploaded
to the local bucket and read by the environments through the S3 front without credentials,
no PyPI. `lci run --package` and `%pip install` both install from it."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.local_only]


# The ci layer profile's on-demand package (lambdas/shared/packages/whitelist.toml), not in
# the dev virtualenv: an import that works proves the install from the wheelhouse.
ON_DEMAND_PACKAGE, ON_DEMAND_MODULE = "beautifulsoup4", "bs4"


@pytest.fixture(scope="module")
def wheelhouse_stack(tmp_path_factory: pytest.TempPathFactory):
    """A local stack with a built wheelhouse uploaded to its bucket, no PyPI: what `make dev`
    runs after `make layers` (the ci profile keeps the build to seconds)."""
    from layers import build

    from .conftest import start_stack, stop_stack

    out = tmp_path_factory.mktemp("layers-out")
    cache = tmp_path_factory.getbasetemp() / "layers-cache"  # shared with the layer tests
    assert build.main(["--profile", "ci", "--out", str(out), "--cache-dir", str(cache)]) == 0
    stack = start_stack(
        tmp_path_factory.mktemp("wheelhouse-stack"),
        {
            "LCI_LAYERS_DIR": str(out),
            "LCI_WHEELHOUSE_UPLOAD": "sync",
            "LCI_NETWORK_MODE": "isolated",
        },
    )
    yield stack
    stop_stack(stack)


def test_lci_run_with_package_installs_from_the_wheelhouse(wheelhouse_stack, tmp_path):
    """The README's `lci run job.py --timeout 120 --package ... --json`."""
    import subprocess
    import sys

    job = tmp_path / "job.py"
    job.write_text(
        f"import {ON_DEMAND_MODULE}\n"
        f"print({ON_DEMAND_MODULE}.BeautifulSoup('<p>hi</p>', 'html.parser').p.text)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-m", "lci.cli", "run", str(job), "--timeout", "120",
         "--package", ON_DEMAND_PACKAGE, "--json"],
        env=wheelhouse_stack.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    result = json.loads(completed.stdout)
    assert completed.returncode == 0, (result, completed.stderr)
    assert result["status"] == "ok", result
    assert result["stdout"] == "hi\n"
    assert any(ON_DEMAND_PACKAGE in w for w in result["warnings"]), result["warnings"]


def test_pip_install_in_a_session_installs_from_the_wheelhouse(wheelhouse_stack):
    from lci import Client

    with Client(wheelhouse_stack.endpoint, wheelhouse_stack.keys[0], timeout=300) as api:
        session = api.create_session().session_id
        installed = api.execute(f"%pip install {ON_DEMAND_PACKAGE}", session_id=session)
        assert installed.success, installed.raw
        assert "HTTP Error" not in installed.stdout + installed.stderr, installed.raw
        used = api.execute(
            f"import {ON_DEMAND_MODULE}\n{ON_DEMAND_MODULE}.__version__", session_id=session
        )
        assert used.success, used.raw
        assert used.text.strip("'") == "4.15.0"
