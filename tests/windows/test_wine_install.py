"""A Windows user's install, under Wine: pip installs socksify's Windows wheel (built
by scripts/build-windows.sh --wheel) into a Windows Python, and the socksify.exe and
socksifyd.exe it made run a program through the chain, with the DLL from the wheel and
a daemon the command starts itself."""

from __future__ import annotations

import secrets

import pytest

import lab as lablib

from .conftest import Installed, assert_crossed

# slow: about 55 s with its fixture (a pip install under Wine; -m "not slow" leaves it out)
pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_pip_installed_socksify_exe(lab: lablib.Lab, installed: Installed) -> None:
    res = installed.python("cli", ["--version"]).wait(120)
    assert res.returncode == 0 and res.stdout.startswith("socksify "), res.describe()

    before = lab.hop_connects()
    marker = "i" + secrets.token_hex(6)
    res = installed.run("blocking", [lab.far_ip, str(lab.http_port), marker],
                        via=tuple(h.url for h in lab.hops[:3]))
    assert "started socksifyd" in res.stderr, installed.describe(res)
    assert_crossed(lab, installed, res, marker, before)

    res = installed.socksifyd("stop")
    assert res.returncode == 0 and "socksifyd stopped" in res.stdout, \
        installed.describe(res)
