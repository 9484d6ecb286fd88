"""The whitelist as the API sees it: what a user may ask for and why a request is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambdas.shared.packages.catalog import CatalogError, load_catalog
from lambdas.shared.packages.manifest import LayerManifest, ManifestPackage, WheelhouseSummary
from lambdas.shared.packages.requirements import requirement_name


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(manifest_path=Path("/nonexistent/manifest.json"))


def test_whitelisted_packages_are_allowed_in_any_spelling(catalog):
    specs = ["numpy", "Scikit_Learn", "pandas>=3", "sympy==1.14.0", "requests; python_version>'3'"]
    assert catalog.check(specs) == []


def test_offending_entries_are_named_with_a_reason(catalog):
    problems = catalog.problems(
        ["numpy", "leftpad", "transformers", "pandas<2", "evil @ https://x.example/e.whl"]
    )
    assert list(problems) == ["leftpad", "transformers", "pandas", "evil"]
    assert "not whitelisted" in problems["leftpad"]
    assert "torch" in problems["transformers"]  # the reason from the whitelist reaches the user
    assert "3.1.1" in problems["pandas"] and "<2" in problems["pandas"]
    assert "URL" in problems["evil"]
    assert catalog.check(["leftpad", "leftpad", "numpy"]) == ["leftpad"]


def test_requirements_text_is_parsed_and_options_urls_paths_are_offending(catalog):
    text = (
        "# analysis deps\n"
        "numpy  # inline comment\n"
        "\n"
        "scipy>=1.10 \\\n"
        "    ,<2\n"
        "-r other.txt\n"
        "--index-url https://evil.example/simple\n"
        "https://evil.example/pkg-1.0-py3-none-any.whl\n"
        "./local/pkg\n"
    )
    entries = catalog.parse_requirements(text)
    assert entries[:2] == ["numpy", "scipy>=1.10 ,<2"]
    assert catalog.check(entries[:2]) == []
    assert catalog.check(entries) == entries[2:]


def test_listing_shows_layers_and_on_demand_but_not_unavailable(catalog):
    listing = {p["name"]: p for p in catalog.listing()}
    for preinstalled in ("numpy", "pandas", "matplotlib", "ipython", "scipy"):
        assert listing[preinstalled]["source"] == "layer"
    assert listing["scikit-learn"]["source"] == "on_demand"
    assert listing["scikit-learn"]["version"] == "1.9.1"
    assert "transformers" not in listing
    assert all(set(p) == {"name", "version", "source"} for p in listing.values())


def test_modules_map_to_distributions(catalog):
    assert catalog.distribution_for_module("sklearn") == "scikit-learn"
    assert catalog.distribution_for_module("sklearn.ensemble") == "scikit-learn"
    assert catalog.distribution_for_module("PIL") == "pillow"
    assert catalog.distribution_for_module("bs4") == "beautifulsoup4"
    assert catalog.distribution_for_module("dateutil") == "python-dateutil"
    assert catalog.distribution_for_module("yaml") == "pyyaml"
    assert catalog.distribution_for_module("numpy") == "numpy"
    assert catalog.distribution_for_module("leftpad") is None


def test_pinned_specs_are_what_the_executor_installs(catalog):
    assert catalog.pinned(["Scikit_Learn>=1", "numpy", "numpy"]) == [
        "scikit-learn==1.9.1",
        "numpy==2.5.5",
    ]


def test_default_layers_respect_lambda_limits(catalog):
    assert 1 <= len(catalog.layers) <= catalog.build.max_layers <= 5
    assert catalog.build.total_budget_bytes < 262_144_000
    layered = {p.name for p in catalog.packages if p.source == "layer"}
    assert {"numpy", "pandas", "matplotlib", "ipython", "cloudpickle"} <= layered


def test_sizes_come_from_the_build_manifest(tmp_path):
    manifest = tmp_path / "manifest.json"
    LayerManifest(
        arch="x86_64",
        profile="default",
        python="3.13",
        input_hash="0" * 16,
        budget_bytes=1,
        lambda_unzipped_limit_bytes=1,
        function_reserve_bytes=0,
        total_unzipped_bytes=0,
        layers=[],
        packages=[
            ManifestPackage(
                name="NumPy", version="2.5.5", source="layer", layer="numpy-scipy", bytes=1234
            )
        ],
        wheelhouse=WheelhouseSummary(path="wheelhouse", bytes=0, wheels=0),
        build_seconds=0.0,
    ).write(manifest)
    sized = load_catalog(manifest_path=manifest)
    assert sized.get("numpy").bytes == 1234
    assert sized.get("pandas").bytes is None


def test_a_foreign_manifest_leaves_sizes_unknown(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"packages": [{"name": "numpy", "bytes": 1234}]}))
    assert load_catalog(manifest_path=manifest).get("numpy").bytes is None


def test_ci_profile_is_a_small_subset():
    ci = load_catalog(profile="ci")
    assert [layer.name for layer in ci.layers] == ["ci-basics"]
    assert {p.name for p in ci.packages} == {"tabulate", "cloudpickle", "beautifulsoup4"}
    assert ci.get("beautifulsoup4").source == "on_demand"


@pytest.mark.parametrize(
    "body",
    [
        'x = { version = "1", source = "layer:missing" }',
        'x = { source = "on_demand" }',
        'x = { version = "1", source = "somewhere" }',
        "x = [",
    ],
)
def test_malformed_whitelist_is_a_clear_error(tmp_path, body):
    path = tmp_path / "whitelist.toml"
    path.write_text(
        "[target]\npython = '3.13'\nlambda_unzipped_limit_bytes = 1\nmax_layers = 5\n"
        "function_reserve_bytes = 0\n[layers.a]\nbudget_mib = 1\n[packages]\n" + body + "\n"
    )
    with pytest.raises(CatalogError):
        load_catalog(path)


def test_one_parser_names_requirements_for_the_catalog_the_build_and_the_bundling():
    assert requirement_name("Scikit_Learn>=1") == "scikit-learn"
    assert requirement_name("  aws_lambda_powertools[tracer]>=3.20,<4 ") == "aws-lambda-powertools"
    assert requirement_name("evil @ https://x.example/e.whl") == "evil"
    assert requirement_name("-r other.txt") is None
    assert requirement_name("./local/path") is None
