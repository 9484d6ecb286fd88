"""A real (small) layer build: `python -m layers.build --profile ci` downloads a few small
pure-Python wheels, builds the layer and the wheelhouse, measures and enforces budgets."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lambdas.shared.packages.catalog import DEFAULT_WHITELIST, load_catalog
from lambdas.shared.packages.layout import build_dir, manifest_path, wheelhouse_dir
from layers import pipeline

REPO = Path(__file__).resolve().parents[2]


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "layers.build", *args],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ci_build(tmp_path_factory):
    """One ci build; the cache dir is shared with test_ondemand_install (built once)."""
    cache = tmp_path_factory.getbasetemp() / "layers-cache"
    out = tmp_path_factory.mktemp("layers-out")
    completed = run_build("--profile", "ci", "--report", "--json", "--out", str(out),
                          "--cache-dir", str(cache))  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return out, cache, completed


def test_report_json_is_the_last_stdout_line_and_matches_the_manifest(ci_build):
    out, _, completed = ci_build
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    manifest = json.loads(manifest_path("x86_64", out).read_text())
    assert [layer["name"] for layer in report["layers"]] == ["ci-basics"]
    assert report["layers"][0]["packages"] == [
        {"name": "tabulate", "version": "0.10.0"},
        {"name": "cloudpickle", "version": "3.1.3"},
    ]
    assert report["total_unzipped_bytes"] == manifest["total_unzipped_bytes"]
    assert report["budget_bytes"] == 262_144_000 - manifest["function_reserve_bytes"]


def test_manifest_sizes_are_measured_from_the_layer_tree(ci_build):
    out, _, _ = ci_build
    manifest = json.loads(manifest_path("x86_64", out).read_text())
    (layer,) = manifest["layers"]
    site = build_dir("x86_64", out) / layer["path"] / "python"
    on_disk = sum(p.lstat().st_size for p in site.rglob("*") if p.is_file())
    assert layer["unzipped_bytes"] == on_disk > 0
    assert sum(d["bytes"] for d in layer["distributions"]) == on_disk
    assert (site / "tabulate").is_dir() and (site / "cloudpickle").is_dir()
    assert not list(site.rglob("tests"))
    sources = {p["name"]: (p["source"], p["layer"]) for p in manifest["packages"]}
    assert sources == {
        "tabulate": ("layer", "ci-basics"),
        "cloudpickle": ("layer", "ci-basics"),
        "beautifulsoup4": ("on_demand", None),
    }
    # The catalog reads sizes from the manifest for GET /v1/packages-style listings.
    sized = load_catalog(profile="ci", manifest_path=manifest_path("x86_64", out))
    assert sized.get("beautifulsoup4").bytes > 0


def test_wheelhouse_index_records_each_on_demand_closure(ci_build):
    out, _, _ = ci_build
    house = wheelhouse_dir("x86_64", out)
    index = json.loads((house / "index.json").read_text())
    package = index["packages"]["beautifulsoup4"]
    assert package["version"] == "4.15.0"
    assert package["closure"][0] == "beautifulsoup4"
    assert set(package["closure"]) == {"beautifulsoup4", "soupsieve", "typing-extensions"}
    assert index["modules"] == {
        "bs4": "beautifulsoup4",
        "tabulate": "tabulate",
        "cloudpickle": "cloudpickle",
    }
    # Layered packages are served too (for environments without the layers), marked as such.
    assert index["packages"]["tabulate"]["source"] == "layer"
    assert package["source"] == "on_demand"
    for wheel in index["wheels"].values():
        assert (house / wheel["filename"]).stat().st_size == wheel["size"]
    assert (house / "simple" / "soupsieve" / "index.html").is_file()


def test_on_demand_wheels_are_valid_and_carry_precompiled_bytecode(ci_build):
    """The first import after an on-demand install must not have to compile anything."""
    from installer.sources import WheelFile

    out, _, _ = ci_build
    wheel = next(wheelhouse_dir("x86_64", out).glob("beautifulsoup4-*.whl"))
    with WheelFile.open(wheel) as source:
        source.validate_record()  # RECORD rewritten with the added .pyc
        names = [record[0][0] for record in source.get_contents()]
    assert "bs4/__pycache__/__init__.cpython-313.pyc" in names
    assert not [n for n in names if "/tests/" in n]


def test_second_run_reuses_the_cached_build(ci_build):
    out, cache, _ = ci_build
    target = build_dir("x86_64", out).resolve()
    again = run_build("--profile", "ci", "--out", str(out), "--cache-dir", str(cache))
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stderr
    assert "resolving" not in again.stderr  # no pip run at all
    assert build_dir("x86_64", out).resolve() == target


def test_over_budget_build_fails_naming_the_layer_size_and_budget(ci_build, tmp_path):
    _, cache, _ = ci_build
    whitelist = tmp_path / "whitelist.toml"
    text = DEFAULT_WHITELIST.read_text()
    section = "[profiles.ci.layers.ci-basics]\nbudget_mib = "
    text = text.replace(section + "1", section + "0.01")
    assert "budget_mib = 0.01" in text
    whitelist.write_text(text)
    out = tmp_path / "out"
    failed = run_build("--profile", "ci", "--whitelist", str(whitelist), "--out", str(out),
                       "--cache-dir", str(cache))  # fmt: skip
    assert failed.returncode == 2
    assert "layer ci-basics is" in failed.stderr
    assert "over its budget of 10,485 bytes" in failed.stderr
    assert not manifest_path("x86_64", out).exists()


def python313() -> str | None:
    """A real python3.13 binary (pyenv shims refuse to run outside their configured dirs)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13")))
    found = shutil.which("python3.13")
    if found and "/shims/" not in found:
        candidates.append(found)
    return candidates[0] if candidates else None


def test_layer_imports_under_python313_with_its_precompiled_bytecode(ci_build):
    interpreter = python313()
    if interpreter is None:
        pytest.skip("python3.13 (the Lambda runtime version) is not installed")
    out, _, _ = ci_build
    site = build_dir("x86_64", out) / "ci-basics" / "python"
    assert list((site / "tabulate" / "__pycache__").glob("*.cpython-313.pyc"))
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import tabulate, cloudpickle; "
        "print(tabulate.__file__); print(tabulate.tabulate([[1, 2]], headers=['a', 'b']))"
    )
    completed = subprocess.run(
        [interpreter, "-I", "-S", "-B", "-c", script, str(site)],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    location, table = completed.stdout.split("\n", 1)
    assert location.startswith(str(site))
    assert table.split() == ["a", "b", "---", "---", "1", "2"]


def test_unknown_profile_is_a_clear_error(tmp_path):
    failed = run_build("--profile", "nope", "--out", str(tmp_path), "--cache-dir", str(tmp_path))
    assert failed.returncode == 2
    assert "unknown profile 'nope'" in failed.stderr


def test_build_module_exposes_the_same_hash_for_the_same_inputs():
    assert pipeline.input_hash(DEFAULT_WHITELIST, "x86_64", "ci") == pipeline.input_hash(
        DEFAULT_WHITELIST, "x86_64", "ci"
    )
