"""On-demand installation of whitelisted packages inside the sandboxed worker.

Runs in the untrusted worker (as the sandbox user): stdlib + `installer` only, both imported
lazily so the zygote pays nothing for this module. Nothing here is trusted: the API function
already validated the specs against the whitelist (`layers/catalog.py`); this module only ever
installs what the wheelhouse index lists, and checks every wheel's sha256 against it.

Wheelhouse (built by `python -m layers.build`, see `layers/wheelhouse.py` for the layout):
    <base>/index.json          {"format": 1, "python": "3.13", "arch": "x86_64",
                                "packages": {name: {"version", "modules": [..], "closure": [..]}},
                                "wheels": {dist: {"version", "filename", "sha256", "size"}},
                                "modules": {top_level_module: package_name}}
    <base>/<wheel filename>    every wheel of every on-demand package's dependency closure
                               (layered dependencies such as numpy included, so an environment
                               without the layers — the local stack's venv — can install too)
`closure` lists the distribution names the package needs at run time (itself first), computed by
the builder from one resolve of the whole whitelist, so no resolver runs here.

API (helper A calls these from the worker):

    install_requirements(specs, *, wheelhouse_url, allow_pypi=False, cache_dir) -> list[str]
        specs: requirement strings already validated by the API ("scikit-learn", "sympy==1.14.0");
        only the name is used — the wheelhouse holds exactly the pinned version.
        For each spec: if the distribution is importable already (a layer, the venv, or this
        environment's cache) nothing happens and no warning is returned; otherwise every
        distribution of its closure that is missing is downloaded from the wheelhouse (urllib
        GET, sha256 checked), unpacked with `installer` into `<cache_dir>/dists/<name>-<version>/`
        (atomic rename, so concurrent workers of one environment are safe) and that directory is
        appended to `sys.path` (after the layers, which keep precedence).
        Returns warnings, one per installed package:
            "installed scikit-learn 1.9.1 on demand in 2.3 s"
        Raises `PackageInstallError` (a RuntimeError, message fit for the user) when a package
        cannot be installed: not in the wheelhouse index and PyPI not allowed, download or hash
        failure. The other specs are still installed; their warnings are in `exc.warnings`.
        With `allow_pypi=True`, a package missing from the wheelhouse (or no wheelhouse at all)
        is installed with `python -m pip install --target` from PyPI instead.

    install_import_hook(*, wheelhouse_url, allow_pypi=False, cache_dir, on_install=None)
            -> OnDemandFinder
        Activates the cache (see `activate_cache`) and appends a `sys.meta_path` finder (replacing
        a previous one). When user code imports a top-level module that no other finder found and
        the wheelhouse index maps that module to an on-demand package, the finder installs the
        package (as above), calls `on_install(warning)` with the same warning text, and the import
        proceeds normally. Imports made by library code (files under site-packages, the layers,
        the stdlib or the cache — e.g. pandas probing optional dependencies) never trigger an
        install; they fail as usual. A failed install raises ModuleNotFoundError whose message says
        why. The index is fetched once per process, on the first import that needs it.
        `wheelhouse_url=None` and `allow_pypi=False`: the hook is a no-op finder.

    activate_cache(cache_dir) -> list[str]
        Appends every distribution already installed in `cache_dir` (by an earlier worker of the
        same environment) to `sys.path`; returns the directories added. Cheap (one listdir).

    uninstall_import_hook() -> None       removes the finder (tests).

`wheelhouse_url` is the wheelhouse base URL (`https://…/wheelhouse/x86_64/`, `file:///…/`,
`http://127.0.0.1:port/bucket/wheelhouse/x86_64/`) or the URL of its `index.json`; wheel URLs are
resolved relative to it (so the objects must be readable without a per-object signature: the
executor's S3 VPC endpoint policy, or a public-read local bucket). `WheelhouseAccess.index_url`
from the invocation can be passed as is.
"""

from __future__ import annotations

# The zygote imports this module: only cheap, already-loaded modules at the top; the rest
# (urllib.request, zipfile, installer, ...) when an install actually happens.
import _imp
import importlib
import importlib.machinery
import os
import re
import sys
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import lambdas

INDEX_FILENAME = "index.json"
DOWNLOAD_TIMEOUT_SECONDS = 120
INDEX_TIMEOUT_SECONDS = 10
# After the index could not be fetched, imports fail fast for this long instead of each one
# waiting for the network again.
INDEX_RETRY_SECONDS = 30
_DISTS_DIRNAME = "dists"
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")

__all__ = [
    "OnDemandFinder",
    "PackageInstallError",
    "activate_cache",
    "install_import_hook",
    "install_requirements",
    "uninstall_import_hook",
]


