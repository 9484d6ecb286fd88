"""What the app needs on disk before it can synthesize: the package layers (built by the layers
builder, cached by input hash) and the API function's dependency layer (infra.bundling).

Both builds are instant when their inputs are unchanged; only a first build needs PyPI.
"""

from __future__ import annotations

import os
import subprocess
import sys

from infra.config import PROJECT_ROOT, StackConfig
from infra.runtime_layers import LayerSet, LayersNotBuiltError, read_layer_set
from lambdas.shared.packages.layout import DEFAULT_OUT_DIR

# The small `ci` profile builds next to (not over) the full build that `make layers` makes.
CI_PROFILE_OUT_DIR = PROJECT_ROOT / ".cache" / "layers-out" / "ci"


def executor_layer_set(config: StackConfig) -> LayerSet:
    """`layersDir` when given (an existing build), else the builder's output for the profile."""
    if config.layersDir:
        return read_layer_set(PROJECT_ROOT / config.layersDir, config.architecture)
    out = DEFAULT_OUT_DIR if config.layersProfile == "default" else CI_PROFILE_OUT_DIR
    command = [
        sys.executable, "-m", "layers.build", "--arch", config.architecture,
        "--profile", config.layersProfile, "--out", str(out),
    ]  # fmt: skip
    # The builder's output goes to stderr: the CDK CLI shows it, and stdout stays clean.
    result = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        stdout=sys.stderr,
        check=False,
    )
    if result.returncode != 0:
        raise LayersNotBuiltError(
            f"`{' '.join(command[1:])}` failed with exit code {result.returncode} (see above)"
        )
    return read_layer_set(out, config.architecture)
