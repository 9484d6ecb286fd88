"""Precompiled `.pyc` for what new environments import first, and the timing that justifies them.

/opt is read-only on Lambda, so a module without a shipped `.pyc` is recompiled by every new
environment. The `.pyc` are `--invalidation-mode unchecked-hash` (no mtime check against files
whose mtimes the layer zip does not keep) and compiled by an interpreter of the target version
(magic numbers must match).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from layers.common import BuildError

LAMBDA_LAYER_ROOT = "/opt/python"

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

_MEASURE_SCRIPT = (
    "import json, sys, time\nsys.path[:0] = json.loads(sys.argv[1])\nt = time.perf_counter()\n"
    "for m in json.loads(sys.argv[2]):\n    __import__(m)\n"
    "print((time.perf_counter() - t) * 1000)\n"
)


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
    """.pyc for `files` of a layer's `site`, with paths as Lambda will see them (/opt/python)."""
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


def compile_tree(python: str, tree: Path) -> None:
    """.pyc for every module of an unpacked wheel; a file that does not compile just stays
    without one (the import then compiles it, or fails as it would anyway)."""
    command = [python, "-I", "-m", "compileall", "-q", "-f", "--invalidation-mode",
               "unchecked-hash", "-s", str(tree), str(tree)]  # fmt: skip
    subprocess.run(command, capture_output=True, text=True, timeout=1800)


def measure_imports(python: str, sites: list[Path], modules: list[str], tmp: Path,
                    use_pyc: bool) -> float:  # fmt: skip
    """Cold import time (ms, best of 2) of `modules` from the layers, as on read-only /opt."""
    env = subprocess_env(tmp)
    # -I ignores PYTHON* variables, hence -B / -X: write nothing; without .pyc, look for them
    # only under an empty prefix, so the shipped __pycache__ is ignored.
    flags = ["-B"] if use_pyc else ["-B", "-X", f"pycache_prefix={tmp / 'no-pyc-here'}"]
    best = float("inf")
    for _ in range(2):
        completed = subprocess.run(
            [python, "-I", "-S", *flags, "-c", _MEASURE_SCRIPT, json.dumps([str(s) for s in sites]),
             json.dumps(modules)],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        if completed.returncode != 0:
            raise BuildError(f"import measurement failed: {completed.stderr[-1500:]}")
        best = min(best, float(completed.stdout.strip().splitlines()[-1]))
    return best
