"""The daemon package is typed: mypy --strict must stay clean (pyproject's [tool.mypy])."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent.parent


def test_mypy_strict_clean() -> None:
    try:
        import mypy  # noqa: F401
    except ImportError:
        if shutil.which("mypy") is None:
            skip_or_fail("mypy is not installed (pip install '.[test]')")
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
