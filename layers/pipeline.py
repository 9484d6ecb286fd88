"""The layers build from whitelist to `manifest.json`: resolve, install, slim, precompile,
measure, enforce budgets, write the wheelhouse — cached by a hash of its inputs.

Builds live in `.cache/layers/<hash>` (hash of the whitelist, the builder's and the catalog's
source files, the architecture and the profile); `<out>/<arch>` is a symlink to the build, so a
second run with the same inputs is instant.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lambdas.shared.packages import catalog as catalog_module
from lambdas.shared.packages import layout
from lambdas.shared.packages.catalog import Catalog, load_catalog
from lambdas.shared.packages.manifest import (
    DistributionSize,
    ImportTimes,
    LayerManifest,
    ManifestLayer,
    ManifestPackage,
    PackagePin,
)
from layers import artifacts, bytecode, fontcache
from layers.common import BudgetExceeded, BuildError, host_arch, log, tree_bytes
from layers.resolve import Distribution, Plan, download, make_plan, resolve
from layers.wheelhouse import write_wheelhouse

LAYERS_DIR = Path(__file__).resolve().parent
DEFAULT_CACHE_DIR = layout.REPO_ROOT / ".cache" / "layers"
MIB = 2**20


def build_sources() -> list[Path]:
    """The source files whose change must change the build: every module of the builder and of
    the catalog package (the whitelist itself is hashed separately, it may live elsewhere)."""
    catalog_dir = Path(catalog_module.__file__).resolve().parent
    return sorted(LAYERS_DIR.glob("*.py")) + sorted(catalog_dir.glob("*.py"))


def input_hash(whitelist: Path, arch: str, profile: str) -> str:
    digest = hashlib.sha256()
    for path in (whitelist, *build_sources()):
        digest.update(path.read_bytes())
    digest.update(f"\0{arch}\0{profile}".encode())
    return digest.hexdigest()[:16]


def build(
    *, arch: str, profile: str, whitelist: Path, cache_dir: Path
) -> tuple[Path, LayerManifest]:
    """Build (or reuse) the layers; return (build directory, manifest)."""
    digest = input_hash(whitelist, arch, profile)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Concurrent builds of the same inputs (make synth, make layers, tests) take turns; the
    # second one then finds the finished build.
    with (cache_dir / f"{digest}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another build of the same inputs")
            fcntl.flock(lock, fcntl.LOCK_EX)
        root = cache_dir / digest
        manifest_file = root / layout.MANIFEST_FILENAME
        if manifest_file.is_file():
            log(f"layers for {arch}/{profile} are up to date ({root})")
            return root, LayerManifest.read(manifest_file)
        catalog = _checked_catalog(whitelist, profile)
        run = _Run(root, digest, arch, profile, catalog)
        return root, run.execute(cache_dir / f"wheels-{arch}")


def _checked_catalog(whitelist: Path, profile: str) -> Catalog:
    catalog = load_catalog(whitelist, profile=profile, manifest_path=os.devnull)
    if len(catalog.layers) > catalog.build.max_layers:
        raise BudgetExceeded(
            f"{len(catalog.layers)} layers are configured; Lambda allows {catalog.build.max_layers}"
        )
    return catalog


@dataclass
class _Run:
    """One build into `root` (a fresh directory); `execute` runs the steps in order."""

    root: Path
    digest: str
    arch: str
    profile: str
    catalog: Catalog
    dists: dict[str, Distribution] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)
    sites: dict[str, Path] = field(default_factory=dict)  # layer -> its python/ directory
    tops: dict[str, str] = field(default_factory=dict)  # "<layer>/<top-level entry>" -> dist

    @property
    def work(self) -> Path:
        return self.root / ".work"

    def execute(self, wheel_cache: Path) -> LayerManifest:
        started = time.monotonic()
        settings = self.catalog.build
        shutil.rmtree(self.root, ignore_errors=True)
        self.work.mkdir(parents=True)
        pins = [f"{p.name}=={p.version}" for p in self.catalog.packages]
        log(f"resolving {len(pins)} packages for {self.arch} (python {settings.python})")
        self.dists = resolve(pins, self.arch, settings.python, self.work)
        self.plan = make_plan(self.catalog, self.dists, self.arch)
        download(self.plan.distributions(), self.dists, self.arch, settings.python, wheel_cache)
        for layer in self.catalog.layers:
            self._install_layer(layer.name)
        python = bytecode.find_python(settings.python)
        self._precompile(python)
        layers = [
            self._measure_layer(layer.name, layer.budget_bytes) for layer in self.catalog.layers
        ]
        failures = _budget_failures(self.catalog, layers)
        log("writing the wheelhouse (slim wheels with .pyc for on-demand packages)")
        wheelhouse = write_wheelhouse(
            self.root / layout.WHEELHOUSE_DIRNAME,
            self.catalog, self.plan, self.dists, self.arch, python, self.work,
        )  # fmt: skip
        manifest = LayerManifest(
            arch=self.arch,
            profile=self.profile,
            python=settings.python,
            input_hash=self.digest,
            budget_bytes=settings.total_budget_bytes,
            lambda_unzipped_limit_bytes=settings.lambda_unzipped_limit_bytes,
            function_reserve_bytes=settings.function_reserve_bytes,
            total_unzipped_bytes=sum(layer.unzipped_bytes for layer in layers),
            layers=layers,
            packages=self._package_sizes(layers),
            wheelhouse=wheelhouse,
            build_seconds=round(time.monotonic() - started, 1),
        )
        shutil.rmtree(self.work, ignore_errors=True)
        if failures:
            self._give_up(manifest, failures)
        manifest.write(self.root / layout.MANIFEST_FILENAME)
        return manifest

    def _install_layer(self, name: str) -> None:
        site = self.root / name / "python"
        site.mkdir(parents=True)
        self.sites[name] = site
        for dist in self.plan.layers[name]:
            wheel = self.dists[dist].wheel
            assert wheel is not None
            for top in artifacts.install_wheel(wheel, site, self.work / "discard" / dist):
                self.tops[f"{name}/{top}"] = dist
        artifacts.slim(site)
        artifacts.drop_files(site, self.catalog.build.drop_files)
        saved, count, restored = artifacts.strip_shared_objects(site, self.arch)
        kept = f", kept {len(restored)} unstripped (page alignment)" if restored else ""
        log(f"{name}: stripped {count} shared objects (-{saved / MIB:.1f} MiB){kept}")

    def _precompile(self, python: str | None) -> None:
        """.pyc for the hot imports, and matplotlib's font cache seed (both need to import the
        layers, so only an interpreter of the target version and architecture can do it)."""
        settings = self.catalog.build
        build_host = host_arch()
        if python is None:
            log(f"warning: no python{settings.python} found, layers ship without .pyc")
            return
        if build_host != self.arch:
            log(f"warning: cannot import {self.arch} code on {build_host}: no .pyc precompiled")
            return
        ordered = [self.sites[layer.name] for layer in self.catalog.layers]
        files = bytecode.hot_module_files(python, ordered, settings.hot_imports, self.work)
        for site in ordered:
            bytecode.precompile(python, site, [f for f in files if site in f.parents])
        log(f"precompiled {len(files)} hot modules with {python}")
        plotting = next((site for site in ordered if (site / "matplotlib").is_dir()), None)
        if plotting is not None:
            seed = fontcache.write_seed(python, ordered, plotting)
            log(f"matplotlib font cache seeded ({seed.relative_to(plotting.parent)})")

    def _measure_layer(self, name: str, budget_bytes: int) -> ManifestLayer:
        per_dist: dict[str, int] = {}
        for entry in self.sites[name].iterdir():
            size = tree_bytes(entry) if entry.is_dir() else entry.lstat().st_size
            dist = self.tops.get(f"{name}/{entry.name}", "?")
            per_dist[dist] = per_dist.get(dist, 0) + size
        return ManifestLayer(
            name=name,
            path=name,
            unzipped_bytes=sum(per_dist.values()),
            budget_bytes=budget_bytes,
            packages=[
                PackagePin(name=p.name, version=p.version)
                for p in self.catalog.packages
                if p.layer == name
            ],
            distributions=[
                DistributionSize(name=d, version=self.dists[d].version, bytes=per_dist.get(d, 0))
                for d in self.plan.layers[name]
            ],
        )

    def _package_sizes(self, layers: list[ManifestLayer]) -> list[ManifestPackage]:
        """A layered package's own distributions in its layer; an on-demand package's unzipped
        wheels beyond what the layers already hold."""
        by_name = {layer.name: layer for layer in layers}
        house = self.root / layout.WHEELHOUSE_DIRNAME
        packages: list[ManifestPackage] = []
        for package in self.catalog.packages:
            if package.source == "layer":
                assert package.layer is not None
                distributions = by_name[package.layer].distributions
                size = sum(
                    d.bytes for d in distributions if self.plan.owners.get(d.name) == package.name
                )
            else:
                extra = [
                    d for d in self.plan.on_demand[package.name] if self.dists[d].layer is None
                ]
                wheels = [w for d in extra if (w := self.dists[d].wheel)]
                size = sum(artifacts.wheel_unzipped_bytes(house / w.name) for w in wheels)
            packages.append(
                ManifestPackage(
                    name=package.name,
                    version=package.version,
                    source=package.source,
                    layer=package.layer,
                    bytes=size,
                )
            )
        return packages

    def _give_up(self, manifest: LayerManifest, failures: list[str]) -> None:
        """Keep the sizes for inspection, drop the tree; never mark it as a finished build."""
        for layer in self.catalog.layers:
            shutil.rmtree(self.root / layer.name, ignore_errors=True)
        shutil.rmtree(self.root / layout.WHEELHOUSE_DIRNAME, ignore_errors=True)
        manifest.write(self.root / "FAILED.json")
        raise BudgetExceeded("over budget:\n  " + "\n  ".join(failures))


def _budget_failures(catalog: Catalog, layers: list[ManifestLayer]) -> list[str]:
    failures = [
        f"layer {layer.name} is {layer.unzipped_bytes:,} bytes "
        f"({layer.unzipped_bytes / MIB:.1f} MiB), over its budget of {layer.budget_bytes:,} "
        f"bytes ({layer.budget_bytes / MIB:.1f} MiB)"
        for layer in layers
        if layer.unzipped_bytes > layer.budget_bytes
    ]
    settings = catalog.build
    total = sum(layer.unzipped_bytes for layer in layers)
    if total > settings.total_budget_bytes:
        failures.append(
            f"all layers together are {total:,} bytes ({total / MIB:.1f} MiB), over the budget "
            f"of {settings.total_budget_bytes:,} bytes (Lambda's "
            f"{settings.lambda_unzipped_limit_bytes:,} minus "
            f"{settings.function_reserve_bytes:,} reserved for the executor code)"
        )
    return failures


def measure_build(root: Path, manifest: LayerManifest, hot: Iterable[str]) -> LayerManifest:
    """Time cold imports of the hot modules with and without the shipped .pyc (best of 2)."""
    python = bytecode.find_python(manifest.python)
    if python is None or host_arch() != manifest.arch:
        raise BuildError(f"cannot run {manifest.arch} python{manifest.python} code here")
    sites = [root / layer.path / "python" for layer in manifest.layers]
    modules = list(hot)
    with tempfile.TemporaryDirectory(prefix="lci-measure-") as tmp:
        times = ImportTimes(
            modules=modules,
            with_pyc=round(bytecode.measure_imports(python, sites, modules, Path(tmp), True)),
            without_pyc=round(bytecode.measure_imports(python, sites, modules, Path(tmp), False)),
        )
    measured = manifest.model_copy(update={"import_ms": times})
    measured.write(root / layout.MANIFEST_FILENAME)
    return measured


def link_output(root: Path, out: Path, arch: str) -> Path:
    """Point `<out>/<arch>` at the cached build (a symlink: instant, no copy)."""
    target = layout.build_dir(arch, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{arch}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(root.resolve(), target_is_directory=True)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    temporary.replace(target)
    return target
