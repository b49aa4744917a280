"""The README's test command (scripts/test.sh): its options, that .ci/run is exactly
it, and the skipped tests' summary it relies on (one line per reason)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import skipsummary

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test.sh"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, env=env)


def test_help_names_the_options_and_installs_nothing() -> None:
    res = run("--help")
    assert res.returncode == 0, res.stderr
    for option in ("--fast", "--lab", "--no-install", "-- ARGS", "root"):
        assert option in res.stdout, res.stdout
    assert res.stderr == ""


def test_an_unknown_option_is_a_usage_error() -> None:
    res = run("--fats")
    assert res.returncode == 2
    assert "unknown option: --fats" in res.stderr and res.stdout == ""


def test_ci_runs_exactly_the_test_command() -> None:
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[-1] == "exec bash scripts/test.sh", lines
    words = " ".join(lines).split()
    assert not {"apt-get", "pip", "python3", "pytest"} & set(words), lines
    # the one list of the system packages the tests need is scripts/test.sh's
    assert "dante-server" in SCRIPT.read_text()


def test_skips_fold_into_one_line_per_reason() -> None:
    lab = "test lab unavailable: not running as root"
    skips = [(f"tests/integration/test_{n}.py::test_{i}", lab)
             for n in ("a", "b", "c", "d") for i in range(3)]
    skips += [("tests/unit/test_x.py::test_one", "needs root: chown"),
              ("tests/unit/test_x.py::test_two[1]", "needs root: chown"),
              ("tests/unit/test_y.py::test_z", "needs setpriv")]
    assert skipsummary.fold(skips) == [
        "12 tests (in tests/integration/test_a.py, tests/integration/test_b.py, "
        "tests/integration/test_c.py, ...): " + lab,
        "2 tests (in tests/unit/test_x.py): needs root: chown",
        "1 test (in tests/unit/test_y.py): needs setpriv",
    ]
    assert skipsummary.fold([]) == []


def test_a_skip_reason_is_read_from_its_report() -> None:
    assert skipsummary.reason_of(("f.py", 3, "Skipped: needs root")) == "needs root"
    assert skipsummary.reason_of(("f.py", 3, "no lab")) == "no lab"
    assert skipsummary.reason_of("Skipped: x") == "x"


def test_without_the_venv_module_it_says_what_to_install(tmp_path: Path) -> None:
    """Debian's python3 without python3-venv has no ensurepip: a user (here: `id`
    says uid 1000) is told the package to install, and nothing is created."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    (fake / "python3").write_text(
        "#!/bin/sh\ncase \"$*\" in *ensurepip*) exit 1;; esac\n"
        f"exec {sys.executable} \"$@\"\n")
    for prog in fake.iterdir():
        prog.chmod(0o755)
    venv = tmp_path / "venv"
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}",
               SOCKSIFY_TEST_VENV=str(venv))
    res = run("--fast", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "    apt-get install python3-venv\n" in res.stderr, res.stderr
    assert not venv.exists()
