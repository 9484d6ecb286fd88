"""What goes into a layer or a slim wheel: unpacking, slimming, stripping, repacking.

Runtime-provided and completion-only distributions never get here (layers/resolve.py leaves them
out). Tests, caches, `*.pyi`, C sources, static libraries and matplotlib sample data are dropped;
shared objects are stripped, and restored where stripping breaks PT_LOAD page alignment (the
patchelf'd libraries in `*.libs`).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Iterable
from pathlib import Path

from wheel.wheelfile import WheelFile

from layers import bytecode
from layers.common import host_arch, log

PAGE_SIZE = 4096
# Directory names dropped from layers (test suites, caches) and file suffixes nobody imports.
DROP_DIRS = frozenset({"__pycache__", "tests", "test"})
# .a static libraries and .exe Windows script launchers (installer) are dead weight too.
DROP_SUFFIXES = (".pyi", ".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h", ".hpp", ".a", ".exe")
DROP_PATHS = ("matplotlib/mpl-data/sample_data",)
# Tools that strip shared objects of each architecture, best first: the host's `strip` only
# knows its own machine, llvm-strip knows them all.
STRIP_TOOLS = {
    "x86_64": ("x86_64-linux-gnu-strip", "strip", "llvm-strip"),
    "arm64": ("aarch64-linux-gnu-strip", "llvm-strip", "strip"),
}
# Repacked files carry one fixed timestamp: their mtimes would only say when this build ran.
_REPACK_DATE = (2020, 1, 1, 0, 0, 0)


def install_wheel(wheel: Path, site: Path, discard: Path) -> list[str]:
    """Unpack one wheel into `site`; scripts/data/headers go to `discard`. Returns top-level
    entries of `site` the wheel created (for attributing sizes to distributions)."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile as InstallerWheel

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
    with InstallerWheel.open(wheel) as source:
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


def drop_files(site: Path, patterns: Iterable[str]) -> None:
    """The whitelist's `drop_files` globs, relative to a layer's python/ directory."""
    for pattern in patterns:
        for path in site.glob(pattern):
            path.unlink()


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


def strip_tool(arch: str) -> str | None:
    build_host = host_arch()
    for name in STRIP_TOOLS[arch]:
        if name == "strip" and build_host != arch:
            continue  # the host's strip cannot read foreign objects
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def _strip_one(strip: str, path: Path) -> tuple[int, bool]:
    """(bytes saved, kept unstripped for page alignment) for one shared object."""
    before = path.stat().st_size
    backup = path.with_name(path.name + ".orig")
    shutil.copy2(path, backup)
    completed = subprocess.run([strip, "--strip-unneeded", str(path)], capture_output=True)
    after = path.stat().st_size
    if completed.returncode != 0 or after >= before or not load_segments_aligned(path):
        backup.replace(path)
        return 0, completed.returncode == 0 and after < before
    backup.unlink()
    return before - after, False


def strip_shared_objects(site: Path, arch: str = "x86_64") -> tuple[int, int, list[str]]:
    """strip --strip-unneeded every .so; restore any that stripping left misaligned (the
    patchelf'd libraries in `*.libs`). Returns (bytes saved, stripped count, restored names)."""
    strip = strip_tool(arch)
    if strip is None:
        log(f"warning: no strip tool for {arch} ({', '.join(STRIP_TOOLS[arch])}), "
            "shared objects stay unstripped")  # fmt: skip
        return 0, 0, []
    saved, stripped, restored = 0, 0, []
    for path in site.rglob("*.so*"):
        if not path.is_file() or path.is_symlink() or not load_segments_aligned(path):
            continue
        bytes_saved, misaligned = _strip_one(strip, path)
        if misaligned:
            restored.append(str(path.relative_to(site)))
        elif bytes_saved:
            saved += bytes_saved
            stripped += 1
    return saved, stripped, restored


def wheel_unzipped_bytes(wheel: Path) -> int:
    with zipfile.ZipFile(wheel) as archive:
        return sum(info.file_size for info in archive.infolist())


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
    if python is not None:
        bytecode.compile_tree(python, tree)
    _write_wheel(tree, destination)
    shutil.rmtree(tree, ignore_errors=True)


def _write_wheel(tree: Path, destination: Path) -> None:
    """Zip an unpacked wheel; `wheel`'s WheelFile hashes every file into a new RECORD."""
    (dist_info,) = [p for p in tree.iterdir() if p.name.endswith(".dist-info")]
    record_name = f"{dist_info.name}/RECORD"
    files = sorted(
        (p.relative_to(tree).as_posix(), p)
        for p in tree.rglob("*")
        if p.is_file() and p.relative_to(tree).as_posix() != record_name
    )
    # dist-info last, as wheel tools write it
    files.sort(key=lambda item: item[0].startswith(f"{dist_info.name}/"))
    with WheelFile(destination, "w") as archive:
        # RECORD belongs in the wheel's own dist-info, whose spelling (`PyYAML-…`) can differ
        # from the normalized one WheelFile derives from the file name.
        archive.dist_info_path = dist_info.name
        archive.record_path = record_name
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=_REPACK_DATE)
            info.external_attr = (path.stat().st_mode & 0xFFFF) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
