"""Where the layer builder puts things, for the CDK stack and the local stack.

    <out>/<arch>/manifest.json            what was built (see layers/build.py)
    <out>/<arch>/<layer>/python/...       one Lambda layer per directory
    <out>/<arch>/wheelhouse/index.json    on-demand index (lambdas/executor/sandbox/packages/)
    <out>/<arch>/wheelhouse/<file>.whl
    <out>/<arch>/wheelhouse/simple/<name>/index.html   PEP 503 pages (pip --index-url works too)

`<out>` defaults to `layers/build`. In S3 the wheelhouse lives under
`storage.WHEELHOUSE_PREFIX + arch + "/"`; the executor gets that prefix's URL as
`WheelhouseAccess.index_url`.

Local stack (helper E), uploading the wheelhouse to its moto bucket:

    from layers.wheelhouse import wheelhouse_objects
    for key, path in wheelhouse_objects("x86_64"):      # [] when no build exists
        s3.upload_file(str(path), bucket, key)
    index_url = f"{s3_endpoint}/{bucket}/{wheelhouse_key_prefix('x86_64')}"
"""

from __future__ import annotations

from pathlib import Path

from lambdas.shared.storage import WHEELHOUSE_PREFIX

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "build"
MANIFEST_FILENAME = "manifest.json"
WHEELHOUSE_DIRNAME = "wheelhouse"
INDEX_FILENAME = "index.json"


def build_dir(arch: str = "x86_64", out: str | Path | None = None) -> Path:
    """`<out>/<arch>`: the directory holding manifest.json, the layers and the wheelhouse."""
    return (Path(out) if out is not None else DEFAULT_OUT_DIR) / arch


def manifest_path(arch: str = "x86_64", out: str | Path | None = None) -> Path:
    return build_dir(arch, out) / MANIFEST_FILENAME


def wheelhouse_dir(arch: str = "x86_64", out: str | Path | None = None) -> Path:
    return build_dir(arch, out) / WHEELHOUSE_DIRNAME


def wheelhouse_key_prefix(arch: str = "x86_64") -> str:
    """S3 key prefix of the wheelhouse, e.g. `wheelhouse/x86_64/`."""
    return f"{WHEELHOUSE_PREFIX}{arch}/"


def wheelhouse_objects(
    arch: str = "x86_64", out: str | Path | None = None
) -> list[tuple[str, Path]]:
    """(S3 key, local file) for every wheelhouse file; [] when nothing was built."""
    root = wheelhouse_dir(arch, out)
    if not (root / INDEX_FILENAME).is_file():
        return []
    prefix = wheelhouse_key_prefix(arch)
    return [
        (prefix + path.relative_to(root).as_posix(), path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]
