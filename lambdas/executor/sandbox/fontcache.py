"""matplotlib's font cache, seeded instead of built in every new environment.

With an empty cache directory matplotlib scans and parses every font at import (0.6 to 0.9 s on
the dev box), and a new environment always starts with an empty /tmp. The fonts matplotlib
ships are recorded relative to its data path, so a cache built ahead of time (`layers.fontcache`,
run by the layers build and `make setup`) holds for any install of that matplotlib version; it
sits next to the matplotlib package and is copied into the environment's config directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil

SEED_DIRNAME = "lci-matplotlib-cache"


def seed_directory() -> str | None:
    """Where the seed of the importable matplotlib would be (locating it imports nothing)."""
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("matplotlib")
        if spec is not None and spec.origin:
            return os.path.join(os.path.dirname(os.path.dirname(spec.origin)), SEED_DIRNAME)
    return None


def seed_matplotlib_cache(cache_dir: str) -> int:
    """Copy the seeded cache files `cache_dir` lacks; returns how many were copied."""
    seed = seed_directory()
    if seed is None:
        return 0
    try:
        names = os.listdir(seed)
    except OSError:
        return 0
    copied = 0
    for name in names:
        target = os.path.join(cache_dir, name)
        if os.path.exists(target):
            continue
        with contextlib.suppress(OSError):
            shutil.copyfile(os.path.join(seed, name), target)
            copied += 1
    return copied
