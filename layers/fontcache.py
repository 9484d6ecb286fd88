"""Build the matplotlib font-cache seed the executor copies into each new environment.

    python -m layers.fontcache            # for this interpreter's matplotlib (make setup)

The layers build calls `write_seed` for the layer that holds matplotlib. The cache is built by
matplotlib itself in a scratch directory; system fonts (absolute paths, which differ between
this machine and Lambda) are left out, matplotlib's own fonts are kept (relative paths).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from lambdas.executor.sandbox.fontcache import SEED_DIRNAME

_BUILD_SCRIPT = """
import json, os, sys
sys.path[:0] = json.loads(sys.argv[1])
import matplotlib.font_manager as fm
fm.fontManager  # loading it builds the cache and writes it to MPLCONFIGDIR
name = f"fontlist-v{fm.FontManager.__version__}.json"
with open(os.path.join(os.environ["MPLCONFIGDIR"], name)) as handle:
    cache = json.load(handle)
for key in ("ttflist", "afmlist"):
    cache[key] = [entry for entry in cache[key] if not os.path.isabs(entry["fname"])]
print(json.dumps({"name": name, "cache": cache}))
"""


def write_seed(python: str, search_path: list[Path], target_site: Path) -> Path:
    """Build the cache with `python` (matplotlib importable from `search_path` or its own
    site) and write the seed into `target_site`; returns the seed file."""
    with tempfile.TemporaryDirectory(prefix="lci-mplcache-") as scratch:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MPLCONFIGDIR": scratch,
            "HOME": scratch,
            "OPENBLAS_NUM_THREADS": "1",
        }
        completed = subprocess.run(
            [python, "-c", _BUILD_SCRIPT, json.dumps([str(p) for p in search_path])],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"building the font cache failed: {completed.stderr[-2000:]}")
    built = json.loads(completed.stdout.strip().splitlines()[-1])
    seed_dir = target_site / SEED_DIRNAME
    seed_dir.mkdir(parents=True, exist_ok=True)
    for stale in seed_dir.glob("fontlist-*.json"):
        stale.unlink()
    seed = seed_dir / built["name"]
    seed.write_text(json.dumps(built["cache"]))
    return seed


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    seed = write_seed(sys.executable, [], site)
    fonts = len(json.loads(seed.read_text())["ttflist"])
    print(f"matplotlib font cache seed: {seed} ({fonts} fonts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
