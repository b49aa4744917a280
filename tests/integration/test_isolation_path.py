"""The isolation path: a program the shim cannot load into (static busybox, a static
C program making raw system calls) runs in its own network namespace, where nft
rules redirect every TCP connection to the daemon, which carries it through the
policy's chain. Watched on the wire: the near witness (directly reachable from the
client zone) must see nothing from the client zone, the recording resolver no query,
the far server only the proxy zone, the hops' logs the chain."""

from __future__ import annotations

import errno
import socket
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail
from integration.test_isolate import SYSTEM_PY, unprivileged  # noqa: F401 (fixture)

pytestmark = pytest.mark.lab

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
BUSYBOX = "/usr/bin/busybox"


@pytest.fixture(scope="module")
def rawnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/programs/rawnet.c, static: the shim cannot load into it."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build tests/programs/rawnet.c")
    out = tmp_path_factory.mktemp("rawnet")
    out.chmod(0o755)
    exe = out / "rawnet"
    r = subprocess.run([cc, "-static", "-O1", "-Wall", "-o", str(exe),
                        str(PROGRAMS / "rawnet.c")],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        skip_or_fail(f"cc -static failed (libc6-dev's libc.a missing?): {r.stderr[-400:]}")
    return exe


@pytest.fixture
def busybox() -> str:
    if not os.access(BUSYBOX, os.X_OK):
        skip_or_fail(f"{BUSYBOX} missing (package busybox-static)")
    return BUSYBOX


def three_hops(lab: lablib.Lab) -> list[str]:
    """A SOCKS4 > SOCKS4a > SOCKS5 chain through the lab's three danted hops."""
    h = lab.hops
    return [f"socks4://{h[0].host}:{h[0].port}", f"socks4a://{h[1].host}:{h[1].port}",
            f"socks5://{h[2].host}:{h[2].port}"]


def witness_count(lab: lablib.Lab) -> int:
    assert lab.witness is not None
    time.sleep(0.3)   # let the accept thread count anything that got through
    return lab.witness.count()


def from_client_zone(lab: lablib.Lab) -> list[tuple[str, int]]:
    assert lab.witness is not None
    return [a for a in lab.witness.accepted if a[0] == lab.client_ip]


def test_static_busybox_wget_by_address_through_three_hops(
        lab: lablib.Lab, sk, busybox: str, tmp_path: Path) -> None:
    """No --isolate: socksify sees a static program and takes the isolation path by
    itself (-v says so); busybox wget's connection crosses all three hops."""
    m = f"isop-{os.urandom(4).hex()}"
    out = tmp_path / "small.bin"
    dns_before, hops_before = list(lab.dns.seen()), lab.hop_connects()
    witness_before = from_client_zone(lab)
    res = sk.run([busybox, "wget", "-q", "-O", str(out), lab.far_ip_url("small.bin", m)]
                 if hasattr(lab, "far_ip_url") else
                 [busybox, "wget", "-q", "-O", str(out),
                  f"http://{lab.far_ip}:{lab.http_port}/small.bin?m={m}"],
                 via=three_hops(lab), opts=["-v"])
    assert res.returncode == 0, sk.describe(res)
    assert "isolated network namespace" in res.stderr, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert lab.wait_hop_connects(hops_before, [1, 1, 1]) == [1, 1, 1]
    assert lab.dns.seen() == dns_before, f"DNS leak: {lab.dns.seen()[len(dns_before):]}"
    witness_count(lab)
    assert from_client_zone(lab) == witness_before
    log = sk.daemon_log(20000)
    assert "busybox" in log and "isolated" in log, log


def test_raw_syscall_static_program_is_carried(lab: lablib.Lab, sk, rawnet: Path,
                                               tmp_path: Path) -> None:
    """syscall(SYS_connect) from a static program: carried through the chain;
    getpeername() reports the address it connected to."""
    m = f"isop-{os.urandom(4).hex()}"
    out = tmp_path / "body"
    res = sk.run([str(rawnet), "get", lab.far_ip, str(lab.http_port),
                  f"/small.bin?m={m}", str(out)], via=three_hops(lab))
    assert res.returncode == 0, sk.describe(res)
    lines = res.stdout.splitlines()
    assert "connect 0" in lines and f"peer {lab.far_ip} {lab.http_port}" in lines, \
        sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


def write_policy(path: Path, lab: lablib.Lab) -> Path:
    """Per-app rules for three copies of the static program: A -> chain a (hop 1),
    B -> chain b (hop 2), X -> block."""
    h = lab.hops
    path.write_text(f"""\
[chains.a]
hops = ["socks4://{h[0].host}:{h[0].port}"]

[chains.b]
hops = ["socks5://{h[1].host}:{h[1].port}"]

[[rules]]
name = "static-a"
app = "skrawA"
action = "chain:a"

[[rules]]
name = "static-b"
app = "skrawB"
action = "chain:b"

[[rules]]
name = "static-x"
app = "skrawX"
action = "block"

[default]
action = "block"
""")
    return path


def test_per_app_rules_apply_to_isolated_programs(lab: lablib.Lab, sk, rawnet: Path,
                                                   tmp_path: Path) -> None:
    """The daemon finds the program behind each redirected connection (the
    namespace's socket table): a rule on its name picks chain a, another chain b,
    a block rule resets the connection before any hop is asked."""
    policy = write_policy(tmp_path / "apps.toml", lab)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    bindir.chmod(0o755)
    for name in ("skrawA", "skrawB", "skrawX"):
        shutil.copy2(rawnet, bindir / name)
    url_path = "/small.bin?m="
    for name, expected in (("skrawA", [1, 0, 0]), ("skrawB", [0, 1, 0])):
        m = f"isop-{os.urandom(4).hex()}"
        before = lab.hop_connects()
        res = sk.run([str(bindir / name), "get", lab.far_ip, str(lab.http_port),
                      url_path + m, str(tmp_path / f"{name}.out")],
                     opts=["-c", str(policy)])
        assert res.returncode == 0, sk.describe(res)
        assert lablib.sha256_file(tmp_path / f"{name}.out") == lab.small_sha256
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
        assert lab.wait_hop_connects(before, expected) == expected, name
        assert f"{name}[" in sk.daemon_log(20000), sk.daemon_log()

    m = f"isop-{os.urandom(4).hex()}"
    before, witness_before = lab.hop_connects(), from_client_zone(lab)
    res = sk.run([str(bindir / "skrawX"), "get", lab.far_ip, str(lab.http_port),
                  url_path + m, str(tmp_path / "x.out")], opts=["-c", str(policy)])
    assert res.returncode == 1, sk.describe(res)
    # connect() had succeeded (the redirect listener accepted it); the refusal is a
    # reset on the first read
    assert res.stdout.splitlines()[:3] == ["connect 0", f"peer {lab.far_ip} "
                                           f"{lab.http_port}", f"read {errno.ECONNRESET}"], \
        sk.describe(res)
    assert lab.http.requests_for(m) == []
    assert lab.hop_connects() == before
    witness_count(lab)
    assert from_client_zone(lab) == witness_before
    log = sk.daemon_log(20000)
    assert "skrawX[" in log and "static-x" in log, log


def test_udp_and_ipv6_on_a_socks4_chain_are_refused(lab: lablib.Lab, sk, rawnet: Path,
                                                    tmp_path: Path) -> None:
    """A UDP datagram to a real address (not port 53) is dropped in the namespace:
    sendto() fails with EPERM and nothing arrives. An IPv6 connect on a SOCKS4-only
    chain is redirected, refused by the daemon (ENETUNREACH in its log) and reset."""
    sink = lablib.in_netns(lab.proxy_ns, lambda: _udp_sink(lab.proxy_near_ip))
    assert isinstance(sink, socket.socket)
    witness_before = from_client_zone(lab)
    before = lab.hop_connects()
    try:
        res = sk.run([str(rawnet), "udp", lab.proxy_near_ip,
                      str(sink.getsockname()[1])], via=sk.hops(1))
        assert res.returncode == 0, sk.describe(res)
        assert res.stdout.split() == ["sendto", str(errno.EPERM)], sk.describe(res)
        res = sk.run([str(rawnet), "get", "2001:db8:77::3", "80", "/",
                      str(tmp_path / "v6.out")], via=sk.hops(1))
        assert res.returncode == 1, sk.describe(res)
        assert res.stdout.splitlines()[0] == "connect 0", sk.describe(res)
        assert f"read {errno.ECONNRESET}" in res.stdout.splitlines(), sk.describe(res)
        assert "2001:db8:77::3" in sk.daemon_log() and \
            os.strerror(errno.ENETUNREACH) in sk.daemon_log(), sk.daemon_log()
        time.sleep(0.3)
        try:
            got = sink.recvfrom(100)
        except BlockingIOError:
            got = None
        assert got is None, f"the datagram left the namespace: {got}"
        assert lab.hop_connects() == before
        witness_count(lab)
        assert from_client_zone(lab) == witness_before
    finally:
        sink.close()


def _udp_sink(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


def _lines(bg) -> list[str]:  # type: ignore[no-untyped-def]
    try:
        return bg.out_path.read_text().splitlines()
    except OSError:
        return []


def test_daemon_restart_under_an_isolated_program(lab: lablib.Lab, sk, rawnet: Path) \
        -> None:
    """The daemon stops under a running isolated program: its connects are refused
    (nothing listens on the redirect port; never direct); a new daemon starts: the
    launcher hands the namespace's sockets to it and the connects are carried
    again."""
    m = f"isop-{os.urandom(4).hex()}"
    witness_before = from_client_zone(lab)
    bg = sk.spawn(sk.argv([str(rawnet), "loop", lab.far_ip, str(lab.http_port),
                           f"/small.bin?m={m}", "40"], via=sk.hops(1)))
    lablib.wait_until(lambda: sum(ln.endswith(" ok") for ln in _lines(bg)) >= 2, 20,
                      "carried connects before the stop")
    res = sk.socksifyd("stop")
    assert res.returncode == 0, res.describe()
    seen = len(_lines(bg))
    lablib.wait_until(lambda: sum(f"fail {errno.ECONNREFUSED}" in ln
                                  for ln in _lines(bg)[seen:]) >= 3, 20,
                      "refused connects while no daemon runs")
    res = sk.socksifyd("start")
    assert res.returncode == 0, res.describe()
    seen = len(_lines(bg))
    lablib.wait_until(lambda: sum(ln.endswith(" ok") for ln in _lines(bg)[seen:]) >= 2,
                      20, "carried connects after the restart")
    bg.kill()
    assert {r.client for r in lab.http.requests_for(m)} == {lab.proxy_far_ip}
    witness_count(lab)
    assert from_client_zone(lab) == witness_before
    err = bg.result().stderr
    assert "the daemon went away" in err and "reattached" in err, err


def test_live_connection_is_listed_as_isolated(lab: lablib.Lab, sk, rawnet: Path,
                                               tmp_path: Path) -> None:
    """A carried connection is in the daemon's live table with its program and the
    data path "isolated" (the echo server holds it open until EOF)."""
    assert lab.echo is not None
    bg = sk.spawn(sk.argv([str(rawnet), "get", lab.far_ip, str(lab.echo.port), "/",
                           str(tmp_path / "echo.out")], via=sk.hops(2)))
    try:
        def listed() -> list[dict[str, object]]:
            try:
                conns = sk.control({"op": "connections"}).get("connections") or []
            except Exception:   # the daemon is still starting
                return []
            return [c for c in conns if c.get("path") == "isolated"]
        lablib.wait_until(listed, 20, "the isolated connection in the live table")
        (conn,) = listed()
        assert conn["app"] == "rawnet" and conn["target"] == \
            f"{lab.far_ip}:{lab.echo.port}", conn
        assert conn["route"] == " > ".join(sk.hops(2)), conn
    finally:
        bg.kill()


def _refused_in_nested_userns(socksify: str, tmp_path: Path, setup: str,
                              argv: list[str]) -> lablib.Result:
    """socksify ARGV (a static program, no --isolate) as uid 1234 in a user namespace
    of root's, after `setup` ran there as its root."""
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    env = lablib.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt),
                            "XDG_CONFIG_HOME": str(tmp_path / "config"),
                            "XDG_STATE_HOME": str(tmp_path / "state")})
    inner = (f"{setup} && exec unshare -U --map-user=1234 --map-group=1234 "
             f"{socksify} --via socks4://127.0.0.1:9 -- {' '.join(argv)}")
    try:
        return lablib.run(["unshare", "-U", "-r", "-m", "sh", "-c", inner], env=env,
                          timeout=30)
    finally:
        try:
            pid = int((rt / "socksifyd.pid").read_text().split()[0])
            os.kill(pid, 15)
        except (OSError, ValueError, IndexError):
            pass


