"""`manifest.json`: what one run of `python -m layers.build` built, for one architecture.

Written by the builder (layers/pipeline.py); read by the CDK stack (infra/runtime_layers.py:
which layer directories to ship, where the wheelhouse is) and by the catalog (package sizes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

PackageSource = Literal["layer", "on_demand"]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True)


class PackagePin(_Entry):
    name: str
    version: str


class DistributionSize(_Entry):
    """One distribution unpacked into a layer and the bytes its top-level entries take there."""

    name: str
    version: str
    bytes: int


class ManifestLayer(_Entry):
    name: str
    path: str  # relative to the manifest's directory; holds python/
    unzipped_bytes: int
    budget_bytes: int
    packages: list[PackagePin]  # the whitelisted packages assigned to this layer
    distributions: list[DistributionSize]  # everything unpacked into it (dependencies too)


class ManifestPackage(_Entry):
    name: str
    version: str
    source: PackageSource
    layer: str | None
    bytes: int  # owned bytes in its layer, or unzipped bytes beyond the layers when on demand


class WheelhouseSummary(_Entry):
    path: str  # relative to the manifest's directory
    bytes: int
    wheels: int


class ImportTimes(_Entry):
    """`--measure-imports`: cold import of the hot modules from the layers, best of 2."""

    modules: list[str]
    with_pyc: int
    without_pyc: int


class LayerManifest(_Entry):
    format: Literal[1] = 1
    arch: str
    profile: str
    python: str
    input_hash: str
    budget_bytes: int  # all layers together: Lambda's limit minus the function reserve
    lambda_unzipped_limit_bytes: int
    function_reserve_bytes: int
    total_unzipped_bytes: int
    layers: list[ManifestLayer]
    packages: list[ManifestPackage]
    wheelhouse: WheelhouseSummary
    build_seconds: float
    import_ms: ImportTimes | None = None

    @classmethod
    def read(cls, path: Path) -> LayerManifest:
        """The manifest at `path`; OSError when unreadable, ValueError when malformed
        (pydantic's ValidationError is one)."""
        return cls.model_validate_json(path.read_bytes())

    def write(self, path: Path) -> None:
        document = self.model_dump(mode="json")
        if self.import_ms is None:
            del document["import_ms"]  # only measured builds carry it
        path.write_text(json.dumps(document, indent=1))

    def on_demand(self) -> list[ManifestPackage]:
        return [package for package in self.packages if package.source == "on_demand"]
