"""Build the Lambda layers and the on-demand wheelhouse from `whitelist.toml` (no Docker).

    python -m layers.build [--arch x86_64|arm64] [--profile default|ci] [--report] [--json]
                           [--out DIR] [--whitelist FILE] [--cache-dir DIR] [--measure-imports]

Steps: one `pip install --dry-run --report` resolves the whole whitelist for the target
(manylinux wheels, cp313, `--only-binary=:all:`); each distribution goes to the layer of the first
package (in layer order) whose dependency closure needs it; on-demand packages keep only their
closure. Wheels are fetched with `pip download --no-deps` into a persistent wheel cache and
unpacked with `installer` into `<build>/<layer>/python`. Then: runtime-provided distributions
(boto3, botocore, …) and completion-only ones (jedi, parso) are left out, tests/caches/`*.pyi`/C
sources and matplotlib sample data are dropped, shared objects are stripped (and restored where
stripping breaks PT_LOAD page alignment — patchelf'd libraries in `*.libs`), `.pyc` are compiled
for the modules the hot imports load (python3.13, `--invalidation-mode unchecked-hash`, because
/opt is read-only on Lambda), matplotlib's font cache is built once and shipped as a seed
(`layers/fontcache.py`), sizes are measured, budgets enforced (exit 2 naming the layer, its
size and its budget), and `manifest.json` + the wheelhouse (`index.json`, wheels, PEP 503 pages)
are written.

Builds live in `.cache/layers/<hash>` (hash of whitelist, this file, catalog.py, fontcache.py,
arch, profile); `<out>/<arch>` is a symlink to the build, so a second run with the same inputs
is instant.

manifest.json (read by the CDK stack and by lambdas/shared/packages/catalog.py for sizes):
    {"format": 1, "arch", "profile", "python", "input_hash",
     "budget_bytes",                  # all layers together (Lambda limit - function reserve)
     "lambda_unzipped_limit_bytes", "function_reserve_bytes", "total_unzipped_bytes",
     "layers": [{"name", "path" (relative, contains python/), "unzipped_bytes", "budget_bytes",
                 "packages": [{"name", "version"}], "distributions": [{"name","version","bytes"}]}],
     "packages": [{"name", "version", "source": "layer"|"on_demand", "layer", "bytes"}],
     "wheelhouse": {"path": "wheelhouse", "bytes", "wheels": int}}
`--report --json`: the last line of stdout is
    {"layers": [{"name", "unzipped_bytes", "packages": [{"name","version"}]}],
     "total_unzipped_bytes", "budget_bytes", ...}
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import glob
import hashlib
import html
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from lambdas.shared.packages import catalog as catalog_module
from lambdas.shared.packages import layout
from lambdas.shared.packages.catalog import Catalog, load_catalog, read_whitelist
from layers import fontcache

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "layers"
LAMBDA_LAYER_ROOT = "/opt/python"
PAGE_SIZE = 4096
ARCHES = {
    "x86_64": {"machine": "x86_64", "tag": "x86_64"},
    "arm64": {"machine": "aarch64", "tag": "aarch64"},
}
# Amazon Linux 2023 has glibc 2.34.
MANYLINUX = ("manylinux2014", "manylinux_2_28", "manylinux_2_34")
# Directory names dropped from layers (test suites, caches) and file suffixes nobody imports.
DROP_DIRS = frozenset({"__pycache__", "tests", "test"})
# .a static libraries and .exe Windows script launchers (installer) are dead weight too.
DROP_SUFFIXES = (".pyi", ".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h", ".hpp", ".a", ".exe")
DROP_PATHS = ("matplotlib/mpl-data/sample_data",)


class BuildError(RuntimeError):
    """The build cannot go on; the message says why (and exit code 2 follows)."""


class BudgetExceeded(BuildError):
    pass


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------


@dataclass
class Distribution:
    name: str  # canonical
    version: str
    requires: list[str]
    wheel: Path | None = None
    layer: str | None = None


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
        name = canonicalize_name(meta["name"])
        dists[name] = Distribution(name, meta["version"], list(meta.get("requires_dist") or []))
    return dists


def closure(
    root: str, dists: dict[str, Distribution], env: dict[str, str], excluded: Iterable[str]
) -> list[str]:
    """Run-time dependency closure of `root` (itself first), extras followed, markers evaluated."""
    skip = {canonicalize_name(n) for n in excluded}
    order: list[str] = []
    seen: set[tuple[str, str]] = set()
    stack: list[tuple[str, str]] = [(canonicalize_name(root), "")]
    while stack:
        name, extra = stack.pop()
        if (name, extra) in seen or name in skip or name not in dists:
            continue
        seen.add((name, extra))
        if name not in order:
            order.append(name)
        for spec in dists[name].requires:
            requirement = Requirement(spec)
            marker: Marker | None = requirement.marker
            if marker is not None and not marker.evaluate({**env, "extra": extra}):
                continue
            if marker is None and extra:
                continue  # unconditional requirements were followed with extra == ""
            child = canonicalize_name(requirement.name)
            stack.append((child, ""))
            stack.extend((child, e) for e in requirement.extras)
    return order


@dataclass
class Plan:
    layers: dict[str, list[str]] = field(default_factory=dict)  # layer -> distributions
    owners: dict[str, str] = field(default_factory=dict)  # distribution -> whitelisted package
    on_demand: dict[str, list[str]] = field(default_factory=dict)  # package -> full closure
    # Every whitelisted package -> full closure: the wheelhouse serves layered packages too, so
    # an environment without the layers (the local stack's venv) can install them on demand.
    closures: dict[str, list[str]] = field(default_factory=dict)


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


# ---------------------------------------------------------------------------------------------
# Layer contents
# ---------------------------------------------------------------------------------------------


def install_wheel(wheel: Path, site: Path, discard: Path) -> list[str]:
    """Unpack one wheel into `site`; scripts/data/headers go to `discard`. Returns top-level
    entries of `site` the wheel created (for attributing sizes to distributions)."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    scheme = {
        "purelib": str(site),
        "platlib": str(site),
        "headers": str(discard / "include"),
        "scripts": str(discard / "bin"),
        "data": str(discard / "data"),
    }
    destination = SchemeDictionaryDestination(
        scheme, interpreter="/usr/bin/python3", script_kind="posix",
        bytecode_optimization_levels=(),
    )  # fmt: skip
    with WheelFile.open(wheel) as source:
        install(source, destination, additional_metadata={"INSTALLER": b"lci-layers\n"})
    with zipfile.ZipFile(wheel) as archive:
        tops = {n.split("/", 1)[0] for n in archive.namelist()}
    return sorted(tops)