def test_static_program_refused_where_user_namespaces_are_not_allowed(
        socksify_install, busybox: str, tmp_path: Path) -> None:
    """The automatic choice never runs a static program unprotected: where no user
    namespace may be made (max_user_namespaces = 1 in a user namespace of ours, so
    the global sysctl stays untouched) it exits 126 naming the sysctl."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        skip_or_fail("needs root and util-linux unshare")
    marker = tmp_path / "ran"
    res = _refused_in_nested_userns(
        socksify_install.socksify, tmp_path,
        "echo 1 > /proc/sys/user/max_user_namespaces", [busybox, "touch", str(marker)])
    assert res.returncode == 126, res.describe()
    assert "cannot isolate /usr/bin/busybox, not running it" in res.stderr, \
        res.describe()
    assert "max_user_namespaces" in res.stderr, res.describe()
    assert not marker.exists()


def test_static_program_refused_without_nft(socksify_install, busybox: str,
                                            tmp_path: Path) -> None:
    """Without the nft tool (hidden in a mount namespace of the test's) the isolation
    path cannot fence the namespace: exit 126 naming the package, nothing run."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        skip_or_fail("needs root and util-linux unshare")
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not os.path.exists(nft):
        skip_or_fail("nft missing (package nftables)")
    blank = tmp_path / "blank"
    blank.write_text("")
    blank.chmod(0o644)
    marker = tmp_path / "ran"
    res = _refused_in_nested_userns(
        socksify_install.socksify, tmp_path,
        f"mount --bind {blank} {nft} && mount --bind {blank} /usr/sbin/nft",
        [busybox, "touch", str(marker)])
    assert res.returncode == 126, res.describe()
    assert "install the nftables package" in res.stderr, res.describe()
    assert not marker.exists()


def test_unprivileged_static_busybox(lab: lablib.Lab, unprivileged, busybox: str) \
        -> None:
    """A non-root user (a user namespace, nft inside it): static busybox wget
    through a SOCKS4 > SOCKS5 chain, chosen automatically; nothing direct."""
    pw, site, rt = unprivileged
    env = lablib.clean_env({"PYTHONPATH": str(site), "SOCKSIFY_RUNTIME_DIR": str(rt),
                            "HOME": str(rt), "XDG_CONFIG_HOME": str(rt / "config"),
                            "XDG_STATE_HOME": str(rt / "state")})
    env.pop("XDG_RUNTIME_DIR", None)
    as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
               "--clear-groups", SYSTEM_PY]
    m = f"isop-{os.urandom(4).hex()}"
    out = rt / "small.bin"
    witness_before = from_client_zone(lab)
    h = lab.hops
    try:
        res = lab.client_run([*as_user, "-m", "socksify.cli", "-v", "--via", h[0].url,
                              "--via", f"socks5://{h[1].host}:{h[1].port}", "--",
                              busybox, "wget", "-q", "-O", str(out),
                              f"http://{lab.far_ip}:{lab.http_port}/small.bin?m={m}"],
                             env=env, timeout=60)
        assert res.returncode == 0, res.describe()
        assert "isolated network namespace" in res.stderr, res.describe()
        assert lablib.sha256_file(out) == lab.small_sha256
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
        witness_count(lab)
        assert from_client_zone(lab) == witness_before
    finally:
        lab.client_run([*as_user, "-m", "socksify.service", "stop"], env=env, timeout=20)