class PackageInstallError(RuntimeError):
    """A whitelisted package could not be installed; the message is meant for the user.

    `warnings` holds the install warnings of the other specs of the same call, which were
    installed anyway (so the result can still report them)."""

    def __init__(self, message: str, warnings: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.warnings = list(warnings)


def normalize_name(name: str) -> str:
    """PEP 503 normalisation: `Scikit_Learn` and `scikit-learn` are the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    """The distribution name of a requirement string (`"sympy>=1.12 ; python_version>'3'"`)."""
    match = _NAME_RE.match(spec)
    if not match:
        raise PackageInstallError(f"not a package requirement: {spec!r}")
    return normalize_name(match.group(1))


# ---------------------------------------------------------------------------------------------
# Wheelhouse index
# ---------------------------------------------------------------------------------------------


def _base_url(wheelhouse_url: str) -> str:
    parts = urllib.parse.urlsplit(wheelhouse_url)
    path = parts.path
    if path.endswith(".json"):
        path = path.rsplit("/", 1)[0] + "/"
    elif not path.endswith("/"):
        path += "/"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _fetch(url: str, timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> bytes:
    import urllib.request

    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise PackageInstallError(f"unsupported wheelhouse URL scheme {scheme!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            data: bytes = response.read()
            return data
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise PackageInstallError(f"cannot download {_redact(url)}: {exc}") from exc


def _redact(url: str) -> str:
    """URL without its query string (a presigned signature is nobody's business)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class WheelhouseIndex:
    """The parsed `index.json` of a wheelhouse."""

    def __init__(self, data: dict[str, Any], base_url: str) -> None:
        self.base_url = base_url
        self.packages: dict[str, dict[str, Any]] = {
            normalize_name(k): v for k, v in data.get("packages", {}).items()
        }
        self.wheels: dict[str, dict[str, Any]] = {
            normalize_name(k): v for k, v in data.get("wheels", {}).items()
        }
        self.modules: dict[str, str] = {
            k: normalize_name(v) for k, v in data.get("modules", {}).items()
        }

    @classmethod
    def load(cls, wheelhouse_url: str) -> WheelhouseIndex:
        import json

        base = _base_url(wheelhouse_url)
        index_url = (
            wheelhouse_url if _redact(wheelhouse_url).endswith(".json") else base + INDEX_FILENAME
        )
        raw = _fetch(index_url, INDEX_TIMEOUT_SECONDS)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise PackageInstallError("the wheelhouse index is not valid JSON") from exc
        return cls(data, base)

    def wheel_url(self, filename: str) -> str:
        return self.base_url + urllib.parse.quote(filename)


_index_cache: dict[str, WheelhouseIndex] = {}
_index_failures: dict[str, tuple[float, PackageInstallError]] = {}
_index_lock = threading.Lock()


def _get_index(wheelhouse_url: str) -> WheelhouseIndex:
    with _index_lock:
        index = _index_cache.get(wheelhouse_url)
        if index is not None:
            return index
        failure = _index_failures.get(wheelhouse_url)
        if failure is not None and time.monotonic() - failure[0] < INDEX_RETRY_SECONDS:
            raise failure[1]
        try:
            index = WheelhouseIndex.load(wheelhouse_url)
        except PackageInstallError as exc:
            _index_failures[wheelhouse_url] = (time.monotonic(), exc)
            raise
        _index_cache[wheelhouse_url] = index
        return index


# ---------------------------------------------------------------------------------------------
# Cache of installed distributions
# ---------------------------------------------------------------------------------------------


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
    data = _fetch(index.wheel_url(wheel["filename"]))
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


def _install_from_pypi(spec: str, root: Path) -> Path:
    """Internet mode without a wheelhouse entry: let pip resolve and fetch from PyPI."""
    import shutil
    import subprocess
    import tempfile

    name = requirement_name(spec)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-pypi-", dir=root))
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
        "--disable-pip-version-check", "--no-compile", "--only-binary=:all:",
        "--target", str(staging / "site"), spec,
    ]  # fmt: skip
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if completed.returncode != 0:
            tail = completed.stderr.strip().splitlines()[-1:] or ["pip failed"]
            raise PackageInstallError(f"cannot install {name} from PyPI: {tail[0]}")
        final = root / f"{name}-pypi"
        try:
            (staging / "site").rename(final)
        except OSError:
            if not final.is_dir():
                raise
        return final
    except subprocess.TimeoutExpired as exc:
        raise PackageInstallError(f"installing {name} from PyPI timed out") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_install_lock = threading.RLock()


def _ensure_package(
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
        index = _get_index(wheelhouse_url) if wheelhouse_url else None
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
            _add_to_sys_path(_install_from_pypi(spec, root))
            version = _installed_version(name) or "?"
        elif index is None:
            raise PackageInstallError(
                f"{name} is not installed and no wheelhouse is configured for on-demand packages"
            )
        else:
            raise PackageInstallError(f"{name} is not available on demand in this deployment")
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
            warning = _ensure_package(
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


# ---------------------------------------------------------------------------------------------
# Import hook
# ---------------------------------------------------------------------------------------------


_THIS_FILE = os.path.abspath(__file__)
_LIBRARY_MARKERS = ("site-packages", "dist-packages")
_LIBRARY_ROOTS = ("/opt/", "/var/")  # Lambda: layers, runtime, function code


def _library_prefixes(cache_dir: str | os.PathLike[str], search_path: list[str]) -> tuple[str, ...]:
    """Directories whose code is "library code": its imports never trigger installs."""
    import sysconfig

    # The executor's own code (lambdas/) probes optional modules too.
    prefixes = {str(Path(cache_dir).resolve()), str(Path(lambdas.__file__).resolve().parent)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            prefixes.add(str(Path(path).resolve()))
    for entry in search_path:
        if any(m in entry for m in _LIBRARY_MARKERS) or entry.startswith(_LIBRARY_ROOTS):
            prefixes.add(str(Path(entry).resolve()))
    return tuple(sorted(prefixes))


def _importing_frame() -> FrameType | None:
    """The frame of the `import` statement that reached the finder (outside importlib)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        machinery = filename.startswith("<frozen importlib") or filename.endswith(
            os.path.join("importlib", "__init__.py")
        )
        if not machinery and filename != _THIS_FILE:
            return frame
        frame = frame.f_back
    return None


class OnDemandFinder:
    """Installs a whitelisted on-demand package at the first import of one of its modules."""

    def __init__(
        self,
        *,
        wheelhouse_url: str | None,
        allow_pypi: bool,
        cache_dir: str | os.PathLike[str],
        on_install: Callable[[str], None] | None = None,
    ) -> None:
        self.wheelhouse_url = wheelhouse_url
        self.allow_pypi = allow_pypi
        self.cache_dir = cache_dir
        self.on_install = on_install
        # Resolved on first use (a few ms of sysconfig and realpath work that most sessions
        # never need), from sys.path as it is now.
        self._search_path = list(sys.path)
        self._prefixes: tuple[str, ...] | None = None
        self._failed: set[str] = set()

    def _from_user_code(self) -> bool:
        frame = _importing_frame()
        if frame is None:
            return False
        filename = frame.f_code.co_filename
        if filename.startswith("<"):
            return True  # IPython cells, exec()'d strings
        resolved = str(Path(filename).resolve())
        if any(f"{os.sep}{marker}{os.sep}" in resolved for marker in _LIBRARY_MARKERS):
            return False
        if self._prefixes is None:
            self._prefixes = _library_prefixes(self.cache_dir, self._search_path)
        return not resolved.startswith(self._prefixes)

    def find_spec(
        self,
        fullname: str,
        path: Iterable[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None or "." in fullname or not self.wheelhouse_url:
            return None  # only top-level modules; submodules follow their package
        if fullname in self._failed or not self._from_user_code():
            return None
        try:
            index = _get_index(self.wheelhouse_url)
        except PackageInstallError as exc:
            self._failed.add(fullname)
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (on-demand packages are unavailable: {exc})",
                name=fullname,
            ) from exc
        package = index.modules.get(fullname)
        if package is None:
            return None
        try:
            warning = _ensure_package(
                package,
                wheelhouse_url=self.wheelhouse_url,
                allow_pypi=self.allow_pypi,
                cache_dir=self.cache_dir,
            )
        except PackageInstallError as exc:
            self._failed.add(fullname)
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: on-demand install of {package} failed: {exc}",
                name=fullname,
            ) from exc
        if warning and self.on_install is not None:
            self.on_install(warning)
        return importlib.machinery.PathFinder.find_spec(fullname)


def uninstall_import_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, OnDemandFinder)]


def install_import_hook(
    *,
    wheelhouse_url: str | None,
    allow_pypi: bool = False,
    cache_dir: str | os.PathLike[str],
    on_install: Callable[[str], None] | None = None,
) -> OnDemandFinder:
    """Activate the cache and append the on-demand finder to `sys.meta_path`."""
    uninstall_import_hook()
    activate_cache(cache_dir)
    finder = OnDemandFinder(
        wheelhouse_url=wheelhouse_url,
        allow_pypi=allow_pypi,
        cache_dir=cache_dir,
        on_install=on_install,
    )
    sys.meta_path.append(finder)
    return finder
