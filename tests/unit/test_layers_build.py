"""Builder internals: dependency closures, the layer split, ELF alignment, stripping, repacking."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from lambdas.shared.packages.catalog import BuildSettings, Catalog, CatalogPackage, LayerSpec
from layers import artifacts, common, pipeline, resolve

ENV = resolve.marker_environment("x86_64", "3.13")


def dists(**requires):
    return {
        name: resolve.Distribution(name=name, version="1.0", requires=list(reqs))
        for name, reqs in requires.items()
    }


def test_closure_follows_markers_and_extras():
    graph = dists(
        app=["lib[fast]>=1", 'winonly; sys_platform == "win32"', 'old; python_version < "3.10"'],
        lib=["core", 'accel; extra == "fast"', 'docs; extra == "doc"'],
        core=[],
        accel=["core"],
        winonly=[],
        old=[],
        docs=[],
    )
    assert resolve.closure("app", graph, ENV, excluded=()) == ["app", "lib", "accel", "core"]


def test_closure_leaves_out_excluded_distributions():
    graph = dists(app=["boto3", "core"], boto3=["botocore"], botocore=[], core=[])
    assert resolve.closure("app", graph, ENV, excluded=("boto3",)) == ["app", "core"]


def test_arm64_markers_use_aarch64():
    graph = dists(
        app=['x86lib; platform_machine == "x86_64"', 'armlib; platform_machine == "aarch64"'],
        x86lib=[],
        armlib=[],
    )
    arm = resolve.marker_environment("arm64", "3.13")
    assert resolve.closure("app", graph, arm, excluded=()) == ["app", "armlib"]


def make_catalog(packages, layers):
    settings = BuildSettings(
        python="3.13",
        lambda_unzipped_limit_bytes=262_144_000,
        max_layers=5,
        function_reserve_bytes=0,
        exclude=("boto3",),
        drop_from_layers=("jedi",),
        hot_imports=(),
    )
    return Catalog(
        packages=packages,
        unavailable={},
        layers=[LayerSpec(name, 10**9) for name in layers],
        build=settings,
    )


def test_shared_dependencies_land_in_the_first_layer_and_on_demand_keeps_its_closure():
    graph = dists(
        numpy=[],
        pandas=["numpy", "tzdata"],
        tzdata=[],
        ipython=["jedi", "traitlets"],
        jedi=["parso"],
        parso=[],
        traitlets=[],
        sklearn=["numpy", "joblib", "boto3"],
        joblib=[],
        boto3=[],
    )
    catalog = make_catalog(
        [
            CatalogPackage("pandas", "1.0", "layer", "data"),
            CatalogPackage("numpy", "1.0", "layer", "core"),
            CatalogPackage("ipython", "1.0", "layer", "data"),
            CatalogPackage("sklearn", "1.0", "on_demand"),
        ],
        layers=["core", "data"],
    )
    plan = resolve.make_plan(catalog, graph, "x86_64")
    assert plan.layers == {"core": ["numpy"], "data": ["pandas", "tzdata", "ipython", "traitlets"]}
    assert plan.owners["tzdata"] == "pandas"
    # numpy is kept in the closure: an environment without the layers installs it too.
    assert plan.on_demand == {"sklearn": ["sklearn", "joblib", "numpy"]}


def elf(segments):
    """A minimal ELF64 little-endian header + program headers (p_type, p_offset, p_vaddr)."""
    phoff, phentsize = 64, 56
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, phentsize, len(segments))
    table = b"".join(
        struct.pack("<IIQQQQQQ", p_type, 5, offset, vaddr, vaddr, 0, 0, 4096)
        for p_type, offset, vaddr in segments
    )
    return bytes(header) + table


def test_page_alignment_check(tmp_path):
    good, bad = tmp_path / "good.so", tmp_path / "bad.so"
    good.write_bytes(elf([(1, 0, 0), (1, 0x2000, 0x3000), (2, 0x10, 0x99)]))
    bad.write_bytes(elf([(1, 0, 0), (1, 0x2100, 0x3000)]))
    assert artifacts.load_segments_aligned(good)
    assert not artifacts.load_segments_aligned(bad)
    (tmp_path / "text.so").write_text("not an ELF")
    assert not artifacts.load_segments_aligned(tmp_path / "text.so")


@pytest.mark.skipif(shutil.which("strip") is None, reason="binutils strip not installed")
def test_stripped_extension_module_is_smaller_and_still_imports(tmp_path):
    dynload = Path(sysconfig.get_paths()["stdlib"]) / "lib-dynload"
    original = next(iter(sorted(dynload.glob("_json.*.so"))), None)
    if original is None:
        pytest.skip("no _json extension module in this Python build")
    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    copy = site / "pkg" / original.name
    shutil.copy2(original, copy)
    before = copy.stat().st_size
    saved, count, restored = artifacts.strip_shared_objects(site)
    if count == 0:
        pytest.skip("the interpreter's _json is already stripped")
    assert copy.stat().st_size == before - saved < before
    assert restored == [] and not list(site.rglob("*.orig"))
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import importlib.util as u, sys; s = u.spec_from_file_location('_json', sys.argv[1]); "
         "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.scanstring('\"ok\"', 1))",
         str(copy)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert "ok" in loaded.stdout


def test_slim_drops_tests_caches_stubs_and_sample_data(tmp_path):
    keep = ["pkg/__init__.py", "pkg/testing/__init__.py", "pkg/data.json"]
    drop = [
        "pkg/tests/test_x.py",
        "pkg/__pycache__/x.cpython-313.pyc",
        "pkg/core.pyi",
        "pkg/ext.c",
        "matplotlib/mpl-data/sample_data/a.csv",
    ]
    for rel in keep + drop:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    artifacts.slim(tmp_path)
    assert all((tmp_path / rel).exists() for rel in keep)
    assert not any((tmp_path / rel).exists() for rel in drop)


def test_input_hash_changes_with_every_input(tmp_path):
    whitelist = tmp_path / "w.toml"
    whitelist.write_text("a")
    first = pipeline.input_hash(whitelist, "x86_64", "ci")
    assert first == pipeline.input_hash(whitelist, "x86_64", "ci")
    assert first != pipeline.input_hash(whitelist, "arm64", "ci")
    assert first != pipeline.input_hash(whitelist, "x86_64", "default")
    whitelist.write_text("b")
    assert first != pipeline.input_hash(whitelist, "x86_64", "ci")


def test_platform_args_target_the_lambda_runtime():
    args = resolve.platform_args("arm64", "3.13")
    assert "manylinux_2_34_aarch64" in args and "manylinux2014_aarch64" in args
    assert args[-5:] == [
        "--implementation",
        "cp",
        "--python-version",
        "3.13",
        "--only-binary=:all:",
    ]


def test_foreign_architecture_objects_are_stripped_with_a_tool_that_reads_them(monkeypatch):
    # binutils' strip on an x86_64 host cannot read aarch64 objects: arm64 layers would stay
    # unstripped and go over budget. llvm-strip (or a cross strip) reads every architecture.
    monkeypatch.setattr(common.platform, "machine", lambda: "x86_64")
    available = {"strip", "llvm-strip"}
    monkeypatch.setattr(
        artifacts.shutil, "which", lambda name: f"/usr/bin/{name}" if name in available else None
    )
    assert artifacts.strip_tool("x86_64") == "/usr/bin/strip"
    assert artifacts.strip_tool("arm64") == "/usr/bin/llvm-strip"
    available = {"strip"}
    assert artifacts.strip_tool("arm64") is None  # and the build says so instead of failing later
    available = {"strip", "aarch64-linux-gnu-strip", "llvm-strip"}
    assert artifacts.strip_tool("arm64") == "/usr/bin/aarch64-linux-gnu-strip"


def test_input_hash_covers_every_builder_and_catalog_module():
    hashed = {
        path.relative_to(pipeline.LAYERS_DIR.parent).as_posix() for path in pipeline.build_sources()
    }
    assert {
        "layers/build.py",
        "layers/resolve.py",
        "layers/artifacts.py",
        "layers/bytecode.py",
        "layers/wheelhouse.py",
        "layers/pipeline.py",
        "layers/fontcache.py",
        "lambdas/shared/packages/catalog.py",
        "lambdas/shared/packages/manifest.py",
        "lambdas/shared/packages/requirements.py",
    } <= hashed


def test_repacked_wheel_is_slim_and_its_record_matches_its_files(tmp_path):
    """RECORD goes into the wheel's own dist-info even when its spelling differs from the
    file name's (`PyYAML-…` inside `pyyaml-…whl`), and lists every file with its hash."""
    import zipfile

    from installer.sources import WheelFile

    original = tmp_path / "pyyaml-1.0-py3-none-any.whl"
    with zipfile.ZipFile(original, "w") as archive:
        archive.writestr("yaml/__init__.py", "VALUE = 1\n")
        archive.writestr("yaml/tests/test_it.py", "assert True\n")
        archive.writestr("PyYAML-1.0.dist-info/METADATA", "Name: PyYAML\nVersion: 1.0\n")
        archive.writestr(
            "PyYAML-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
        )
        archive.writestr("PyYAML-1.0.dist-info/RECORD", "stale,,\n")
    repacked = tmp_path / "out" / original.name
    repacked.parent.mkdir()
    artifacts.repack_wheel(original, repacked, None, tmp_path / "work")
    with WheelFile.open(repacked) as source:
        source.validate_record()
        names = sorted(record[0][0] for record in source.get_contents())
    assert names == [
        "PyYAML-1.0.dist-info/METADATA",
        "PyYAML-1.0.dist-info/RECORD",
        "PyYAML-1.0.dist-info/WHEEL",
        "yaml/__init__.py",
    ]
    with zipfile.ZipFile(repacked) as archive:
        assert archive.namelist()[-1] == "PyYAML-1.0.dist-info/RECORD"