def test_host_resolver_sockets_are_hidden(lab: lablib.Lab, sk, busybox: str) -> None:
    """In its private mount namespace the program finds nscd's and systemd-resolved's
    socket directories empty (a stub resolv.conf naming 127.0.0.53 stays). The host's
    /run is untouched: the test makes its own in a mount namespace of its own."""
    if shutil.which("unshare") is None:
        skip_or_fail("needs util-linux unshare")
    look = (f"{busybox} ls -A /run/nscd /run/systemd/resolve; "
            f"{busybox} cat /run/systemd/resolve/stub-resolv.conf")
    script = ("mount --make-rprivate / && mount -t tmpfs sktest /run && "
              "mkdir -p /run/nscd /run/systemd/resolve && "
              "echo host > /run/nscd/socket && "
              "echo host > /run/systemd/resolve/io.systemd.Resolve && "
              f"exec {sk.install.socksify} --via {sk.hops(1)[0]} -- "
              f"{busybox} sh -c '{look}'")
    res = lab.client_run(["unshare", "-m", "sh", "-c", script], env=sk.env, timeout=60)
    assert res.returncode == 0, sk.describe(res)
    assert "socket" not in res.stdout and "io.systemd.Resolve" not in res.stdout, \
        sk.describe(res)
    assert "nameserver 127.0.0.53" in res.stdout, sk.describe(res)


def test_children_stay_inside(lab: lablib.Lab, sk, busybox: str, rawnet: Path,
                              tmp_path: Path) -> None:
    """A static shell's children share its namespace: a static child (busybox wget)
    and a raw-syscall one (rawnet) are both carried; nothing goes direct."""
    m1, m2 = f"isop-{os.urandom(4).hex()}", f"isop-{os.urandom(4).hex()}"
    base = f"http://{lab.far_ip}:{lab.http_port}/small.bin"
    script = (f"{busybox} wget -q -O {tmp_path / 'one'} '{base}?m={m1}' && "
              f"{rawnet} get {lab.far_ip} {lab.http_port} '/small.bin?m={m2}' "
              f"{tmp_path / 'two'} >/dev/null")
    witness_before = from_client_zone(lab)
    res = sk.run([busybox, "sh", "-c", script], via=sk.hops(2))
    assert res.returncode == 0, sk.describe(res)
    for name, m in (("one", m1), ("two", m2)):
        assert lablib.sha256_file(tmp_path / name) == lab.small_sha256
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    witness_count(lab)
    assert from_client_zone(lab) == witness_before
