"""The one parser of requirement entries (`pandas>=2`, `Scikit_Learn`, `evil @ https://…`).

The catalog validates requests with it, the layers build follows `Requires-Dist` with it and the
API bundling reads requirements.txt pins with it, so a name means the same thing everywhere.
"""

from __future__ import annotations

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

__all__ = [
    "InvalidRequirement",
    "Requirement",
    "canonical_name",
    "parse_requirement",
    "requirement_name",
]


def canonical_name(name: str) -> NormalizedName:
    """PEP 503 form: `Scikit_Learn` -> `scikit-learn`."""
    return canonicalize_name(name)


def parse_requirement(entry: str) -> Requirement:
    """`entry` (surrounding whitespace ignored) as a PEP 508 requirement; InvalidRequirement
    for anything else: option lines (`-r x`), paths, junk."""
    return Requirement(entry.strip())


def requirement_name(entry: str) -> NormalizedName | None:
    """The canonical distribution name an entry asks for; None when it is not a requirement."""
    try:
        return canonical_name(parse_requirement(entry).name)
    except InvalidRequirement:
        return None
