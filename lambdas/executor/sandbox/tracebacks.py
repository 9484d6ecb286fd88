"""Tracebacks as the user should see them: their own frames, not the executor's.

The worker runs the user's code through its own machinery (the import hook that installs
on-demand packages, `%pip`, the captured streams), so a traceback may pass through
lambdas/executor — and from there through urllib, installer, pip — with this machine's paths.
None of that helps the user. Frames of the executor go; an error the executor itself raised
for the user (a package that is not whitelisted, a write of bytes to stdout) keeps only the
user's frames and its message, without the chain of internal causes behind it. A very deep
stack keeps its first and last frames only."""

from __future__ import annotations

import os
from types import TracebackType

_EXECUTOR_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# A deep stack (a raised recursion limit) is cut to its first and last frames: formatting
# 20 000 frames takes IPython longer than a cell's timeout.
KEPT_OUTER_FRAMES = 20
KEPT_INNER_FRAMES = 40
PACKAGES_HINT = "GET /v1/packages lists what this deployment offers"
_MISSING_MODULE_NOTE = f"This environment does not have it: {PACKAGES_HINT}."


def _filename(entry: TracebackType) -> str:
    return entry.tb_frame.f_code.co_filename


def is_executor_file(filename: str) -> bool:
    return filename.startswith(_EXECUTOR_ROOT)


def is_user_file(filename: str) -> bool:
    """A cell (`<ipython-input-…>`), code the user exec'd, or a module in their workspace."""
    if filename.startswith("<"):
        return not filename.startswith("<frozen ")
    return filename.startswith(os.getcwd() + os.sep)


def _entries(tb: TracebackType | None) -> list[TracebackType]:
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    return entries


def _relink(entries: list[TracebackType]) -> TracebackType | None:
    linked: TracebackType | None = None
    for entry in reversed(entries):
        linked = TracebackType(linked, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return linked


def for_user(value: BaseException, tb: TracebackType | None) -> TracebackType | None:
    """`tb` (of `value`, raised by a cell) without the executor's frames; `value` and its
    chain are updated to match. The first entry is kept: it is the shell's own frame, which
    the shell's traceback formatter skips (tb_offset)."""
    entries = _entries(tb)
    if not entries:
        return tb
    if is_executor_file(_filename(entries[-1])):
        # Raised by the executor on the user's behalf: the message is the point.
        value.__cause__ = None
        value.__suppress_context__ = True
        kept = entries[:1] + [entry for entry in entries[1:] if is_user_file(_filename(entry))]
    else:
        if isinstance(value, ModuleNotFoundError) and is_user_file(_filename(entries[-1])):
            _note_missing_module(value)
        kept = entries[:1] + [e for e in entries[1:] if not is_executor_file(_filename(e))]
        _clean_chain(value, {id(value)})
    kept = _cut_deep(value, kept, 1)
    if len(kept) == len(entries):
        return tb
    trimmed = _relink(kept)
    value.__traceback__ = trimmed
    return trimmed


def _cut_deep(value: BaseException, entries: list[TracebackType], head: int) -> list[TracebackType]:
    """At most the first and the last frames of a deep stack (`head` leading entries that
    are not the user's are kept on top), with a note of how many were left out."""
    outer = head + KEPT_OUTER_FRAMES
    if len(entries) <= outer + KEPT_INNER_FRAMES:
        return entries
    omitted = len(entries) - outer - KEPT_INNER_FRAMES
    value.add_note(f"[... {omitted} frames in the middle of this traceback are not shown]")
    return entries[:outer] + entries[-KEPT_INNER_FRAMES:]


def _clean_chain(value: BaseException, seen: set[int]) -> None:
    for linked in (value.__cause__, value.__context__):
        if linked is None or id(linked) in seen:
            continue
        seen.add(id(linked))
        entries = _entries(linked.__traceback__)
        kept = [entry for entry in entries if not is_executor_file(_filename(entry))]
        kept = _cut_deep(linked, kept, 0)
        if len(kept) != len(entries):
            linked.__traceback__ = _relink(kept)
        _clean_chain(linked, seen)


def _note_missing_module(value: ModuleNotFoundError) -> None:
    """`import torch` of a top-level module nobody has: say where the list of packages is."""
    if value.name and "." not in value.name:
        notes = getattr(value, "__notes__", None)
        if not notes or _MISSING_MODULE_NOTE not in notes:
            value.add_note(_MISSING_MODULE_NOTE)
