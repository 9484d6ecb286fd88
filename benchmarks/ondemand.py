"""On-demand install benchmark (SPEC §6 target: ≤ 3 s for a whitelisted wheel from the wheelhouse).

    python -m benchmarks.ondemand [--wheelhouse DIR] [--layers DIR] [--repeat N] [PACKAGE ...]

Needs a layer build (`make layers`). Each run is a fresh interpreter laid out like a Lambda
environment: `-I -S`, the built layers on `sys.path` (numpy, scipy… preinstalled, /opt-style),
an empty package cache, and the modules the executor's zygote preloads (numpy, pandas,
matplotlib, IPython — a session worker is forked with them) imported before the clock starts.
It installs the import hook and runs a cell `import <module>`: the hook
fetches the package's closure from the wheelhouse (file:// URL — the local-disk case; S3 adds
the transfer), unpacks it and imports. A second interpreter then imports the same module from
the warm cache (a later worker of the same environment). Prints a table and, as the last line,
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lambdas.shared.packages.layout import build_dir, wheelhouse_dir

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 3000
DEFAULT_PACKAGES = ["sympy", "scikit-learn"]
# A session worker is forked from a zygote that already imported these (lambdas/executor).
ZYGOTE_PRELOAD = ["numpy", "pandas", "matplotlib.pyplot", "IPython"]

CELL_RUNNER = r"""
import json, sys, time
args = json.loads(sys.argv[1])
sys.path[:0] = args["path"]
for name in args["preload"]:  # what the zygote imported before forking this worker
    __import__(name)
from lambdas.executor.sandbox import packages
started = time.perf_counter()
warnings = []
packages.install_import_hook(wheelhouse_url=args["url"], cache_dir=args["cache"],
                             on_install=warnings.append)
exec(compile("import " + args["module"], "<cell-1>", "exec"), {})
print(json.dumps({"ms": (time.perf_counter() - started) * 1000, "warnings": warnings}))
"""


def run_cell(layer_sites: list[str], url: str, cache: str, module: str, preload: list[str]) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "OPENBLAS_NUM_THREADS": "1",
        "HOME": cache,
        "MPLCONFIGDIR": cache,
        # -B (-I ignores PYTHON* variables): the layers stay read-only as /opt on Lambda; the
        # on-demand cache in /tmp gets .pyc only from the wheels
    }
    args = {
        "path": [str(REPO), *layer_sites],
        "url": url,
        "cache": cache,
        "module": module,
        "preload": preload,
    }
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", CELL_RUNNER, json.dumps(args)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    if completed.returncode != 0:
        raise SystemExit(f"benchmark run failed:\n{completed.stderr[-3000:]}")
    result: dict = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("packages", nargs="*", default=DEFAULT_PACKAGES)
    parser.add_argument("--wheelhouse", type=Path, default=wheelhouse_dir())
    parser.add_argument("--layers", type=Path, default=build_dir())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--preload",
        default=",".join(ZYGOTE_PRELOAD),
        help="modules imported before the timed cell, as the executor's zygote does ('' = none)",
    )
    args = parser.parse_args()
    index_file = args.wheelhouse / "index.json"
    manifest_file = args.layers / "manifest.json"
    if not index_file.is_file() or not manifest_file.is_file():
        raise SystemExit("no layer build found: run `make layers` (python -m layers.build) first")
    index = json.loads(index_file.read_text())
    manifest = json.loads(manifest_file.read_text())
    sites = [str(args.layers / layer["path"] / "python") for layer in manifest["layers"]]
    url = args.wheelhouse.resolve().as_uri() + "/"
    preload = [m for m in args.preload.split(",") if m]

    results = []
    for name in args.packages:
        package = index["packages"].get(name)
        if package is None:
            raise SystemExit(f"{name} is not an on-demand package of this wheelhouse")
        module = package["modules"][0]
        first, cached = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="lci-ondemand-") as cache:
                outcome = run_cell(sites, url, cache, module, preload)
                assert outcome["warnings"], "nothing was installed: is it importable already?"
                first.append(outcome["ms"])
                cached.append(run_cell(sites, url, cache, module, preload)["ms"])
        wheel_bytes = sum(
            index["wheels"][d]["size"]
            for d in package["closure"]
            if d in index["wheels"] and not any(
                x["name"] == d for layer in manifest["layers"] for x in layer["distributions"]
            )
        )  # fmt: skip
        results.append(
            {
                "package": name,
                "version": package["version"],
                "wheel_mib": round(wheel_bytes / 2**20, 1),
                "first_import_ms_p50": round(statistics.median(first)),
                "first_import_ms_max": round(max(first)),
                "cached_import_ms_p50": round(statistics.median(cached)),
                "target_ms": TARGET_MS,
                "ok": statistics.median(first) <= TARGET_MS,
            }
        )
    print(f"{'package':<16}{'wheels MiB':>11}{'install+import p50':>20}{'max':>8}{'cached':>9}")
    for r in results:
        print(
            f"{r['package']:<16}{r['wheel_mib']:>11}{r['first_import_ms_p50']:>17} ms"
            f"{r['first_import_ms_max']:>8}{r['cached_import_ms_p50']:>9}"
        )
    print(json.dumps({"benchmark": "ondemand", "results": results}))


if __name__ == "__main__":
    main()
