"""On-demand packages through the executor: a whitelisted package from a wheelhouse is
installed when the invocation lists it, or transparently at its first import."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lambdas.executor.host.engine import Engine
from tests.functional.executor_helpers import checked, invocation

DIST = "lci-demo-pkg"
MODULE = "lci_demo_pkg"
WHEEL = f"{MODULE}-1.0-py3-none-any.whl"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-package wheelhouse in the layout layers/wheelhouse.py builds (file:// URL)."""
    root = tmp_path_factory.mktemp("wheelhouse")
    files = {
        f"{MODULE}/__init__.py": b"VALUE = 42\n",
        f"{MODULE}-1.0.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 1.0\n".encode()
        ),
        f"{MODULE}-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record_path = f"{MODULE}-1.0.dist-info/RECORD"
    record = "\n".join([*(_record_line(p, d) for p, d in files.items()), f"{record_path},,"])
    with zipfile.ZipFile(root / WHEEL, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(record_path, record + "\n")
    wheel = (root / WHEEL).read_bytes()
    index = {
        "format": 1,
        "python": "3.13",
        "arch": "x86_64",
        "packages": {DIST: {"version": "1.0", "modules": [MODULE], "closure": [DIST]}},
        "wheels": {
            DIST: {
                "version": "1.0",
                "filename": WHEEL,
                "sha256": hashlib.sha256(wheel).hexdigest(),
                "size": len(wheel),
            }
        },
        "modules": {MODULE: DIST},
    }
    (root / "index.json").write_text(json.dumps(index))
    return Path(root).as_uri() + "/"


@pytest.fixture
def run(engine: Engine, wheelhouse: str) -> Callable[..., dict[str, Any]]:
    """Run code in a session of the environment with the wheelhouse configured."""

    def run(code: str, session_id: str, **fields: Any) -> dict[str, Any]:
        access = {"index_url": wheelhouse, "allow_pypi": False}
        event = invocation(code, session_id, wheelhouse=access, **fields)
        return checked(engine.invoke(event))["result"]

    return run


def test_first_import_installs_then_listed_packages_are_ready(run) -> None:
    hooked = run(f"import {MODULE}\n{MODULE}.VALUE", "s-hook")
    assert hooked["status"] == "ok", hooked["error"]
    assert hooked["result"] == {"text/plain": "42"}
    assert any(DIST in warning for warning in hooked["warnings"])

    # Another session of the environment lists it: the environment's cache already has it.
    listed = run(f"import {MODULE}\n{MODULE}.VALUE + 1", "s-listed", packages=[DIST])
    assert listed["result"] == {"text/plain": "43"}


def test_a_package_that_cannot_be_installed_is_a_clear_error(run) -> None:
    result = run("1", "s-missing", packages=["not-in-wheelhouse"])
    assert result["status"] == "error"
    assert result["error"]["name"] == "PackageInstallError"
    assert "not-in-wheelhouse" in result["error"]["value"]


def test_pip_install_in_a_cell_installs_whitelisted_packages(run) -> None:
    installed = run(f"%pip install -q {DIST}", "s-pip")
    assert installed["status"] == "ok", installed["error"]
    assert f"{DIST} 1.0 is ready to import" in installed["stdout"]
    imported = run(f"import {MODULE}\n{MODULE}.VALUE", "s-pip")
    assert imported["result"] == {"text/plain": "42"}
    assert run(f"%pip install {DIST}==1.0", "s-pip")["status"] == "ok"
    # A pin the whitelist cannot satisfy fails: the code that asked for 2.0 would get 1.0.
    for code in (f"%pip install -q {DIST}==2.0", f"!pip install {DIST}>=2"):
        pinned = run(code, "s-pip")
        assert pinned["status"] == "error" and pinned["error"]["name"] == "PackageNotAvailable"
        assert f"this deployment pins {DIST} at 1.0" in pinned["error"]["value"], code


def test_pip_never_reaches_for_a_network_the_sandbox_does_not_have(run) -> None:
    for code in ("!pip install not-whitelisted", "%pip install not-whitelisted"):
        refused = run(code, "s-pip-refused")
        assert refused["status"] == "error" and refused["error"]["name"] == "PackageNotAvailable"
        assert "not-whitelisted" in refused["error"]["value"]
        assert "/v1/packages" in refused["error"]["value"]
    for code in (
        "%pip install -r requirements.txt",
        "%pip uninstall numpy",
        "%conda install numpy",
        "!python -m pip install --index-url https://example.com/simple numpy",
    ):
        assert run(code, "s-pip-refused")["error"]["name"] == "PackageNotAvailable", code
    listed = run("%pip list", "s-pip-refused")
    assert listed["status"] == "ok" and "numpy " in listed["stdout"]
