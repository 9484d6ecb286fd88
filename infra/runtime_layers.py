"""Lambda layers: the executor's package layers (from the layers builder's manifest) and the API
function's dependency layer (from `infra.bundling`). No Docker: both are prebuilt directories.

The builder (`python -m layers.build`, see layers/build.py) writes
`<out>/<arch>/<layer>/python/...`, `<out>/<arch>/wheelhouse/` and `<out>/<arch>/manifest.json`
(layout in layers/wheelhouse.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

# Lambda allows at most five layers per function.
MAX_LAYERS_PER_FUNCTION = 5
MANIFEST_NAME = "manifest.json"
WHEELHOUSE_DIRNAME = "wheelhouse"
WHEELHOUSE_INDEX = "index.json"


class LayersNotBuiltError(RuntimeError):
    """No usable layer build: the message names the command that makes one."""


@dataclass(frozen=True)
class LayerBuild:
    name: str
    directory: Path  # holds python/
    unzipped_bytes: int | None = None


@dataclass(frozen=True)
class LayerSet:
    """One build of the layers builder for one architecture."""

    layers: list[LayerBuild]
    wheelhouse_dir: Path | None = None  # on-demand wheels + index.json, if any were built
    wheelhouse_bytes: int = 0


def read_layer_set(layers_dir: Path, architecture: str) -> LayerSet:
    """The layers listed in `<layers_dir>/<architecture>/manifest.json`, in manifest order,
    and the wheelhouse next to them."""
    arch_dir = (layers_dir / architecture).resolve()
    manifest_path = arch_dir / MANIFEST_NAME
    hint = f"build them with `python -m layers.build --arch {architecture} --out {layers_dir}`"
    if not manifest_path.is_file():
        raise LayersNotBuiltError(f"no layer build at {manifest_path}; {hint}")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise LayersNotBuiltError(f"unreadable layer manifest {manifest_path}: {error}") from error
    declared = manifest.get("layers")
    if not isinstance(declared, list):
        raise LayersNotBuiltError(f"{manifest_path} has no `layers` list; {hint}")
    builds = []
    for entry in declared:
        name = entry["name"]
        directory = arch_dir / str(entry.get("path", name))
        if not (directory / "python").is_dir():
            raise LayersNotBuiltError(f"layer {name!r} has no {directory}/python; {hint}")
        builds.append(LayerBuild(name, directory, entry.get("unzipped_bytes")))
    if not builds:
        raise LayersNotBuiltError(f"{manifest_path} lists no layers; {hint}")
    if len(builds) > MAX_LAYERS_PER_FUNCTION:
        raise LayersNotBuiltError(
            f"{len(builds)} layers in {manifest_path}; Lambda allows {MAX_LAYERS_PER_FUNCTION}"
        )
    wheelhouse = manifest.get("wheelhouse") or {}
    wheelhouse_dir = arch_dir / str(wheelhouse.get("path", WHEELHOUSE_DIRNAME))
    has_wheels = (wheelhouse_dir / WHEELHOUSE_INDEX).is_file()
    if not has_wheels:
        return LayerSet(builds)
    return LayerSet(builds, wheelhouse_dir, int(wheelhouse.get("bytes") or 0))


class RuntimeLayers(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        executor_layer_builds: list[LayerBuild],
        api_dependencies_dir: Path,
        architecture: lambda_.Architecture,
    ) -> None:
        super().__init__(scope, construct_id)
        runtimes = [lambda_.Runtime.PYTHON_3_13]
        self.executor_layers: list[lambda_.ILayerVersion] = [
            lambda_.LayerVersion(
                self,
                f"Executor-{build.name}",
                code=lambda_.Code.from_asset(str(build.directory)),
                compatible_runtimes=runtimes,
                compatible_architectures=[architecture],
                description=f"Lambda Code Interpreter packages: {build.name}",
            )
            for build in executor_layer_builds
        ]
        self.api_dependencies = lambda_.LayerVersion(
            self,
            "ApiDependencies",
            code=lambda_.Code.from_asset(str(api_dependencies_dir)),
            compatible_runtimes=runtimes,
            compatible_architectures=[architecture],
            description="Lambda Code Interpreter API: Powertools, pydantic, boto3, nbformat",
        )
