"""The command lines' usage errors, help and version: no daemon needed."""

import os
import subprocess
import sys
import tempfile

import pytest

import socksify


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """No daemon answers (a runtime directory that does not exist): a running
    daemon, perhaps another version's, would judge the --via URLs itself."""
    with tempfile.TemporaryDirectory(prefix="skcli-") as d:
        env = {**os.environ, "SOCKSIFY_RUNTIME_DIR": os.path.join(d, "none")}
        return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                              text=True, timeout=30, env=env)


@pytest.mark.parametrize("module,name", [("socksify.cli", "socksify"),
                                         ("socksify.service", "socksifyd")])
def test_version_and_help(module: str, name: str) -> None:
    out = run(module, "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"{name} {socksify.__version__}"
    helptext = run(module, "--help")
    assert helptext.returncode == 0 and "usage:" in helptext.stdout


def test_missing_command_is_a_usage_error() -> None:
    out = run("socksify.cli", "--via", "socks4://10.0.0.1:1080")
    assert out.returncode == 2
    assert "missing COMMAND" in out.stderr


def test_bad_url_is_a_usage_error_with_a_hint() -> None:
    out = run("socksify.cli", "--via", "ftp://10.0.0.1:3128", "true")
    assert out.returncode == 2
    assert "unsupported proxy type" in out.stderr and "socks4://HOST:PORT" in out.stderr


def test_check_config_reports_file_and_line(tmp_path: object) -> None:
    import pathlib
    f = pathlib.Path(str(tmp_path)) / "bad.toml"
    f.write_text("[chains.a]\nhops = [\"socks4://h:1\"]\ncolour = 1\n")
    out = run("socksify.service", "check-config", str(f))
    assert out.returncode == 1
    assert f"{f}:3: unknown key 'colour'" in out.stderr
