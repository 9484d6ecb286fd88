"""Internet mode: `pip install --target` from PyPI, for a package the wheelhouse lacks."""

from __future__ import annotations

import sys
from pathlib import Path

from lambdas.executor.sandbox.packages.index import PackageInstallError, requirement_name


def install_from_pypi(spec: str, root: Path) -> Path:
    """Internet mode without a wheelhouse entry: let pip resolve and fetch from PyPI."""
    import shutil
    import subprocess
    import tempfile

    name = requirement_name(spec)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-pypi-", dir=root))
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
        "--disable-pip-version-check", "--no-compile", "--only-binary=:all:",
        "--target", str(staging / "site"), spec,
    ]  # fmt: skip
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if completed.returncode != 0:
            tail = completed.stderr.strip().splitlines()[-1:] or ["pip failed"]
            raise PackageInstallError(f"cannot install {name} from PyPI: {tail[0]}")
        final = root / f"{name}-pypi"
        try:
            (staging / "site").rename(final)
        except OSError:
            if not final.is_dir():
                raise
        return final
    except subprocess.TimeoutExpired as exc:
        raise PackageInstallError(f"installing {name} from PyPI timed out") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
