"""The kernelspec `lci kernel install` writes: Jupyter starts `python -m lci.kernel` with the
Python that ran the install (so that environment needs the `jupyter` extra).

The API key is never written into it (kernelspecs are world-readable files): the kernel reads
`LCI_API_KEY` or the config file `lci configure` writes. `--endpoint` given to the install is
kept as the kernel's `LCI_ENDPOINT`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from lci.config import ENDPOINT_ENV

KERNEL_NAME = "lci"
REMOTE_PYTHON = "3.13"  # the Lambda runtime the code runs on (SPEC §4)
DISPLAY_NAME = f"Python {REMOTE_PYTHON} (Lambda Code Interpreter)"
JUPYTER_PIP_LINE = "pip install 'lambda-code-interpreter[jupyter]'"


def kernelspec(endpoint: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "argv": [sys.executable, "-m", "lci.kernel", "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "interrupt_mode": "signal",  # SIGINT: the kernel turns it into the interrupt route
        "metadata": {"debugger": False},
    }
    if endpoint:
        spec["env"] = {ENDPOINT_ENV: endpoint.rstrip("/")}
    return spec


def install(
    *, name: str = KERNEL_NAME, prefix: str | None = None, endpoint: str | None = None
) -> str:
    """Install the kernelspec for this user, or under `prefix` (`<prefix>/share/jupyter/
    kernels/<name>`; `sys.prefix` for the current environment); return its directory."""
    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory() as source:
        (Path(source) / "kernel.json").write_text(json.dumps(kernelspec(endpoint), indent=1) + "\n")
        return str(
            KernelSpecManager().install_kernel_spec(
                source, kernel_name=name, user=prefix is None, prefix=prefix
            )
        )
