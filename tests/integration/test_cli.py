"""The socksify launcher's own contract: exit status, usage errors."""

from __future__ import annotations

import pytest

import lab as lablib

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("status", [0, 7, 255])
def test_exit_status_is_the_commands(lab: lablib.Lab, sk, status: int) -> None:
    res = sk.run(["sh", "-c", f"exit {status}"], via=sk.hops(1))
    assert res.returncode == status, sk.describe(res)


def test_command_not_found_is_127(lab: lablib.Lab, sk) -> None:
    res = sk.run(["/nonexistent/socksify-test-command"], via=sk.hops(1))
    assert res.returncode == 127, sk.describe(res)


@pytest.mark.parametrize("argv", [["--via", "{hop}"], ["--via", "{hop}", "--"], []],
                         ids=["no-command", "dashdash-only", "nothing"])
def test_missing_command_is_usage_error(lab: lablib.Lab, sk, argv: list[str]) -> None:
    argv = [a.format(hop=lab.hops[0].url) for a in argv]
    res = sk.run([], raw_argv=argv, timeout=30)
    assert res.returncode == 2, sk.describe(res)
    assert "usage" in res.stderr.lower(), sk.describe(res)


@pytest.mark.parametrize("url", ["http://x", "socks4://10.77.1.2", "10.77.1.2:1080",
                                 "socks4://10.77.1.2:99999"])
def test_bad_via_url_is_usage_error_with_hint(lab: lablib.Lab, sk, url: str) -> None:
    res = sk.run(["true"], via=[url], timeout=30)
    assert res.returncode == 2, sk.describe(res)
    assert url in res.stderr, f"the message should name the bad URL\n{sk.describe(res)}"
    assert "socks4://" in res.stderr, f"the message should hint at the form\n" \
        f"{sk.describe(res)}"
