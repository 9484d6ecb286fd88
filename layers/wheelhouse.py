"""The on-demand wheelhouse: every whitelisted package's closure as wheels, plus indexes.

index.json                   read by lambdas/executor/sandbox/packages/ (closures recorded here,
                             so no resolver runs at run time; sha256 of every wheel)
<file>.whl                   slim wheels with .pyc for distributions no layer holds; the
                             published wheel for layered ones (environments without layers)
simple/<name>/index.html     PEP 503 pages (pip --index-url works too)
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
from pathlib import Path
from typing import Any

from lambdas.shared.packages import layout
from lambdas.shared.packages.catalog import Catalog
from lambdas.shared.packages.manifest import WheelhouseSummary
from lambdas.shared.packages.requirements import canonical_name
from layers.artifacts import repack_wheel
from layers.common import tree_bytes
from layers.resolve import Distribution, Plan


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_wheelhouse(
    target: Path,
    catalog: Catalog,
    plan: Plan,
    dists: dict[str, Distribution],
    arch: str,
    python: str | None,
    work: Path,
) -> WheelhouseSummary:
    target.mkdir(parents=True, exist_ok=True)
    wheels: dict[str, dict[str, Any]] = {}
    for name in sorted({d for c in plan.closures.values() for d in c}):
        wheels[name] = _place_wheel(target, dists[name], arch, python, work)
        _write_project_page(target, name, wheels[name])
    _write_root_page(target, wheels)
    index = {
        "format": 1,
        "python": catalog.build.python,
        "arch": arch,
        "wheels": wheels,
        **_package_index(catalog, plan),
    }
    (target / layout.INDEX_FILENAME).write_text(json.dumps(index, indent=1, sort_keys=True))
    return WheelhouseSummary(
        path=layout.WHEELHOUSE_DIRNAME, bytes=tree_bytes(target), wheels=len(wheels)
    )


def _place_wheel(
    target: Path, dist: Distribution, arch: str, python: str | None, work: Path
) -> dict[str, Any]:
    """Put one distribution's wheel into the wheelhouse; its `index.json` entry."""
    wheel = dist.wheel
    assert wheel is not None
    destination = target / wheel.name
    if dist.layer is None:
        repack_wheel(wheel, destination, python, work, arch)
    else:
        # Layered on Lambda; kept as published for environments without the layers.
        try:
            os.link(wheel, destination)
        except OSError:
            shutil.copy2(wheel, destination)
    return {
        "version": dist.version,
        "filename": wheel.name,
        "sha256": sha256_file(destination),
        "size": destination.stat().st_size,
    }


def _write_project_page(target: Path, name: str, wheel: dict[str, Any]) -> None:
    simple = target / "simple" / name
    simple.mkdir(parents=True, exist_ok=True)
    link = html.escape(f"../../{wheel['filename']}#sha256={wheel['sha256']}")
    (simple / "index.html").write_text(
        f'<!DOCTYPE html>\n<html><body><a href="{link}">{html.escape(wheel["filename"])}</a>'
        "</body></html>\n"
    )


def _write_root_page(target: Path, wheels: dict[str, dict[str, Any]]) -> None:
    (target / "simple").mkdir(exist_ok=True)
    (target / "simple" / "index.html").write_text(
        "<!DOCTYPE html>\n<html><body>\n"
        + "".join(f'<a href="{n}/">{n}</a>\n' for n in sorted(wheels))
        + "</body></html>\n"
    )


def _package_index(catalog: Catalog, plan: Plan) -> dict[str, Any]:
    """`packages` (version, source, modules, closure) and `modules` (import name -> package)."""
    packages: dict[str, dict[str, Any]] = {}
    modules: dict[str, str] = {}
    for package in catalog.packages:
        key = canonical_name(package.name)
        packages[key] = {
            "version": package.version,
            "source": package.source,  # "layer": present on Lambda, fetched only elsewhere
            "modules": list(package.modules),
            "closure": plan.closures[package.name],
        }
        for module in package.modules:
            modules[module] = key
    return {"packages": packages, "modules": modules}
