"""Asset preparation without Docker: source staging and the API function's dependency layer.

Both run on the machine that synthesizes. Dependencies are installed by pip for the Lambda
platform (manylinux wheels, cp313, the target architecture) at exactly the versions this
environment runs (resolved from its installed distributions, the whole dependency closure), and
cached by a hash of those resolved versions: a new botocore under the same requirement strings
is a new bundle, and only the first synth of a version set needs PyPI; every later synth (and
`cdk deploy`) is offline.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from infra.config import PROJECT_ROOT
from lambdas.shared import limits
from lambdas.shared.packages.requirements import (
    InvalidRequirement,
    canonical_name,
    parse_requirement,
    requirement_name,
)

# The API function's runtime dependencies; their version pins come from requirements.txt so the
# local stack, the tests and the deployment run the same versions. boto3 is bundled (not taken
# from the runtime) because executor invocation relies on `TenantId` (botocore >= 1.41).
API_DISTRIBUTIONS = (
    "aws-lambda-powertools",
    "pydantic",
    "pydantic-settings",
    "tenacity",
    "cachetools",
    "boto3",
    "botocore",
    "packaging",
    "nbformat",
)
PIP_PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"),
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"),
}
DEPENDENCY_CACHE = PROJECT_ROOT / ".cache" / "api-deps"
_BUNDLING_VERSION = "2"  # bump when the install command below changes


class BundlingError(RuntimeError):
    """Assets cannot be prepared; the message says what to run or fix."""


def api_requirement_specs(requirements_file: Path | None = None) -> list[str]:
    """The pinned specs (with extras) of API_DISTRIBUTIONS, read from requirements.txt."""
    path = requirements_file or PROJECT_ROOT / "requirements.txt"
    specs: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        name = requirement_name(line)
        if name is not None and name in API_DISTRIBUTIONS:
            specs[name] = line
    for distribution in API_DISTRIBUTIONS:
        specs.setdefault(distribution, distribution)  # not pinned there: latest compatible wheel
    return [specs[distribution] for distribution in API_DISTRIBUTIONS]


def resolved_pins(specs: list[str], architecture: str) -> list[str]:
    """`specs` and their whole dependency closure as exact pins (`name[extras]==version`), at
    the versions installed in this environment (the ones the tests ran with). Markers are
    evaluated for the Lambda target (CPython 3.13 on Linux, `architecture`). A dependency not
    installed here (its marker excludes this interpreter) stays unpinned for pip to resolve."""
    environment = _target_environment(architecture)
    wanted: dict[str, set[str]] = {}
    pending = [parse_requirement(spec) for spec in specs]
    while pending:
        requirement = pending.pop()
        name = canonical_name(requirement.name)
        extras = set(requirement.extras)
        if name in wanted and extras <= wanted[name]:
            continue
        wanted.setdefault(name, set()).update(extras)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for entry in distribution.requires or []:
            try:
                dependency = parse_requirement(entry)
            except InvalidRequirement:
                continue
            marker = dependency.marker
            if marker is None or any(
                marker.evaluate({**environment, "extra": extra})
                for extra in ("", *sorted(wanted[name]))
            ):
                pending.append(dependency)
    pins = []
    for dist_name, dist_extras in sorted(wanted.items()):
        suffix = f"[{','.join(sorted(dist_extras))}]" if dist_extras else ""
        try:
            version = importlib.metadata.distribution(dist_name).version
        except importlib.metadata.PackageNotFoundError:
            pins.append(f"{dist_name}{suffix}")
            continue
        pins.append(f"{dist_name}{suffix}=={version}")
    return pins


def _target_environment(architecture: str) -> dict[str, str]:
    machine = {"x86_64": "x86_64", "arm64": "aarch64"}[architecture]
    return {
        "python_version": limits.PYTHON_VERSION,
        "python_full_version": f"{limits.PYTHON_VERSION}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
    }


def api_dependencies_layer(architecture: str, specs: list[str] | None = None) -> Path:
    """A directory holding `python/<packages>` for the API function, built once per resolved
    version set (see `resolved_pins`)."""
    pins = resolved_pins(specs or api_requirement_specs(), architecture)
    key = hashlib.sha256(
        "\n".join([_BUNDLING_VERSION, architecture, limits.PYTHON_VERSION, *pins]).encode()
    ).hexdigest()[:16]
    target = DEPENDENCY_CACHE / f"{architecture}-{key}"
    if (target / "python").is_dir():
        return target
    DEPENDENCY_CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=DEPENDENCY_CACHE))
    try:
        _pip_install(pins, architecture, building / "python")
        _slim(building / "python")
        try:
            building.rename(target)
        except OSError:  # a concurrent synth finished first: its result is identical
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return target


def _pip_install(specs: list[str], architecture: str, destination: Path) -> None:
    platforms = [arg for tag in PIP_PLATFORMS[architecture] for arg in ("--platform", tag)]
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(destination), *platforms, "--implementation", "cp",
        "--python-version", limits.PYTHON_VERSION, "--only-binary=:all:", "--no-compile",
        *specs,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BundlingError(
            "could not install the API function's dependencies for the Lambda platform "
            f"({' '.join(specs)}); the first synth of a version set needs PyPI.\n{result.stderr}"
        )


def _slim(site_packages: Path) -> None:
    for pattern in ("__pycache__", "bin"):
        for path in list(site_packages.rglob(pattern)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def stage_sources(
    relative_paths: list[str], *, optional: tuple[str, ...] = (), root: Path = PROJECT_ROOT
) -> Path:
    """Copy exactly these files/directories of the project into a fresh directory (removed at
    exit; CDK copies assets into the cloud assembly when the construct is created). Paths in
    `optional` are skipped when absent."""
    staging = Path(tempfile.mkdtemp(prefix="lci-asset-"))
    atexit.register(shutil.rmtree, staging, True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
    for relative in relative_paths:
        source = root / relative
        destination = staging / relative
        if source.is_dir():
            shutil.copytree(source, destination, ignore=ignore)
        elif source.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
        elif relative not in optional:
            raise BundlingError(f"asset source {relative} does not exist under {root}")
    return staging
