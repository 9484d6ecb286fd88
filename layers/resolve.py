"""Which distributions the whitelist needs, and where each one goes.

One `pip install --dry-run --report` resolves the whole whitelist for the target (manylinux
wheels, cp313, `--only-binary=:all:`); each distribution goes to the layer of the first package
(in layer order) whose dependency closure needs it; on-demand packages keep only their closure.
The exact wheels are then fetched with `pip download --no-deps` into a persistent wheel cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import parse_wheel_filename

from lambdas.shared.packages.catalog import Catalog
from lambdas.shared.packages.requirements import canonical_name, parse_requirement
from layers.common import ARCHES, BuildError, log

# Amazon Linux 2023 has glibc 2.34.
MANYLINUX = ("manylinux2014", "manylinux_2_28", "manylinux_2_34")


@dataclass
class Distribution:
    name: str  # canonical
    version: str
    requires: list[str]
    wheel: Path | None = None
    layer: str | None = None


@dataclass
class Plan:
    layers: dict[str, list[str]] = field(default_factory=dict)  # layer -> distributions
    owners: dict[str, str] = field(default_factory=dict)  # distribution -> whitelisted package
    on_demand: dict[str, list[str]] = field(default_factory=dict)  # package -> full closure
    # Every whitelisted package -> full closure: the wheelhouse serves layered packages too, so
    # an environment without the layers (the local stack's venv) can install them on demand.
    closures: dict[str, list[str]] = field(default_factory=dict)

    def distributions(self) -> set[str]:
        """Every distribution a layer or the wheelhouse needs."""
        needed = {d for ds in self.layers.values() for d in ds}
        return needed | {d for c in self.closures.values() for d in c}


def platform_args(arch: str, python: str) -> list[str]:
    tag = ARCHES[arch]["tag"]
    args: list[str] = []
    for prefix in MANYLINUX:
        args += ["--platform", f"{prefix}_{tag}"]
    return [*args, "--implementation", "cp", "--python-version", python, "--only-binary=:all:"]


def marker_environment(arch: str, python: str) -> dict[str, str]:
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": "posix",
        "platform_machine": ARCHES[arch]["machine"],
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python}.0",
        "platform_python_implementation": "CPython",
        "python_version": python,
        "sys_platform": "linux",
    }


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise BuildError(f"pip {args[0]} failed:\n{tail}")


def resolve(pins: list[str], arch: str, python: str, work: Path) -> dict[str, Distribution]:
    """One resolve of every pinned package together, for the target platform."""
    report = work / "resolve.json"
    pip(
        "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
        *platform_args(arch, python), *pins,
    )  # fmt: skip
    data = json.loads(report.read_text())
    dists: dict[str, Distribution] = {}
    for item in data["install"]:
        meta = item["metadata"]
        name = canonical_name(meta["name"])
        dists[name] = Distribution(name, meta["version"], list(meta.get("requires_dist") or []))
    return dists


def closure(
    root: str, dists: dict[str, Distribution], env: dict[str, str], excluded: Iterable[str]
) -> list[str]:
    """Run-time dependency closure of `root` (itself first), extras followed, markers evaluated."""
    skip = {canonical_name(n) for n in excluded}
    order: list[str] = []
    seen: set[tuple[str, str]] = set()
    stack: list[tuple[str, str]] = [(canonical_name(root), "")]
    while stack:
        name, extra = stack.pop()
        if (name, extra) in seen or name in skip or name not in dists:
            continue
        seen.add((name, extra))
        if name not in order:
            order.append(name)
        for spec in dists[name].requires:
            requirement = parse_requirement(spec)
            marker = requirement.marker
            if marker is not None and not marker.evaluate({**env, "extra": extra}):
                continue
            if marker is None and extra:
                continue  # unconditional requirements were followed with extra == ""
            child = canonical_name(requirement.name)
            stack.append((child, ""))
            stack.extend((child, e) for e in requirement.extras)
    return order


def make_plan(catalog: Catalog, dists: dict[str, Distribution], arch: str) -> Plan:
    env = marker_environment(arch, catalog.build.python)
    plan = Plan(layers={layer.name: [] for layer in catalog.layers})
    excluded = set(catalog.build.exclude)
    layer_excluded = excluded | set(catalog.build.drop_from_layers)
    # Layer order is the priority order: numpy goes to the first layer that needs it.
    for layer in catalog.layers:
        for package in (p for p in catalog.packages if p.layer == layer.name):
            for dist in closure(package.name, dists, env, layer_excluded):
                if dists[dist].layer is None:
                    dists[dist].layer = layer.name
                    plan.layers[layer.name].append(dist)
                    plan.owners[dist] = package.name
    for package in catalog.packages:
        plan.closures[package.name] = closure(package.name, dists, env, excluded)
        if package.source == "on_demand":
            plan.on_demand[package.name] = plan.closures[package.name]
    return plan


def _cached_wheels(wheel_cache: Path, arch: str) -> dict[tuple[str, str], Path]:
    cached: dict[tuple[str, str], Path] = {}
    for path in wheel_cache.glob("*.whl"):
        name, version, _, tags = parse_wheel_filename(path.name)
        if any(t.platform == "any" or t.platform.endswith(ARCHES[arch]["tag"]) for t in tags):
            cached[(name, str(version))] = path
    return cached


def download(
    names: Iterable[str], dists: dict[str, Distribution], arch: str, python: str, wheel_cache: Path
) -> None:
    """Fetch the exact wheels (`--no-deps`) into the persistent wheel cache."""
    wheel_cache.mkdir(parents=True, exist_ok=True)
    wanted = sorted(set(names))
    cached = _cached_wheels(wheel_cache, arch)
    missing = [n for n in wanted if (n, dists[n].version) not in cached]
    if missing:
        log(f"downloading {len(missing)} wheels for {arch}")
        pins = [f"{n}=={dists[n].version}" for n in missing]
        pip("download", "--no-deps", "--quiet", "-d", str(wheel_cache),
            *platform_args(arch, python), *pins)  # fmt: skip
        cached = _cached_wheels(wheel_cache, arch)
    for name in wanted:
        wheel = cached.get((name, dists[name].version))
        if wheel is None:
            raise BuildError(f"no {arch} wheel of {name}=={dists[name].version} was downloaded")
        dists[name].wheel = wheel
