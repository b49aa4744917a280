"""The daemon refuses a shim that speaks another wire or ABI version, and says which."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from socksify import shimlib

STUB = """
unsigned socksify_wire_version(void) { return %d; }
unsigned socksify_shim_abi_version(void) { return %d; }
"""


def stub_library(tmp_path: Path, wire: int, abi: int) -> Path:
    src = tmp_path / "stub.c"
    src.write_text(STUB % (wire, abi))
    lib = tmp_path / f"libstub-{wire}-{abi}.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True,
                   timeout=60)
    return lib


@pytest.mark.parametrize("wire,abi", [(99, shimlib.SHIM_ABI_VERSION), (1, 77)])
def test_mismatch_is_refused_with_both_versions(tmp_path: Path, wire: int,
                                                abi: int) -> None:
    lib = stub_library(tmp_path, wire, abi)
    with pytest.raises(shimlib.ShimMismatch) as info:
        shimlib.check_versions(lib)
    message = str(info.value)
    assert str(lib) in message
    assert f"wire version {wire}" in message and f"ABI version {abi}" in message
    assert "reinstall" in message


def test_matching_stub_passes(tmp_path: Path) -> None:
    shimlib.check_versions(stub_library(tmp_path, 1, shimlib.SHIM_ABI_VERSION))


def test_missing_library_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(shimlib.ShimMismatch) as info:
        shimlib.check_versions(tmp_path / "nope.so")
    assert "pip install" in str(info.value)


def test_daemon_refuses_to_start_against_a_mismatched_shim(tmp_path: Path) -> None:
    lib = stub_library(tmp_path, 99, shimlib.SHIM_ABI_VERSION)
    rt = tmp_path / "rt"
    env = {**os.environ, "SOCKSIFY_SHIM": str(lib), "SOCKSIFY_RUNTIME_DIR": str(rt)}
    out = subprocess.run([sys.executable, "-m", "socksify.service", "run"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "wire version 99" in out.stderr
    assert not (rt / "control.sock").exists()
