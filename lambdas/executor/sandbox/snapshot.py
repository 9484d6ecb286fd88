"""Session namespace snapshots: cloudpickle, variable by variable. Runs only in the worker.

Only the sandboxed worker ever unpickles (SPEC invariant 3). Modules are stored by name and
re-imported; IPython's own names are skipped; a value that cannot be pickled is dropped and
named in a warning instead of failing the whole snapshot.

Format 2 keeps large buffers (numpy arrays, hence DataFrames) out of band (pickle protocol 5):
    MAGIC | header length (8 bytes, big endian) | header | buffer 0 | buffer 1 | ...
The header is a pickle of {"modules": {name: module}, "variables": [(name, pickle, n_buffers)],
"buffer_sizes": [...]}. Dumping copies no array data (the upload streams the buffers) and
loading rebuilds arrays on slices of the downloaded bytearray, so a 40 MB DataFrame costs
milliseconds, not a few full copies.

A snapshot's digest (`Snapshot.digest`) covers every byte it would upload plus the names and
types of the variables (dropped ones too, which the API lists but the bytes do not hold): equal
digests mean a restore and the API's variable list would be the same, so the worker skips the
upload (sandbox/worker.py `_save_state`). SHA-256: 40 MB in ~34 ms here with the CPU's SHA
instructions, where BLAKE2b takes ~80 and MD5 ~78 (docs/performance.md).
"""

from __future__ import annotations

import importlib
import pickle
import re
import struct
from types import ModuleType
from typing import Any, NamedTuple

MAGIC = b"LCISNAP2"
_LENGTH = struct.Struct("!Q")
# Always IPython's. `exit`, `quit`, `get_ipython` are in `user_ns_hidden` unless rebound.
_IPYTHON_NAMES = frozenset({"_", "__", "___", "In", "Out", "_oh", "_ih", "_dh", "_exit_code"})
_IPYTHON_PATTERN = re.compile(r"^(_i+|_i\d+|_\d+|__\w*__)$")
_HEAD_CHUNKS = 3  # MAGIC, header length, header; the out-of-band buffers follow


def is_snapshot_name(name: str, hidden: dict[str, Any], value: Any) -> bool:
    """Whether a user namespace entry belongs in the snapshot."""
    if name in _IPYTHON_NAMES or _IPYTHON_PATTERN.match(name):
        return False
    # Names IPython injected itself (and the user did not rebind).
    return not (name in hidden and hidden[name] is value)


def snapshot_names(namespace: dict[str, Any], hidden: dict[str, Any]) -> list[str]:
    """The names `is_snapshot_name` keeps, in namespace order, without a Python call per name:
    IPython adds `_i<N>` for every cell, so a long session's namespace is mostly history, and
    this runs on every execution."""
    match = _IPYTHON_PATTERN.match
    return [
        name
        for name, value in namespace.items()
        if name not in _IPYTHON_NAMES
        and (name[:1] != "_" or not match(name))
        and not (name in hidden and hidden[name] is value)
    ]


class Digest(NamedTuple):
    """`head`: the variable listing and the header (every pickle but the large buffers), a
    cheap first comparison; `whole`: that and every buffer, the bytes an upload sends."""

    head: bytes
    whole: bytes


