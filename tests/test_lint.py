"""The code style is checked like the code: ruff lint and format over the whole repository."""

from __future__ import annotations

import subprocess
import sys

from tests.cli_helpers import REPO_ROOT


def test_ruff_check_and_format():
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--exclude", ".venv*"], cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
