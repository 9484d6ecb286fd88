"""The package whitelist as the API sees it: which packages exist, where they come from.

Pure Python (tomllib + packaging + pydantic): this module and `whitelist.toml` ship in the API
function; the layers builder (`layers/`) reads the same whitelist through it.

API:

    load_catalog(path=None, *, profile="default", manifest_path=None) -> Catalog
        path: whitelist TOML (default: whitelist.toml next to this file). profile: "default" or
        "ci" (a few small packages for CI builds). manifest_path: the builder's manifest.json, read
        for sizes; default `layers/build/x86_64/manifest.json` in the repository if it exists
        (absent in the API function: sizes are then None). Raises CatalogError on a bad file.

    Catalog.packages -> list[CatalogPackage]        available packages, whitelist order
        CatalogPackage(name, version, source: "layer" | "on_demand", layer: str | None,
                       modules: tuple[str, ...], bytes: int | None)
    Catalog.unavailable -> dict[str, str]           name -> reason it cannot run on Lambda
    Catalog.get(name) -> CatalogPackage | None      any spelling (`Scikit_Learn`)
    Catalog.check(specs: list[str]) -> list[str]
        The offending entries, in request order, deduplicated: names not whitelisted, unavailable
        ones, specs whose version specifier the pin does not satisfy (`pandas<2`), and entries
        that are not plain requirements (URLs, paths, `-r file`, unparsable). The name is
        returned when it can be parsed, the raw entry otherwise. [] means all allowed.
    Catalog.problems(specs) -> dict[str, str]
        The same offending entries mapped to a reason for the 400 message, e.g.
        {"transformers": "transformers is unavailable: it needs torch, …",
         "leftpad": "leftpad is not whitelisted", "pandas": "pandas==3.1.1 does not satisfy <2"}
    Catalog.parse_requirements(text: str) -> list[str]
        requirements.txt text -> the entries as specs, comments/blank lines/line continuations
        handled; option lines (`-r x`, `--index-url …`), URLs and paths are kept as entries so
        that `check` reports them as offending. Pass the result to `check`.
    Catalog.pinned(specs) -> list[str]
        Allowed specs as `name==version` (canonical names): what the executor receives.
    Catalog.distribution_for_module(module: str) -> str | None
        `"sklearn"` / `"sklearn.ensemble"` -> "scikit-learn"; None if not whitelisted.
    Catalog.listing() -> list[dict]
        [{"name", "version", "source"}] for GET /v1/packages (available packages only).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lambdas.shared.packages import layout
from lambdas.shared.packages.manifest import LayerManifest
from lambdas.shared.packages.requirements import (
    InvalidRequirement,
    canonical_name,
    parse_requirement,
)

DEFAULT_WHITELIST = Path(__file__).resolve().parent / "whitelist.toml"
DEFAULT_MANIFEST = layout.manifest_path(layout.DEFAULT_ARCH)
MIB = 1024 * 1024

Source = Literal["layer", "on_demand"]


class CatalogError(ValueError):
    """The whitelist file is malformed."""


@dataclass(frozen=True)
class CatalogPackage:
    name: str
    version: str
    source: Source
    layer: str | None = None
    modules: tuple[str, ...] = ()
    bytes: int | None = None


@dataclass(frozen=True)
class LayerSpec:
    name: str
    budget_bytes: int


@dataclass(frozen=True)
class BuildSettings:
    """Inputs of the layer builder (`[build]` plus `[target]`)."""

    python: str
    lambda_unzipped_limit_bytes: int
    max_layers: int
    function_reserve_bytes: int
    exclude: tuple[str, ...]
    drop_from_layers: tuple[str, ...]
    hot_imports: tuple[str, ...]
    drop_files: tuple[str, ...] = ()

    @property
    def total_budget_bytes(self) -> int:
        return self.lambda_unzipped_limit_bytes - self.function_reserve_bytes


@dataclass
class Catalog:
    packages: list[CatalogPackage]
    unavailable: dict[str, str]
    layers: list[LayerSpec]
    build: BuildSettings
    profile: str = "default"
    _by_name: dict[str, CatalogPackage] = field(default_factory=dict, repr=False)
    _by_module: dict[str, str] = field(default_factory=dict, repr=False)
    _unavailable: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {canonical_name(p.name): p for p in self.packages}
        self._unavailable = {canonical_name(n): r for n, r in self.unavailable.items()}
        for package in self.packages:
            for module in package.modules:
                self._by_module[module] = package.name

    # -- lookups ------------------------------------------------------------------------------

    def get(self, name: str) -> CatalogPackage | None:
        return self._by_name.get(canonical_name(name))

    def distribution_for_module(self, module: str) -> str | None:
        return self._by_module.get(module.split(".", 1)[0])

    def listing(self) -> list[dict[str, str]]:
        return [{"name": p.name, "version": p.version, "source": p.source} for p in self.packages]

    # -- validation ---------------------------------------------------------------------------

    def problems(self, specs: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for raw in specs:
            entry = raw.strip()
            try:
                requirement = parse_requirement(entry)
            except InvalidRequirement:
                found.setdefault(entry, f"{entry!r} is not a plain package requirement")
                continue
            name = requirement.name
            key = canonical_name(name)
            if requirement.url:
                found.setdefault(name, f"{name}: URLs are not allowed, only whitelisted names")
            elif key in self._unavailable:
                found.setdefault(name, f"{name} is unavailable: {self._unavailable[key]}")
            elif (package := self._by_name.get(key)) is None:
                found.setdefault(name, f"{name} is not whitelisted")
            elif requirement.specifier and not requirement.specifier.contains(
                package.version, prereleases=True
            ):
                found.setdefault(
                    name,
                    f"{package.name}=={package.version} is pinned, which does not satisfy "
                    f"{requirement.specifier}",
                )
        return found

    def check(self, specs: list[str]) -> list[str]:
        return list(self.problems(specs))

    def pinned(self, specs: list[str]) -> list[str]:
        result: list[str] = []
        for raw in specs:
            try:
                package = self.get(parse_requirement(raw).name)
            except InvalidRequirement:
                continue
            if package is not None:
                pin = f"{canonical_name(package.name)}=={package.version}"
                if pin not in result:
                    result.append(pin)
        return result

    @staticmethod
    def parse_requirements(text: str) -> list[str]:
        entries: list[str] = []
        for line in _logical_lines(text):
            # A comment starts at a `#` preceded by whitespace (or at the start of the line).
            line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0]
            if line.strip():
                entries.append(" ".join(line.split()))
        return entries


def _logical_lines(text: str) -> list[str]:
    """Join backslash continuations, as pip does."""
    lines: list[str] = []
    current = ""
    for physical in text.splitlines():
        if physical.endswith("\\"):
            current += physical[:-1] + " "
            continue
        lines.append(current + physical)
        current = ""
    if current:
        lines.append(current)
    return lines


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def read_whitelist(path: str | Path | None = None) -> dict[str, Any]:
    """The raw whitelist document (the builder hashes and reads the same file)."""
    whitelist = Path(path) if path is not None else DEFAULT_WHITELIST
    try:
        return tomllib.loads(whitelist.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read the whitelist {whitelist}: {exc}") from exc


def _package_entries(
    document: dict[str, Any], profile: str
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """(name, entry) pairs and layer table of the profile, entries already overridden."""
    base = document.get("packages", {})
    if profile == "default":
        return list(base.items()), document.get("layers", {})
    profiles = document.get("profiles", {})
    if profile not in profiles:
        raise CatalogError(f"unknown profile {profile!r}; known: default, {', '.join(profiles)}")
    chosen = profiles[profile]
    entries: list[tuple[str, dict[str, Any]]] = []
    for name, override in chosen.get("packages", {}).items():
        if name not in base:
            raise CatalogError(f"profile {profile}: {name} is not in [packages]")
        entry = dict(base[name])
        entry["source"] = override if isinstance(override, str) else override["source"]
        entries.append((name, entry))
    return entries, chosen.get("layers", {})


def _build_settings(document: dict[str, Any], profile: str) -> BuildSettings:
    target = document.get("target", {})
    build = document.get("build", {})
    overrides = document.get("profiles", {}).get(profile, {}) if profile != "default" else {}
    try:
        return BuildSettings(
            python=str(target["python"]),
            lambda_unzipped_limit_bytes=int(target["lambda_unzipped_limit_bytes"]),
            max_layers=int(target["max_layers"]),
            function_reserve_bytes=int(target["function_reserve_bytes"]),
            exclude=tuple(build.get("exclude", ())),
            drop_from_layers=tuple(build.get("drop_from_layers", ())),
            hot_imports=tuple(overrides.get("hot_imports", build.get("hot_imports", ()))),
            drop_files=tuple(build.get("drop_files", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"whitelist [target]/[build] is incomplete: {exc}") from exc


def _manifest_sizes(manifest_path: Path | None) -> dict[str, int]:
    if manifest_path is None or not manifest_path.is_file():
        return {}
    try:
        manifest = LayerManifest.read(manifest_path)
    except (OSError, ValueError):
        return {}  # sizes are informative only; a stale or foreign manifest must not break us
    return {canonical_name(package.name): package.bytes for package in manifest.packages}


def load_catalog(
    path: str | Path | None = None,
    *,
    profile: str = "default",
    manifest_path: str | Path | None = None,
) -> Catalog:
    document = read_whitelist(path)
    entries, layer_table = _package_entries(document, profile)
    layers = [
        LayerSpec(name=name, budget_bytes=int(float(spec["budget_mib"]) * MIB))
        for name, spec in layer_table.items()
    ]
    layer_names = {layer.name for layer in layers}
    sizes = _manifest_sizes(Path(manifest_path) if manifest_path else DEFAULT_MANIFEST)
    packages: list[CatalogPackage] = []
    unavailable: dict[str, str] = {}
    for name, entry in entries:
        source = str(entry.get("source", ""))
        if source == "unavailable":
            unavailable[name] = str(entry.get("reason") or "it cannot run on AWS Lambda")
            continue
        version = entry.get("version")
        if not version:
            raise CatalogError(f"{name}: a pinned version is required")
        layer: str | None = None
        if source.startswith("layer:"):
            layer = source.removeprefix("layer:")
            if layer not in layer_names:
                raise CatalogError(f"{name}: layer {layer!r} has no [layers.{layer}] budget")
            kind: Source = "layer"
        elif source == "on_demand":
            kind = "on_demand"
        else:
            raise CatalogError(f"{name}: source must be layer:<name>, on_demand or unavailable")
        modules = tuple(entry.get("modules") or (name.replace("-", "_"),))
        packages.append(
            CatalogPackage(
                name=name,
                version=str(version),
                source=kind,
                layer=layer,
                modules=modules,
                bytes=sizes.get(canonical_name(name)),
            )
        )
    return Catalog(
        packages=packages,
        unavailable=unavailable,
        layers=layers,
        build=_build_settings(document, profile),
        profile=profile,
    )
