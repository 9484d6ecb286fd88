"""The synthesized template passes cfn-lint (errors; W3005 is CDK's redundant DependsOn), as
`make synth-check` requires; cdk-nag already ran in the `synthesized` fixture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.infra.conftest import Synthesized


def test_the_template_passes_cfn_lint(synthesized: Synthesized) -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    templates = sorted(str(path) for path in synthesized.outdir.glob("*.template.json"))
    assert templates
    result = subprocess.run(
        [str(cfn_lint), "--ignore-checks", "W3005", "--non-zero-exit-code", "error", *templates],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