def slim(site: Path) -> None:
    for rel in DROP_PATHS:
        shutil.rmtree(site / rel, ignore_errors=True)
    for dirpath, dirnames, filenames in os.walk(site, topdown=True):
        for name in [d for d in dirnames if d in DROP_DIRS]:
            shutil.rmtree(Path(dirpath) / name)
            dirnames.remove(name)
        for name in filenames:
            if name.endswith(DROP_SUFFIXES) or name.endswith((".pyc", ".pyo")):
                (Path(dirpath) / name).unlink()


def load_segments_aligned(path: Path) -> bool:
    """True when every PT_LOAD segment has (p_vaddr - p_offset) % PAGE_SIZE == 0 (ELF64 LE)."""
    with path.open("rb") as handle:
        header = handle.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr = struct.unpack_from("<IIQQ", table, i * phentsize)
        if p_type == 1 and (p_vaddr - p_offset) % PAGE_SIZE:
            return False
    return True


# Tools that strip shared objects of each architecture, best first: the host's `strip` only
# knows its own machine, llvm-strip knows them all.
STRIP_TOOLS = {
    "x86_64": ("x86_64-linux-gnu-strip", "strip", "llvm-strip"),
    "arm64": ("aarch64-linux-gnu-strip", "llvm-strip", "strip"),
}


def _host_arch() -> str:
    """This machine's architecture, named as `ARCHES` names them."""
    return "arm64" if platform.machine() in ("aarch64", "arm64") else platform.machine()


