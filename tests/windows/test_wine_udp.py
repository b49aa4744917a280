"""UDP from a Windows program under Wine: a datagram sent on an unconnected socket
(sendto, WSASendTo plain and overlapped, WSASendMsg) to a destination outside the host
is asked of the daemon as on Linux (tests/integration/test_leaks.py): refused with
WSAEACCES under a chain (the client zone's DNS recorder never sees the query), sent
under a direct rule, refused when the daemon is gone (fail closed)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

import lab as lablib

from .conftest import Win

pytestmark = pytest.mark.lab

WSAEACCES = 10013
WSAECONNREFUSED = 10061
DNS_PORT = "53"
SEND_CALLS = ["sendto", "WSASendTo", "overlapped", "WSASendMsg"]


def qname() -> str:
    return f"wudp-{secrets.token_hex(4)}.example"


def assert_not_sent(lab: lablib.Lab, name: str) -> None:
    """The recorder (in the client zone, one veth away) never got the query: the
    program has exited, so a datagram it sent would already be there; half a second
    more for the recorder's thread."""
    assert lab.dns is not None
    time.sleep(0.5)
    assert name not in lab.dns.seen(), "the datagram went out around the daemon"


@pytest.mark.parametrize("how", SEND_CALLS)
def test_datagram_is_refused_under_a_chain(lab: lablib.Lab, win: Win, how: str) -> None:
    """The program's own DNS query to the client zone's resolver, with --via: the
    call fails at once with WSAEACCES (overlapped: no WSA_IO_PENDING), the daemon logs
    the refusal, and the resolver sees nothing."""
    win.start_daemon()
    name = qname()
    res = win.run("udp", [lab.client_ip, DNS_PORT, name], via=win.sk.hops(1),
                  env={"UDPSEND": how})
    assert res.result_line()[:3] == ["RESULT", "fail", str(WSAEACCES)], win.describe(res)
    assert res.returncode == 2 and "PENDING" not in res.stdout, win.describe(res)
    assert "UDP refused" in win.sk.daemon_log(), win.describe(res)
    assert_not_sent(lab, name)


def test_datagram_goes_out_under_a_direct_rule(lab: lablib.Lab, win: Win,
                                              tmp_path: Path) -> None:
    """The daemon's policy sends the resolver's address direct (udp allowed, as for
    any direct rule): sendto goes out, the resolver sees the query and its NXDOMAIN
    answer comes back."""
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[[rules]]\nname = "resolver-direct"\ndest = "{lab.client_ip}/32"\n'
                      'action = "direct"\n\n[default]\naction = "block"\n')
    res = win.sk.socksifyd("start", "-c", str(policy))
    assert res.returncode == 0, win.sk.describe(res)
    lablib.wait_until(lambda: (win.sk.runtime_dir / "control.tcp").exists(), 10,
                      "the daemon's control.tcp")
    name = qname()
    res = win.run("udp", [lab.client_ip, DNS_PORT, name])
    line = res.result_line()
    assert res.returncode == 0 and line[:2] == ["RESULT", "ok"], win.describe(res)
    assert int(line[2]) > 12 and int(line[3]) > 12, win.describe(res)  # sent, answer
    assert lab.dns is not None and name in lab.dns.seen()
    assert "UDP direct" in win.sk.daemon_log(), win.describe(res)


def test_daemon_down_refuses_the_datagram(lab: lablib.Lab, win: Win) -> None:
    """The program starts under a live daemon, which then stops: its sendto fails
    closed (WSAECONNREFUSED, as a UDP connect would) and nothing reaches the
    resolver."""
    win.start_daemon()
    name = qname()
    res = win.run_past_stop("udp", [lab.client_ip, DNS_PORT, name], via=win.sk.hops(1))
    assert res.result_line()[:3] == ["RESULT", "fail", str(WSAECONNREFUSED)], \
        res.describe()
    assert res.returncode == 2, res.describe()
    assert_not_sent(lab, name)
