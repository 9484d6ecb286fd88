"""Build the Lambda layers and the on-demand wheelhouse from `whitelist.toml` (no Docker).

    python -m layers.build [--arch x86_64|arm64] [--profile default|ci] [--report] [--json]
                           [--out DIR] [--whitelist FILE] [--cache-dir DIR] [--measure-imports]

The steps, one module each:
    layers/resolve.py     one pip resolve of the whole whitelist, the layer split, the downloads
    layers/artifacts.py   unpack, slim, strip (ELF page alignment kept), repack slim wheels
    layers/bytecode.py    .pyc for the hot imports (/opt is read-only on Lambda), import timing
    layers/fontcache.py   matplotlib's font cache, built once and shipped as a seed
    layers/wheelhouse.py  on-demand wheels, index.json, PEP 503 pages
    layers/pipeline.py    the order of the steps, sizes, budgets (exit 2 naming the layer, its
                          size and its budget), the cache by input hash, manifest.json
The manifest's fields: lambdas/shared/packages/manifest.py (`LayerManifest`).

`--report --json`: the last line of stdout is
    {"layers": [{"name", "unzipped_bytes", "packages": [{"name","version"}]}],
     "total_unzipped_bytes", "budget_bytes", ...}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lambdas.shared.packages import layout
from lambdas.shared.packages.catalog import (
    DEFAULT_WHITELIST,
    CatalogError,
    load_catalog,
    read_whitelist,
)
from lambdas.shared.packages.manifest import LayerManifest
from layers.common import ARCHES, BuildError, log
from layers.pipeline import DEFAULT_CACHE_DIR, MIB, build, link_output, measure_build


def format_table(manifest: LayerManifest) -> str:
    lines = [f"{'layer':<14}{'MiB':>8}{'budget':>9}  packages"]
    for layer in manifest.layers:
        names = ", ".join(f"{p.name} {p.version}" for p in layer.packages)
        lines.append(
            f"{layer.name:<14}{layer.unzipped_bytes / MIB:>8.1f}"
            f"{layer.budget_bytes / MIB:>9.1f}  {names}"
        )
    lines.append(
        f"{'total':<14}{manifest.total_unzipped_bytes / MIB:>8.1f}"
        f"{manifest.budget_bytes / MIB:>9.1f}  (Lambda limit "
        f"{manifest.lambda_unzipped_limit_bytes / MIB:.1f} MiB incl. function code)"
    )
    on_demand = manifest.on_demand()
    if on_demand:
        lines.append("on demand (MiB unzipped, beyond the layers): " + ", ".join(
            f"{p.name} {p.bytes / MIB:.1f}" for p in on_demand))  # fmt: skip
    if manifest.import_ms is not None:
        ms = manifest.import_ms
        lines.append(
            f"cold import of {', '.join(ms.modules)}: {ms.with_pyc} ms with .pyc, "
            f"{ms.without_pyc} ms without"
        )
    return "\n".join(lines)


def report_json(manifest: LayerManifest) -> dict[str, Any]:
    return {
        "arch": manifest.arch,
        "profile": manifest.profile,
        "layers": [
            layer.model_dump(mode="json", include={"name", "unzipped_bytes", "packages"})
            for layer in manifest.layers
        ],
        "total_unzipped_bytes": manifest.total_unzipped_bytes,
        "budget_bytes": manifest.budget_bytes,
        "on_demand": [
            package.model_dump(mode="json", include={"name", "version", "bytes"})
            for package in manifest.on_demand()
        ],
        **(
            {"import_ms": manifest.import_ms.model_dump(mode="json")}
            if manifest.import_ms is not None
            else {}
        ),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m layers.build", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--arch", choices=sorted(ARCHES), default="x86_64")
    parser.add_argument("--profile", default="default", help="default | ci")
    parser.add_argument("--report", action="store_true", help="print the size table")
    parser.add_argument("--json", action="store_true", help="with --report: last line is JSON")
    parser.add_argument("--out", type=Path, default=layout.DEFAULT_OUT_DIR)
    parser.add_argument("--whitelist", type=Path, default=DEFAULT_WHITELIST)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument(
        "--measure-imports",
        action="store_true",
        help="also time cold imports of the hot modules with and without .pyc",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        read_whitelist(args.whitelist)
        root, manifest = build(
            arch=args.arch, profile=args.profile, whitelist=args.whitelist, cache_dir=args.cache_dir
        )
        if args.measure_imports:
            hot = load_catalog(args.whitelist, profile=args.profile).build.hot_imports
            manifest = measure_build(root, manifest, hot)
    except (BuildError, CatalogError) as exc:
        log(f"layers build failed: {exc}")
        return 2
    target = link_output(root, args.out, args.arch)
    log(f"layers: {target} -> {root}")
    if args.report:
        print(format_table(manifest))
        if args.json:
            print(json.dumps(report_json(manifest)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
