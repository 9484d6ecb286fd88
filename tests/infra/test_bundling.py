"""The API function's dependency bundle: a boto3 that knows `TenantId`, and a cache keyed by
the versions that would actually be installed (issue 12, item 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from infra import bundling

REPO_ROOT = Path(__file__).resolve().parents[2]
# botocore learned lambda.invoke's TenantId (tenant isolation) in 1.41; boto3 1.41 requires it.
FIRST_SDK_WITH_TENANT_ID = Version("1.41.0")
LAST_SDK_WITHOUT_TENANT_ID = Version("1.40.99")


def _requirements(name: str) -> list[Requirement]:
    found = []
    for raw in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and Requirement(line).name.lower() == name:
            found.append(Requirement(line))
    return found


@pytest.mark.parametrize("name", ["boto3", "botocore"])
def test_requirements_refuse_an_sdk_without_tenant_id(name: str) -> None:
    [requirement] = _requirements(name)
    assert LAST_SDK_WITHOUT_TENANT_ID not in requirement.specifier
    assert FIRST_SDK_WITH_TENANT_ID in requirement.specifier


def test_the_installed_sdk_sends_tenant_id_on_invoke() -> None:
    import boto3

    client = boto3.client("lambda", region_name="us-east-1")
    members = client.meta.service_model.operation_model("Invoke").input_shape.members
    assert "TenantId" in members


class _FakeDistribution:
    def __init__(self, name: str, version: str, requires: list[str] | None = None) -> None:
        self.metadata = {"Name": name}
        self.version = version
        self.requires = requires or []


def _installed(versions: dict[str, tuple[str, list[str]]]) -> Any:
    def distribution(name: str) -> _FakeDistribution:
        from importlib.metadata import PackageNotFoundError

        key = name.lower().replace("_", "-")
        if key not in versions:
            raise PackageNotFoundError(name)
        version, requires = versions[key]
        return _FakeDistribution(key, version, requires)

    return distribution


def test_the_dependency_cache_key_follows_resolved_versions_not_requirement_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    installs: list[list[str]] = []

    def fake_pip_install(specs: list[str], architecture: str, destination: Path) -> None:
        installs.append(list(specs))
        destination.mkdir(parents=True)

    monkeypatch.setattr(bundling, "DEPENDENCY_CACHE", tmp_path)
    monkeypatch.setattr(bundling, "_pip_install", fake_pip_install)
    specs = ["boto3>=1.41"]
    old_sdk = {
        "boto3": ("1.41.0", ["botocore<1.42,>=1.41.0", "jmespath>=0.7.1"]),
        "botocore": ("1.41.0", ["jmespath>=0.7.1", "crt; extra == 'crt'"]),
        "jmespath": ("1.0.1", []),
    }
    new_botocore = {**old_sdk, "botocore": ("1.41.5", ["jmespath>=0.7.1"])}

    monkeypatch.setattr(importlib.metadata, "distribution", _installed(old_sdk))
    first = bundling.api_dependencies_layer("x86_64", specs)
    monkeypatch.setattr(importlib.metadata, "distribution", _installed(new_botocore))
    second = bundling.api_dependencies_layer("x86_64", specs)

    assert first != second, "same requirement strings, another botocore: a new bundle"
    assert len(installs) == 2
    # The bundle installs exactly what the key names (the versions this environment runs).
    assert "botocore==1.41.5" in installs[1] and "boto3==1.41.0" in installs[1]
    assert not any(spec.startswith("crt") for spec in installs[1])  # extra not requested
    monkeypatch.setattr(importlib.metadata, "distribution", _installed(new_botocore))
    assert bundling.api_dependencies_layer("x86_64", specs) == second  # cached: no third install
    assert len(installs) == 2
