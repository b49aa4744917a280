"""socksify --isolate: the command runs in its own network namespace whose only way
out is the daemon (its relay, and the nft redirect of every other TCP connection,
tests/integration/test_isolation_path.py). Programs the shim cannot see into (a
static binary, raw connect system calls) do not leak there: they are carried through
the chain. Watched on the wire:
the near witness (directly reachable from the client zone) counts direct connections,
the recorder counts DNS queries, the far server records who connected."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lab as lablib
import users as userslib
from conftest import skip_or_fail

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]

# connect() through libc and through syscall(SYS_connect) to each HOST PORT argument;
# one line each: "<how> <host>:<port> <errno>" (0: connected).
STATIC_SRC = r"""
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int try(const char *how, const char *host, int port, int raw) {
    struct sockaddr_in sa = {0};
    int s = socket(AF_INET, SOCK_STREAM, 0), rc, e;
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    alarm(5);
    rc = raw ? (int)syscall(SYS_connect, s, &sa, sizeof sa)
             : connect(s, (struct sockaddr *)&sa, sizeof sa);
    e = rc == 0 ? 0 : errno;
    alarm(0);
    printf("%s %s:%d %d\n", how, host, port, e);
    close(s);
    return e;
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        try("libc", argv[i], atoi(argv[i + 1]), 0);
        try("syscall", argv[i], atoi(argv[i + 1]), 1);
    }
    return 0;
}
"""

# A dynamically linked program (the shim loads) that bypasses libc's connect().
RAW_CONNECT = textwrap.dedent("""\
    import ctypes, socket, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    s = socket.socket()
    sa = struct.pack("!HH4s8x", socket.AF_INET, int(sys.argv[2]),
                     socket.inet_aton(sys.argv[1]))
    sa = struct.pack("=H", socket.AF_INET) + sa[2:]
    rc = libc.syscall(42, s.fileno(), sa, len(sa))   # SYS_connect on x86_64
    print("errno", 0 if rc == 0 else ctypes.get_errno(), flush=True)
    """)


def s5(hop: lablib.Hop) -> str:
    return f"socks5://{hop.host}:{hop.port}"


@pytest.fixture(scope="module")
def static_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) for the static test client")
    d = tmp_path_factory.mktemp("static")
    (d / "client.c").write_text(STATIC_SRC)
    r = subprocess.run([cc, "-static", "-O1", "-o", str(d / "client"),
                        str(d / "client.c")], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        skip_or_fail(f"cc -static failed (libc6-dev's libc.a missing?): {r.stderr[-400:]}")
    os.chmod(d, 0o755)
    return d / "client"


def witness_count(lab: lablib.Lab) -> int:
    assert lab.witness is not None
    time.sleep(0.3)   # let the accept thread count anything that got through
    return lab.witness.count()


def test_fetch_by_name_through_the_chain(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    m = f"iso-{os.urandom(4).hex()}"
    out = tmp_path / "small.bin"
    before = list(lab.dns.seen())
    res = sk.run(["curl", "-q", "-sS", "--max-time", "30", "-o", str(out),
                  lab.far_url("small.bin", m)],
                 via=[lab.hops[0].url, s5(lab.hops[1])], opts=["--isolate", "-v"])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert lab.dns.seen() == before, f"DNS leak: {lab.dns.seen()[len(before):]}"
    assert lablib.FAR_NAME in sk.daemon_log()


ISOLATED_LINKS = ["lo", "socksify0", "socksify1"]   # the veth pair leads nowhere


def test_the_command_sees_only_loopback(lab: lablib.Lab, sk) -> None:
    code = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
    res = sk.run([sys.executable, "-c", code], via=sk.hops(1), opts=["--isolate"])
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.strip() == repr(ISOLATED_LINKS), sk.describe(res)


def test_static_binary_runs_and_cannot_leak(lab: lablib.Lab, sk,
                                            static_client: Path) -> None:
    """With --no-isolate the static binary is refused (it would connect directly);
    with --isolate (and by default) it runs, and every connect is carried through
    the chain: the near witness sees hop 1, never the client zone."""
    assert lab.witness is not None
    targets = [lab.proxy_near_ip, str(lab.witness.port), lab.far_ip, str(lab.http_port)]
    res = sk.run([str(static_client), *targets], via=sk.hops(1), opts=["--no-isolate"])
    assert res.returncode == 126 and "statically linked" in res.stderr, sk.describe(res)

    before = witness_count(lab)
    res = sk.run([str(static_client), *targets], via=sk.hops(1), opts=["--isolate"])
    assert res.returncode == 0, sk.describe(res)
    lines = res.stdout.split()
    results = {(lines[i], lines[i + 1]): int(lines[i + 2])
               for i in range(0, len(lines), 3)}
    assert len(results) == 4, sk.describe(res)
    for (how, target), err in results.items():
        assert err == 0, f"{how} connect to {target}: errno {err}\n" + sk.describe(res)
    lablib.wait_until(lambda: lab.witness.count() >= before + 2, 5, "the witness")
    assert all(a[0] != lab.client_ip for a in lab.witness.accepted[before:])


def test_raw_syscall_is_contained(lab: lablib.Lab, sk) -> None:
    """A dynamically linked program (the shim is loaded) that calls connect through
    syscall(2): without --isolate it reaches the near witness directly -- the hole
    the shim cannot close; with --isolate it is carried through the chain."""
    if os.uname().machine != "x86_64":
        pytest.skip("SYS_connect number hard-coded for x86_64")
    assert lab.witness is not None
    argv = [sys.executable, "-c", RAW_CONNECT, lab.proxy_near_ip, str(lab.witness.port)]
    before = witness_count(lab)
    res = sk.run(argv, via=sk.hops(1))
    assert "errno 0" in res.stdout, sk.describe(res)
    lablib.wait_until(lambda: lab.witness.count() > before, 5, "the control's leak")

    before = witness_count(lab)
    res = sk.run(argv, via=sk.hops(1), opts=["--isolate"])
    assert "errno 0" in res.stdout, sk.describe(res)
    lablib.wait_until(lambda: lab.witness.count() > before, 5, "the carried connect")
    assert all(a[0] != lab.client_ip for a in lab.witness.accepted[before:])


def test_relay_semantics_inside(lab: lablib.Lab, sk) -> None:
    """The relayed socket behaves as without isolation: getpeername() reports the
    destination, half-close carries the reply back."""
    assert lab.echo is not None
    c = sk.client("connect", lab.far_ip, str(lab.http_port), via=sk.hops(2),
                  opts=("--isolate",))
    assert c.ok and c["peer"] == [lab.far_ip, lab.http_port], c.describe()
    c = sk.client("halfclose", lab.far_ip, str(lab.echo.port), "300000", via=sk.hops(2),
                  opts=("--isolate",))
    assert c.ok, c.describe()


def test_direct_rule_is_carried_by_the_daemon(lab: lablib.Lab, sk,
                                              tmp_path: Path) -> None:
    """The isolated program has no route, so a "direct" rule is connected by the
    daemon (outside) and relayed: the witness sees the client zone's address."""
    assert lab.witness is not None
    policy = tmp_path / "direct.toml"
    policy.write_text(f'[[rules]]\ndest = ["{lab.proxy_near_ip}"]\naction = "direct"\n')
    before = witness_count(lab)
    c = sk.client("connect", lab.proxy_near_ip, str(lab.witness.port),
                  opts=("--isolate", "-c", str(policy)))
    assert c.ok and c["peer"] == [lab.proxy_near_ip, lab.witness.port], c.describe()
    lablib.wait_until(lambda: lab.witness.count() == before + 1, 5, "the witness")
    assert lab.witness.accepted[-1][0] == lab.client_ip


