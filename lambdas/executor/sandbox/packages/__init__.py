"""On-demand installation of whitelisted packages inside the sandboxed worker.

Modules: index.py (requirement names, downloads, the wheelhouse index), install.py (the
cache of installed distributions and installs from the wheelhouse), pypi.py (`pip install`
from PyPI when the deployment allows it), hook.py (the import hook).

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

API (sandbox/worker.py calls these):

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

from lambdas.executor.sandbox.packages.hook import (
    OnDemandFinder,
    install_import_hook,
    uninstall_import_hook,
)
from lambdas.executor.sandbox.packages.index import PackageInstallError
from lambdas.executor.sandbox.packages.install import activate_cache, install_requirements

__all__ = [
    "OnDemandFinder",
    "PackageInstallError",
    "activate_cache",
    "install_import_hook",
    "install_requirements",
    "uninstall_import_hook",
]
