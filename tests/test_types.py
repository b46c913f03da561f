"""The package passes the pinned type checker (mypy, configured in pyproject.toml) as CI runs it."""

import subprocess
import sys

from helpers import REPO_ROOT


def test_the_package_type_checks():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
