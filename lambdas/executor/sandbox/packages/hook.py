"""The import hook: a `sys.meta_path` finder that installs a whitelisted on-demand package
at the first import of one of its modules by user code."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType, ModuleType

import lambdas
from lambdas.executor.sandbox.packages.index import PackageInstallError, get_index
from lambdas.executor.sandbox.packages.install import activate_cache, ensure_package

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
            index = get_index(self.wheelhouse_url)
        except PackageInstallError as exc:
            self._failed.add(fullname)
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: on-demand packages are unavailable right now "
                f"({exc})",
                name=fullname,
            ) from None
        package = index.modules.get(fullname)
        if package is None:
            return None
        try:
            warning = ensure_package(
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
            ) from None
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
