"""Lambda layers: the executor's package layers (from the layers builder's manifest) and the API
function's dependency layer (from `infra.bundling`). No Docker: both are prebuilt directories.

The builder (`python -m layers.build`, see layers/pipeline.py) writes
`<out>/<arch>/<layer>/python/...`, `<out>/<arch>/wheelhouse/` and `<out>/<arch>/manifest.json`
(layout in lambdas/shared/packages/layout.py, the manifest's model in
lambdas/shared/packages/manifest.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from lambdas.shared.packages import layout
from lambdas.shared.packages.manifest import LayerManifest

# Lambda allows at most five layers per function.
MAX_LAYERS_PER_FUNCTION = 5


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
    arch_dir = layout.build_dir(architecture, layers_dir).resolve()
    manifest_path = arch_dir / layout.MANIFEST_FILENAME
    hint = f"build them with `python -m layers.build --arch {architecture} --out {layers_dir}`"
    if not manifest_path.is_file():
        raise LayersNotBuiltError(f"no layer build at {manifest_path}; {hint}")
    try:
        manifest = LayerManifest.read(manifest_path)
    except (OSError, ValueError) as error:
        raise LayersNotBuiltError(
            f"unreadable layer manifest {manifest_path}: {error}; {hint}"
        ) from error
    builds = []
    for layer in manifest.layers:
        directory = arch_dir / layer.path
        if not (directory / "python").is_dir():
            raise LayersNotBuiltError(f"layer {layer.name!r} has no {directory}/python; {hint}")
        builds.append(LayerBuild(layer.name, directory, layer.unzipped_bytes))
    if not builds:
        raise LayersNotBuiltError(f"{manifest_path} lists no layers; {hint}")
    if len(builds) > MAX_LAYERS_PER_FUNCTION:
        raise LayersNotBuiltError(
            f"{len(builds)} layers in {manifest_path}; Lambda allows {MAX_LAYERS_PER_FUNCTION}"
        )
    wheelhouse_dir = arch_dir / manifest.wheelhouse.path
    if not (wheelhouse_dir / layout.INDEX_FILENAME).is_file():
        return LayerSet(builds)
    return LayerSet(builds, wheelhouse_dir, manifest.wheelhouse.bytes)


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
