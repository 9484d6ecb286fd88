"""The cache of installed distributions, and installs from the wheelhouse into it."""

from __future__ import annotations

# The zygote imports this module: only cheap, already-loaded modules at the top; the rest
# (zipfile, installer, ...) when an install actually happens.
import _imp
import importlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from lambdas.executor.sandbox.packages.index import (
    PackageInstallError,
    WheelhouseIndex,
    fetch,
    get_index,
    normalize_name,
    requirement_name,
)
from lambdas.executor.sandbox.packages.pypi import install_from_pypi

_DISTS_DIRNAME = "dists"


def _dists_root(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / _DISTS_DIRNAME


def _add_to_sys_path(path: Path) -> bool:
    entry = str(path)
    if entry in sys.path:
        return False
    sys.path.append(entry)
    return True


def activate_cache(cache_dir: str | os.PathLike[str]) -> list[str]:
    """Put every distribution installed earlier in this environment on `sys.path`."""
    root = _dists_root(cache_dir)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    added = [str(root / n) for n in names if not n.startswith(".") and _add_to_sys_path(root / n)]
    if added:
        importlib.invalidate_caches()
    return added


def _installed_version(dist: str) -> str | None:
    """Version of `dist` if importable from the current `sys.path` (layers, venv, cache)."""
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _install_wheel(wheel_path: Path, target: Path) -> None:
    """Unpack one wheel into `target` (its own site directory) with `installer`."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    scheme = {
        "purelib": str(target),
        "platlib": str(target),
        "headers": str(target / "_include"),
        "scripts": str(target / "_bin"),
        "data": str(target / "_data"),
    }
    destination = SchemeDictionaryDestination(
        scheme,
        interpreter=sys.executable,
        script_kind="posix",
        bytecode_optimization_levels=(),
    )
    _quiet_installer_pycache_warning()
    with WheelFile.open(wheel_path) as source:
        install(source, destination, additional_metadata={"INSTALLER": b"lci-on-demand\n"})
    _install_bytecode(wheel_path, target)


_pycache_warning_silenced = False


def _quiet_installer_pycache_warning() -> None:
    """installer skips (and warns about) `__pycache__` entries; `_install_bytecode` adds them on
    purpose. A process-wide filter for exactly that message: catch_warnings is not thread-safe."""
    global _pycache_warning_silenced
    if not _pycache_warning_silenced:
        warnings.filterwarnings(
            "ignore", message=r"Skip installing .*__pycache__", category=RuntimeWarning
        )
        _pycache_warning_silenced = True


def _install_bytecode(wheel_path: Path, target: Path) -> None:
    """Add the builder's precompiled .pyc (unchecked-hash) of the wheel's modules.

    installer refuses `__pycache__` entries because a .pyc can disagree with its source; these
    come from our own builder, inside a wheel whose sha256 the index vouches for, and they are
    what makes the first import after an install fast (nothing to compile)."""
    import zipfile

    with zipfile.ZipFile(wheel_path) as archive:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if (
                info.filename.endswith(".pyc")
                and "__pycache__" in parts[:-1]
                and not parts[0].endswith(".data")
            ):
                archive.extract(info, target)  # extract() drops absolute and `..` parts


def _install_distribution(index: WheelhouseIndex, dist: str, root: Path) -> Path:
    """Download, verify and unpack one distribution of the wheelhouse; return its directory."""
    import hashlib
    import shutil
    import tempfile

    wheel = index.wheels.get(dist)
    if wheel is None:
        raise PackageInstallError(f"{dist} is not in the wheelhouse")
    final = root / f"{dist}-{wheel['version']}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    data = fetch(index.wheel_url(wheel["filename"]))
    if hashlib.sha256(data).hexdigest() != wheel["sha256"]:
        raise PackageInstallError(f"{wheel['filename']}: sha256 does not match the index")
    staging = Path(tempfile.mkdtemp(prefix=f".{dist}-", dir=root))
    try:
        wheel_path = staging / wheel["filename"]
        wheel_path.write_bytes(data)
        site = staging / "site"
        _install_wheel(wheel_path, site)
        try:
            site.rename(final)
        except OSError:
            # Another worker of this environment finished the same distribution first.
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


_install_lock = threading.RLock()


def ensure_package(
    spec: str,
    *,
    wheelhouse_url: str | None,
    allow_pypi: bool,
    cache_dir: str | os.PathLike[str],
) -> str | None:
    """Make one package importable; return the warning text if something was installed."""
    name = requirement_name(spec)
    root = _dists_root(cache_dir)
    with _install_lock:
        activate_cache(cache_dir)
        if _installed_version(name) is not None:
            return None
        started = time.perf_counter()
        try:
            index = get_index(wheelhouse_url) if wheelhouse_url else None
        except PackageInstallError as exc:
            raise PackageInstallError(f"{name} cannot be installed: {exc}") from None
        package = index.packages.get(name) if index else None
        if index is not None and package is not None:
            version = package["version"]
            missing = [
                dist
                for dist in map(normalize_name, package.get("closure", [name]))
                if dist == name or _installed_version(dist) is None
            ]
            if _imp.lock_held():
                # Called from the import hook: the global import lock is held, so a thread
                # that imports anything (installer does, lazily) would wait forever.
                installed = [_install_distribution(index, d, root) for d in missing]
            else:
                # Downloads and file creation wait on I/O (the GIL is released): in parallel.
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=min(4, len(missing))) as pool:
                    installed = list(
                        pool.map(lambda d: _install_distribution(index, d, root), missing)
                    )
            for directory in installed:
                _add_to_sys_path(directory)
        elif allow_pypi:
            _add_to_sys_path(install_from_pypi(spec, root))
            version = _installed_version(name) or "?"
        elif index is None:
            raise PackageInstallError(
                f"{name} is not installed and no wheelhouse is configured for on-demand packages"
            )
        else:
            raise PackageInstallError(f"{name} is not on this deployment's package whitelist")
        importlib.invalidate_caches()
        seconds = time.perf_counter() - started
        return f"installed {name} {version} on demand in {seconds:.1f} s"


def install_requirements(
    specs: Sequence[str],
    *,
    wheelhouse_url: str | None,
    allow_pypi: bool = False,
    cache_dir: str | os.PathLike[str],
) -> list[str]:
    """Install the missing whitelisted packages of `specs`; return one warning per install."""
    warnings: list[str] = []
    failures: list[str] = []
    for spec in specs:
        try:
            warning = ensure_package(
                spec, wheelhouse_url=wheelhouse_url, allow_pypi=allow_pypi, cache_dir=cache_dir
            )
        except PackageInstallError as exc:
            failures.append(str(exc))
            continue
        if warning:
            warnings.append(warning)
    if failures:
        raise PackageInstallError("; ".join(failures), warnings)
    return warnings