def _strip_tool(arch: str) -> str | None:
    host_arch = _host_arch()
    for name in STRIP_TOOLS[arch]:
        if name == "strip" and host_arch != arch:
            continue  # the host's strip cannot read foreign objects
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def strip_shared_objects(site: Path, arch: str = "x86_64") -> tuple[int, int, list[str]]:
    """strip --strip-unneeded every .so; restore any that stripping left misaligned (the
    patchelf'd libraries in `*.libs`). Returns (bytes saved, stripped count, restored names)."""
    strip = _strip_tool(arch)
    if strip is None:
        log(f"warning: no strip tool for {arch} ({', '.join(STRIP_TOOLS[arch])}), "
            "shared objects stay unstripped")  # fmt: skip
        return 0, 0, []
    saved, stripped, restored = 0, 0, []
    for path in site.rglob("*.so*"):
        if not path.is_file() or path.is_symlink() or not load_segments_aligned(path):
            continue
        before = path.stat().st_size
        backup = path.with_name(path.name + ".orig")
        shutil.copy2(path, backup)
        completed = subprocess.run([strip, "--strip-unneeded", str(path)], capture_output=True)
        after = path.stat().st_size
        if completed.returncode != 0 or after >= before or not load_segments_aligned(path):
            backup.replace(path)
            if completed.returncode == 0 and after < before:
                restored.append(str(path.relative_to(site)))
            continue
        backup.unlink()
        saved += before - after
        stripped += 1
    return saved, stripped, restored


def find_python(version: str) -> str | None:
    """An interpreter of the target version for compiling .pyc (magic numbers must match)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    pattern = os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}")
    candidates = sorted(glob.glob(pattern))
    found = shutil.which(f"python{version}")
    if found and "/shims/" not in found:  # pyenv shims refuse to run outside their dirs
        candidates.append(found)
    return candidates[0] if candidates else None


_TRACE_SCRIPT = """
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
for name in json.loads(sys.argv[2]):
    try:
        __import__(name)
    except Exception:
        pass