def test_relay_socket_is_private(lab: lablib.Lab, sk) -> None:
    res = sk.run(["true"], via=sk.hops(1), opts=["--isolate"])
    assert res.returncode == 0, sk.describe(res)
    relay = sk.runtime_dir / "relay.sock"
    assert relay.is_socket() and relay.stat().st_mode & 0o077 == 0


def test_refuses_where_user_namespaces_are_not_allowed(socksify_install,
                                                       tmp_path: Path) -> None:
    """max_user_namespaces is per user namespace: set it to 1 in namespace A, enter
    B (uid 1234) and socksify --isolate cannot create C. It must say why and never run
    the command unisolated."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        skip_or_fail("needs root and util-linux unshare")
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    marker = tmp_path / "ran"
    env = lablib.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt),
                            "XDG_CONFIG_HOME": str(tmp_path / "config"),
                            "XDG_STATE_HOME": str(tmp_path / "state")})
    inner = (f"echo 1 > /proc/sys/user/max_user_namespaces && exec unshare -U "
             f"--map-user=1234 --map-group=1234 {socksify_install.socksify} --isolate "
             f"--via socks4://127.0.0.1:9 -- touch {marker}")
    try:
        res = lablib.run(["unshare", "-U", "-r", "sh", "-c", inner], env=env, timeout=30)
        assert res.returncode == 126, res.describe()
        assert "cannot isolate touch, not running it" in res.stderr, res.describe()
        assert "max_user_namespaces" in res.stderr, res.describe()
        assert not marker.exists()
    finally:
        try:
            pid = int((rt / "socksifyd.pid").read_text().split()[0])
            os.kill(pid, 15)
        except (OSError, ValueError, IndexError):
            pass


# --- unprivileged ----------------------------------------------------------------------

SYSTEM_PY = userslib.SYSTEM_PY
USER = "skisotest"


@pytest.fixture
def unprivileged():
    """A throw-away system user, and a world-readable copy of the socksify package
    with the third-party packages the daemon imports (this test suite's Python lives
    under /root, which other users cannot read): run with /usr/bin/python3."""
    differs = userslib.system_python_differs()
    if differs:
        pytest.skip(f"the other users' programs run under {userslib.SYSTEM_PY}: "
                    f"{differs}")
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("useradd or setpriv missing")
    if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
        pytest.skip("user namespaces disabled (max_user_namespaces = 0)")
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="skiso-"))   # directly in /tmp: traversable
    os.chmod(root, 0o755)
    site = root / "site"
    userslib.readable_site(site)
    subprocess.run(["userdel", USER], capture_output=True)   # a crashed run's leftover
    r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", USER], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"useradd failed: {r.stderr.strip()}")
    try:
        import pwd
        pw = pwd.getpwnam(USER)
        rt = root / "rt"
        rt.mkdir(mode=0o700)
        os.chown(rt, pw.pw_uid, pw.pw_gid)
        yield pw, site, rt
    finally:
        subprocess.run(["pkill", "-KILL", "-u", USER], capture_output=True)
        subprocess.run(["userdel", USER], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_unprivileged_isolation(lab: lablib.Lab, unprivileged,
                                tmp_path: Path) -> None:
    """A non-root user: a user namespace plus a network namespace, the whole chain
    through the daemon (run by that user too), and still no direct connection."""
    pw, site, rt = unprivileged
    assert lab.witness is not None
    env = lablib.clean_env({"PYTHONPATH": str(site), "SOCKSIFY_RUNTIME_DIR": str(rt),
                            "HOME": str(rt), "XDG_CONFIG_HOME": str(rt / "config"),
                            "XDG_STATE_HOME": str(rt / "state")})
    env.pop("XDG_RUNTIME_DIR", None)
    as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
               "--clear-groups", SYSTEM_PY]
    m = f"unpriv-{os.urandom(4).hex()}"
    code = textwrap.dedent(f"""\
        import json, os, socket, urllib.request
        body = urllib.request.urlopen({lab.far_url('small.bin', m)!r}, timeout=30).read()
        s = socket.socket()
        s.settimeout(5)
        err = s.connect_ex(({lab.proxy_near_ip!r}, {lab.witness.port}))
        ifs = sorted(n for _, n in socket.if_nameindex())
        import hashlib
        print(json.dumps({{"sha": hashlib.sha256(body).hexdigest(), "uid": os.getuid(),
                          "ifs": ifs}}))
        """)
    before = lab.witness.count()
    try:
        res = lab.client_run([*as_user, "-m", "socksify.cli", "--isolate", "--via",
                              lab.hops[0].url, "--via", s5(lab.hops[1]), "--",
                              SYSTEM_PY, "-c", code], env=env, timeout=60)
        out = res.stdout.strip().splitlines()
        assert res.returncode == 0 and out, res.describe()
        import json
        report = json.loads(out[-1])
        assert report == {"sha": lab.small_sha256, "uid": pw.pw_uid,
                          "ifs": ISOLATED_LINKS}, \
            res.describe()
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
        # connect_ex to the witness went through the chain (hop 1 reaches it), never
        # directly from the client zone
        time.sleep(0.3)
        assert all(a[0] != lab.client_ip for a in lab.witness.accepted[before:])
    finally:
        lab.client_run([*as_user, "-m", "socksify.service", "stop"], env=env, timeout=20)