class Snapshot:
    """A dumped namespace as a list of chunks, ready to be streamed (no joined copy)."""

    def __init__(
        self, chunks: list[memoryview | bytes], dropped: list[str], listing: bytes = b""
    ) -> None:
        self.chunks = chunks
        self.dropped = dropped
        self.listing = listing  # names and types of the variables, and the dropped names
        self.size = sum(memoryview(chunk).nbytes for chunk in chunks)

    def upload_hash(self) -> Any:
        """A hash to feed the chunks into as they are uploaded: its `digest()` after the last
        one is `digest().whole` of exactly the bytes that went out, even if a thread of the
        user's changed an array in between."""
        import hashlib  # here, not above: as cloudpickle below (sandbox/transfer.py says why)

        return hashlib.sha256(self.listing)

    def head_digest(self) -> tuple[bytes, Any]:
        """`Digest.head`, and the hash to continue into the buffers with."""
        running = self.upload_hash()
        for chunk in self.chunks[:_HEAD_CHUNKS]:
            running.update(chunk)
        return running.digest(), running

    def digest(self) -> Digest:
        head, running = self.head_digest()
        return Digest(head, self.finish_digest(running))

    def finish_digest(self, running: Any) -> bytes:
        """`Digest.whole` from `head_digest`'s hash: the buffers streamed through it (memoryviews,
        no copy; hashlib releases the GIL on large ones)."""
        for chunk in self.chunks[_HEAD_CHUNKS:]:
            running.update(chunk)
        return bytes(running.digest())

    def to_bytes(self) -> bytearray:
        joined = bytearray(self.size)
        offset = 0
        for chunk in self.chunks:
            view = memoryview(chunk).cast("B")
            joined[offset : offset + view.nbytes] = view
            offset += view.nbytes
        return joined


def dump_namespace(namespace: dict[str, Any], hidden: dict[str, Any]) -> Snapshot:
    """Serialize the user variables; unpicklable ones are listed in `dropped`."""
    import cloudpickle  # here, not above: the zygote forks its first worker before loading it

    modules: dict[str, str] = {}
    variables: list[tuple[str, bytes, int]] = []
    buffers: list[memoryview] = []
    dropped: list[str] = []
    names = snapshot_names(namespace, hidden)
    for name in names:
        value = namespace[name]
        if isinstance(value, ModuleType):
            modules[name] = value.__name__
            continue
        own: list[pickle.PickleBuffer] = []
        try:
            data = cloudpickle.dumps(value, protocol=5, buffer_callback=own.append)
            views = [buffer.raw() for buffer in own]
        except Exception:
            dropped.append(name)
            continue
        variables.append((name, data, len(views)))
        buffers.extend(views)
    header = pickle.dumps(
        {
            "modules": modules,
            "variables": variables,
            "buffer_sizes": [view.nbytes for view in buffers],
        },
        protocol=5,
    )
    chunks: list[memoryview | bytes] = [MAGIC, _LENGTH.pack(len(header)), header, *buffers]
    # repr quotes and escapes every string: no two listings encode alike.
    listing = repr(([(name, type(namespace[name]).__name__) for name in names], dropped))
    return Snapshot(chunks, dropped, listing.encode("utf-8", "surrogatepass"))


def load_namespace(blob: bytes | bytearray) -> tuple[dict[str, Any], list[str]]:
    """Rebuild variables from a snapshot; returns (values, warnings). Pass a bytearray so the
    restored arrays stay writable (they are built on slices of it, without copies)."""
    view = memoryview(blob)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        return {}, ["the session snapshot has an unknown format and was ignored"]
    offset = len(MAGIC)
    (header_size,) = _LENGTH.unpack_from(view, offset)
    offset += _LENGTH.size
    header = pickle.loads(view[offset : offset + header_size])  # noqa: S301 - sandbox only
    offset += header_size
    buffers: list[memoryview] = []
    for size in header["buffer_sizes"]:
        buffers.append(view[offset : offset + size])
        offset += size

    restored: dict[str, Any] = {}
    problems: list[str] = []
    for name, module_name in header["modules"].items():
        try:
            restored[name] = importlib.import_module(module_name)
        except Exception:
            problems.append(f"module {module_name!r} (as {name}) could not be re-imported")
    position = 0
    for name, data, count in header["variables"]:
        own = buffers[position : position + count]
        position += count
        try:
            restored[name] = pickle.loads(data, buffers=own)  # noqa: S301 - sandbox only
        except Exception as exc:
            problems.append(f"variable {name!r} could not be restored: {type(exc).__name__}")
    return restored, problems