files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
print(json.dumps(sorted({f for f in files if f and f.endswith(".py")})))
"""


def subprocess_env(tmp: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "MPLCONFIGDIR": str(tmp),
        "IPYTHONDIR": str(tmp),
        "MPLBACKEND": "Agg",
        "OPENBLAS_NUM_THREADS": "1",
    }


def hot_module_files(python: str, sites: list[Path], hot: Iterable[str], tmp: Path) -> list[Path]:
    """The .py files that importing the hot modules loads from the layers."""
    completed = subprocess.run(
        [python, "-I", "-S", "-B", "-c", _TRACE_SCRIPT, json.dumps([str(s) for s in sites]),
         json.dumps(list(hot))],
        capture_output=True, text=True, env=subprocess_env(tmp), timeout=600,
    )  # fmt: skip
    if completed.returncode != 0:
        raise BuildError(f"tracing the hot imports failed: {completed.stderr[-2000:]}")
    roots = tuple(str(s) + os.sep for s in sites)
    return [Path(f) for f in json.loads(completed.stdout) if f.startswith(roots)]


def precompile(python: str, site: Path, files: list[Path]) -> None:
    if not files:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(str(f) for f in files))
    try:
        completed = subprocess.run(
            [python, "-I", "-m", "compileall", "-q", "-f", "--invalidation-mode",
             "unchecked-hash", "-s", str(site), "-p", LAMBDA_LAYER_ROOT, "-i", listing.name],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    finally:
        os.unlink(listing.name)
    if completed.returncode != 0:
        raise BuildError(f"compileall failed in {site}: {completed.stdout[-2000:]}")


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def wheel_unzipped_bytes(wheel: Path) -> int:
    with zipfile.ZipFile(wheel) as archive:
        return sum(info.file_size for info in archive.infolist())


def measure_imports(python: str, sites: list[Path], modules: list[str], tmp: Path,
                    use_pyc: bool) -> float:  # fmt: skip
    """Cold import time (ms, best of 2) of `modules` from the layers, as on read-only /opt."""
    env = subprocess_env(tmp)
    # -I ignores PYTHON* variables, hence -B / -X: write nothing; without .pyc, look for them
    # only under an empty prefix, so the shipped __pycache__ is ignored.
    flags = ["-B"] if use_pyc else ["-B", "-X", f"pycache_prefix={tmp / 'no-pyc-here'}"]
    script = (
        "import json, sys, time\nsys.path[:0] = json.loads(sys.argv[1])\nt = time.perf_counter()\n"
        "for m in json.loads(sys.argv[2]):\n    __import__(m)\n"
        "print((time.perf_counter() - t) * 1000)\n"
    )
    best = float("inf")
    for _ in range(2):
        completed = subprocess.run(
            [python, "-I", "-S", *flags, "-c", script, json.dumps([str(s) for s in sites]),
             json.dumps(modules)],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        if completed.returncode != 0:
            raise BuildError(f"import measurement failed: {completed.stderr[-1500:]}")
        best = min(best, float(completed.stdout.strip().splitlines()[-1]))
    return best


# ---------------------------------------------------------------------------------------------
# Wheelhouse
# ---------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def repack_wheel(
    wheel: Path, destination: Path, python: str | None, work: Path, arch: str = "x86_64"
) -> None:
    """A slim wheel for on-demand installs: tests/caches dropped, .so stripped, and .pyc
    precompiled (unchecked-hash) so the first import after the install compiles nothing —
    compiling is what dominates an on-demand install otherwise. RECORD is rewritten."""
    tree = work / "repack" / wheel.name
    shutil.rmtree(tree, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tree)
    slim(tree)
    strip_shared_objects(tree, arch)
    if python is not None:  # a file that does not compile just stays without .pyc
        command = [python, "-I", "-m", "compileall", "-q", "-f", "--invalidation-mode",
                   "unchecked-hash", "-s", str(tree), str(tree)]  # fmt: skip
        subprocess.run(command, capture_output=True, text=True, timeout=1800)
    (dist_info,) = [p for p in tree.iterdir() if p.name.endswith(".dist-info")]
    record_name = f"{dist_info.name}/RECORD"
    files = sorted(
        (p.relative_to(tree).as_posix(), p)
        for p in tree.rglob("*")
        if p.is_file() and p.relative_to(tree).as_posix() != record_name
    )
    # dist-info last, as wheel tools write it
    files.sort(key=lambda item: item[0].startswith(f"{dist_info.name}/"))
    records: list[str] = []
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            data = path.read_bytes()
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0xFFFF) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
            records.append(f"{name},{_record_hash(data)},{len(data)}")
        records.append(f"{record_name},,")
        archive.writestr(zipfile.ZipInfo(record_name, (2020, 1, 1, 0, 0, 0)), "\n".join(records))
    shutil.rmtree(tree, ignore_errors=True)


def write_wheelhouse(
    target: Path,
    catalog: Catalog,
    plan: Plan,
    dists: dict[str, Distribution],
    arch: str,
    python: str | None,
    work: Path,
) -> dict[str, Any]:
    target.mkdir(parents=True, exist_ok=True)
    wheels: dict[str, dict[str, Any]] = {}
    for name in sorted({d for c in plan.closures.values() for d in c}):
        wheel = dists[name].wheel
        assert wheel is not None
        destination = target / wheel.name
        if dists[name].layer is None:
            repack_wheel(wheel, destination, python, work, arch)
        else:
            # Layered on Lambda; kept as published for environments without the layers.
            try:
                os.link(wheel, destination)
            except OSError:
                shutil.copy2(wheel, destination)
        wheels[name] = {
            "version": dists[name].version,
            "filename": wheel.name,
            "sha256": sha256_file(destination),
            "size": destination.stat().st_size,
        }
        simple = target / "simple" / name
        simple.mkdir(parents=True, exist_ok=True)
        link = html.escape(f"../../{wheel.name}#sha256={wheels[name]['sha256']}")
        (simple / "index.html").write_text(
            f'<!DOCTYPE html>\n<html><body><a href="{link}">{html.escape(wheel.name)}</a>'
            "</body></html>\n"
        )
    (target / "simple").mkdir(exist_ok=True)
    (target / "simple" / "index.html").write_text(
        "<!DOCTYPE html>\n<html><body>\n"
        + "".join(f'<a href="{n}/">{n}</a>\n' for n in sorted(wheels))
        + "</body></html>\n"
    )
    packages: dict[str, dict[str, Any]] = {}
    modules: dict[str, str] = {}
    for package in catalog.packages:
        key = canonicalize_name(package.name)
        packages[key] = {
            "version": package.version,
            "source": package.source,  # "layer": present on Lambda, fetched only elsewhere
            "modules": list(package.modules),
            "closure": plan.closures[package.name],
        }
        for module in package.modules:
            modules[module] = key
    index = {
        "format": 1,
        "python": catalog.build.python,
        "arch": arch,
        "packages": packages,
        "wheels": wheels,
        "modules": modules,
    }
    (target / layout.INDEX_FILENAME).write_text(json.dumps(index, indent=1, sort_keys=True))
    return {"path": layout.WHEELHOUSE_DIRNAME, "bytes": tree_bytes(target), "wheels": len(wheels)}


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------


def input_hash(whitelist: Path, arch: str, profile: str) -> str:
    digest = hashlib.sha256()
    for path in (
        whitelist,
        Path(__file__),
        Path(catalog_module.__file__),
        Path(fontcache.__file__),
    ):
        digest.update(path.read_bytes())
    digest.update(f"\0{arch}\0{profile}".encode())
    return digest.hexdigest()[:16]


def build(
    *, arch: str, profile: str, whitelist: Path, cache_dir: Path
) -> tuple[Path, dict[str, Any]]:
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
        return _build_locked(cache_dir / digest, digest, arch, profile, whitelist, cache_dir)


def _build_locked(
    root: Path, digest: str, arch: str, profile: str, whitelist: Path, cache_dir: Path
) -> tuple[Path, dict[str, Any]]:
    manifest_file = root / layout.MANIFEST_FILENAME
    if manifest_file.is_file():
        log(f"layers for {arch}/{profile} are up to date ({root})")
        return root, json.loads(manifest_file.read_text())
    catalog = load_catalog(whitelist, profile=profile, manifest_path=os.devnull)
    settings = catalog.build
    if len(catalog.layers) > settings.max_layers:
        raise BudgetExceeded(
            f"{len(catalog.layers)} layers are configured; Lambda allows {settings.max_layers}"
        )
    started = time.monotonic()
    shutil.rmtree(root, ignore_errors=True)
    work = root / ".work"
    work.mkdir(parents=True)

    pins = [f"{p.name}=={p.version}" for p in catalog.packages]
    log(f"resolving {len(pins)} packages for {arch} (python {settings.python})")
    dists = resolve(pins, arch, settings.python, work)
    plan = make_plan(catalog, dists, arch)
    needed = {d for ds in plan.layers.values() for d in ds}
    needed |= {d for c in plan.closures.values() for d in c}
    download(needed, dists, arch, settings.python, cache_dir / f"wheels-{arch}")

    layer_reports: list[dict[str, Any]] = []
    sites: dict[str, Path] = {}
    tops: dict[str, str] = {}  # top-level entry in a site -> distribution
    for layer in catalog.layers:
        site = root / layer.name / "python"
        site.mkdir(parents=True)
        sites[layer.name] = site
        for dist in plan.layers[layer.name]:
            wheel = dists[dist].wheel
            assert wheel is not None
            for top in install_wheel(wheel, site, work / "discard" / dist):
                tops[f"{layer.name}/{top}"] = dist
        slim(site)
        for pattern in settings.drop_files:
            for path in site.glob(pattern):
                path.unlink()
        saved, count, restored = strip_shared_objects(site, arch)
        kept = f", kept {len(restored)} unstripped (page alignment)" if restored else ""
        log(f"{layer.name}: stripped {count} shared objects (-{saved / 2**20:.1f} MiB){kept}")

    python = find_python(settings.python)
    host_arch = _host_arch()
    if python is None:
        log(f"warning: no python{settings.python} found, layers ship without .pyc")
    elif host_arch != arch:
        log(f"warning: cannot import {arch} code on {host_arch}: no .pyc precompiled")
    else:
        ordered = [sites[layer.name] for layer in catalog.layers]
        files = hot_module_files(python, ordered, settings.hot_imports, work)
        for site in ordered:
            precompile(python, site, [f for f in files if site in f.parents])
        log(f"precompiled {len(files)} hot modules with {python}")
        plotting = next((site for site in ordered if (site / "matplotlib").is_dir()), None)
        if plotting is not None:
            seed = fontcache.write_seed(python, ordered, plotting)
            log(f"matplotlib font cache seeded ({seed.relative_to(plotting.parent)})")

    total = 0
    failures: list[str] = []
    for layer in catalog.layers:
        site = sites[layer.name]
        per_dist: dict[str, int] = {}
        for entry in site.iterdir():
            size = tree_bytes(entry) if entry.is_dir() else entry.lstat().st_size
            dist = tops.get(f"{layer.name}/{entry.name}", "?")
            per_dist[dist] = per_dist.get(dist, 0) + size
        size = sum(per_dist.values())
        total += size
        if size > layer.budget_bytes:
            failures.append(
                f"layer {layer.name} is {size:,} bytes ({size / 2**20:.1f} MiB), over its budget "
                f"of {layer.budget_bytes:,} bytes ({layer.budget_bytes / 2**20:.1f} MiB)"
            )
        layer_reports.append(
            {
                "name": layer.name,
                "path": layer.name,
                "unzipped_bytes": size,
                "budget_bytes": layer.budget_bytes,
                "packages": [
                    {"name": p.name, "version": p.version}
                    for p in catalog.packages
                    if p.layer == layer.name
                ],
                "distributions": [
                    {"name": d, "version": dists[d].version, "bytes": per_dist.get(d, 0)}
                    for d in plan.layers[layer.name]
                ],
            }
        )
    if total > settings.total_budget_bytes:
        failures.append(
            f"all layers together are {total:,} bytes ({total / 2**20:.1f} MiB), over the budget "
            f"of {settings.total_budget_bytes:,} bytes (Lambda's "
            f"{settings.lambda_unzipped_limit_bytes:,} minus "
            f"{settings.function_reserve_bytes:,} reserved for the executor code)"
        )

    log("writing the wheelhouse (slim wheels with .pyc for on-demand packages)")
    wheelhouse = write_wheelhouse(
        root / layout.WHEELHOUSE_DIRNAME, catalog, plan, dists, arch, python, work
    )
    packages: list[dict[str, Any]] = []
    for package in catalog.packages:
        if package.source == "layer":
            report = next(r for r in layer_reports if r["name"] == package.layer)
            owned = [
                d["bytes"]
                for d in report["distributions"]
                if plan.owners.get(d["name"]) == package.name
            ]
            size = sum(owned)
        else:
            extra = [d for d in plan.on_demand[package.name] if dists[d].layer is None]
            house = root / layout.WHEELHOUSE_DIRNAME
            size = sum(wheel_unzipped_bytes(house / w.name) for d in extra if (w := dists[d].wheel))
        packages.append(
            {
                "name": package.name,
                "version": package.version,
                "source": package.source,
                "layer": package.layer,
                "bytes": size,
            }
        )
    manifest: dict[str, Any] = {
        "format": 1,
        "arch": arch,
        "profile": profile,
        "python": settings.python,
        "input_hash": digest,
        "budget_bytes": settings.total_budget_bytes,
        "lambda_unzipped_limit_bytes": settings.lambda_unzipped_limit_bytes,
        "function_reserve_bytes": settings.function_reserve_bytes,
        "total_unzipped_bytes": total,
        "layers": layer_reports,
        "packages": packages,
        "wheelhouse": wheelhouse,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    shutil.rmtree(work, ignore_errors=True)
    if failures:
        # Keep the sizes for inspection, drop the tree; never mark it as a finished build.
        for layer in catalog.layers:
            shutil.rmtree(root / layer.name, ignore_errors=True)
        shutil.rmtree(root / layout.WHEELHOUSE_DIRNAME, ignore_errors=True)
        (root / "FAILED.json").write_text(json.dumps(manifest, indent=1))
        raise BudgetExceeded("over budget:\n  " + "\n  ".join(failures))
    manifest_file.write_text(json.dumps(manifest, indent=1))
    return root, manifest


def measure_build(root: Path, manifest: dict[str, Any], hot: Iterable[str]) -> dict[str, Any]:
    """Time cold imports of the hot modules with and without the shipped .pyc (best of 2)."""
    python = find_python(manifest["python"])
    host_arch = _host_arch()
    if python is None or host_arch != manifest["arch"]:
        raise BuildError(f"cannot run {manifest['arch']} python{manifest['python']} code here")
    sites = [root / layer["path"] / "python" for layer in manifest["layers"]]
    modules = list(hot)
    with tempfile.TemporaryDirectory(prefix="lci-measure-") as tmp:
        result = {
            "modules": modules,
            "with_pyc": round(measure_imports(python, sites, modules, Path(tmp), True)),
            "without_pyc": round(measure_imports(python, sites, modules, Path(tmp), False)),
        }
    manifest["import_ms"] = result
    (root / layout.MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=1))
    return manifest


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


def format_table(manifest: dict[str, Any]) -> str:
    mib = 2**20
    lines = [f"{'layer':<14}{'MiB':>8}{'budget':>9}  packages"]
    for layer in manifest["layers"]:
        names = ", ".join(f"{p['name']} {p['version']}" for p in layer["packages"])
        lines.append(
            f"{layer['name']:<14}{layer['unzipped_bytes'] / mib:>8.1f}"
            f"{layer['budget_bytes'] / mib:>9.1f}  {names}"
        )
    lines.append(
        f"{'total':<14}{manifest['total_unzipped_bytes'] / mib:>8.1f}"
        f"{manifest['budget_bytes'] / mib:>9.1f}  (Lambda limit "
        f"{manifest['lambda_unzipped_limit_bytes'] / mib:.1f} MiB incl. function code)"
    )
    on_demand = [p for p in manifest["packages"] if p["source"] == "on_demand"]
    if on_demand:
        lines.append("on demand (MiB unzipped, beyond the layers): " + ", ".join(
            f"{p['name']} {p['bytes'] / mib:.1f}" for p in on_demand))  # fmt: skip
    if "import_ms" in manifest:
        ms = manifest["import_ms"]
        lines.append(
            f"cold import of {', '.join(ms['modules'])}: {ms['with_pyc']} ms with .pyc, "
            f"{ms['without_pyc']} ms without"
        )
    return "\n".join(lines)


def report_json(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "arch": manifest["arch"],
        "profile": manifest["profile"],
        "layers": [
            {"name": x["name"], "unzipped_bytes": x["unzipped_bytes"], "packages": x["packages"]}
            for x in manifest["layers"]
        ],
        "total_unzipped_bytes": manifest["total_unzipped_bytes"],
        "budget_bytes": manifest["budget_bytes"],
        "on_demand": [
            {"name": p["name"], "version": p["version"], "bytes": p["bytes"]}
            for p in manifest["packages"]
            if p["source"] == "on_demand"
        ],
        **({"import_ms": manifest["import_ms"]} if "import_ms" in manifest else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m layers.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--arch", choices=sorted(ARCHES), default="x86_64")
    parser.add_argument("--profile", default="default", help="default | ci")
    parser.add_argument("--report", action="store_true", help="print the size table")
    parser.add_argument("--json", action="store_true", help="with --report: last line is JSON")
    parser.add_argument("--out", type=Path, default=layout.DEFAULT_OUT_DIR)
    parser.add_argument("--whitelist", type=Path, default=catalog_module.DEFAULT_WHITELIST)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument(
        "--measure-imports",
        action="store_true",
        help="also time cold imports of the hot modules with and without .pyc",
    )
    args = parser.parse_args(argv)
    try:
        read_whitelist(args.whitelist)
        root, manifest = build(
            arch=args.arch, profile=args.profile, whitelist=args.whitelist, cache_dir=args.cache_dir
        )
        if args.measure_imports:
            hot = load_catalog(args.whitelist, profile=args.profile).build.hot_imports
            manifest = measure_build(root, manifest, hot)
    except (BuildError, catalog_module.CatalogError) as exc:
        log(f"layers build failed: {exc}")
        return 2
    target = link_output(root, args.out, args.arch)
    log(f"layers: {target} -> {root}")
    if args.report:
        if args.json:
            print(format_table(manifest))
            print(json.dumps(report_json(manifest)))
        else:
            print(format_table(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
