"""Synthesizes the stack once per test session (jsii is slow) with the real app wiring: the
cdk.json context, cdk-nag's AwsSolutions pack and the acknowledgements. Only the prebuilt
directories are small stand-ins: a one-package layer, a wheelhouse with one wheel, and a
dependency layer, so no PyPI or layer build is needed."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lambdas.shared.packages.manifest import LayerManifest, ManifestLayer, WheelhouseSummary

# jsii runs node: prefer the venv's (Node 24) over an older system one.
_VENV_BIN = Path(sys.executable).parent
if (_VENV_BIN / "node").exists():
    os.environ["JSII_NODE"] = str(_VENV_BIN / "node")

REPO_ROOT = Path(__file__).resolve().parents[2]


def cdk_json_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    return context


def layer_manifest(
    arch: str, layer_names: list[str], wheelhouse_bytes: int = 0, wheels: int = 0
) -> LayerManifest:
    """A manifest as the layers builder writes it, for layers of 10 bytes each."""
    layers = [
        ManifestLayer(
            name=name,
            path=name,
            unzipped_bytes=10,
            budget_bytes=1024,
            packages=[],
            distributions=[],
        )
        for name in layer_names
    ]
    return LayerManifest(
        arch=arch,
        profile="ci",
        python="3.13",
        input_hash="0" * 16,
        budget_bytes=262_144_000,
        lambda_unzipped_limit_bytes=262_144_000,
        function_reserve_bytes=0,
        total_unzipped_bytes=10 * len(layers),
        layers=layers,
        packages=[],
        wheelhouse=WheelhouseSummary(path="wheelhouse", bytes=wheelhouse_bytes, wheels=wheels),
        build_seconds=0.0,
    )


def write_layer_build(root: Path, arch: str = "x86_64", *, with_wheelhouse: bool = True) -> Path:
    """A minimal layers-builder output: one layer with one module (+ a wheelhouse)."""
    arch_dir = root / arch
    package = arch_dir / "tiny" / "python" / "tinypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    manifest = layer_manifest(arch, ["tiny"])
    if with_wheelhouse:
        wheelhouse = arch_dir / "wheelhouse"
        wheelhouse.mkdir()
        (wheelhouse / "index.json").write_text('{"packages": {}}\n')
        (wheelhouse / "tiny-1.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
        manifest = layer_manifest(arch, ["tiny"], wheelhouse_bytes=22, wheels=1)
    manifest.write(arch_dir / "manifest.json")
    return root


@dataclass
class Synthesized:
    template: dict[str, Any]
    outdir: Path
    stack_name: str

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == resource_type
        }


def synth_variant(base: Path, **settings: Any) -> Synthesized:
    """The stack synthesized from cdk.json's context with `settings` changed (a deploy variant),
    in its own directory under `base`; cdk-nag must be clean here too."""
    from aws_cdk import App

    from infra.config import StackConfig
    from infra.runtime_layers import read_layer_set
    from infra.stack import build

    (base / "deps" / "python").mkdir(parents=True)
    app = App(outdir=str(base / "out"), context={**cdk_json_context(), **settings})
    config = StackConfig.from_context(app.node)
    build(
        app,
        config,
        layer_set=read_layer_set(write_layer_build(base / "layers"), config.architecture),
        api_dependencies_dir=base / "deps",
    )
    stack = app.synth().get_stack_by_name(config.stack_name)
    return Synthesized(stack.template, base / "out", config.stack_name)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    from aws_cdk import App

    from infra.config import StackConfig
    from infra.runtime_layers import read_layer_set
    from infra.stack import build

    base = tmp_path_factory.mktemp("infra")
    layers_dir = write_layer_build(base / "layers")
    dependencies = base / "api-deps"
    (dependencies / "python" / "fakedep").mkdir(parents=True)
    (dependencies / "python" / "fakedep" / "__init__.py").write_text("")

    outdir = base / "cdk.out"
    app = App(outdir=str(outdir), context=cdk_json_context())
    config = StackConfig.from_context(app.node)
    build(
        app,
        config,
        layer_set=read_layer_set(layers_dir, config.architecture),
        api_dependencies_dir=dependencies,
    )
    # Raises if cdk-nag reports anything unacknowledged, like `cdk synth` would.
    assembly = app.synth()
    stack = assembly.get_stack_by_name(config.stack_name)
    return Synthesized(template=stack.template, outdir=outdir, stack_name=config.stack_name)
