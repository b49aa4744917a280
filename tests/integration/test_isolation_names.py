"""Names in the isolation path (issue 15): programs the shim cannot load into resolve
with their own resolvers -- static busybox (static glibc), a static Go client (Go's
own resolver), a static C program building its own UDP query -- and every query they
send, to whatever their resolv.conf names (here the client zone's recording resolver),
is answered by the daemon's in-namespace name server: stand-ins for names the chain
resolves remotely, NXDOMAIN for blocked ones. Watched on the wire: the recorder must
see no query, the near witness no connection, and the far server must see the
proxy zone."""

from __future__ import annotations

import ipaddress
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
GO = "/usr/bin/go"
STAND_INS = ipaddress.ip_network("240.0.0.0/4")

# fetch URL with Go's own resolver (CGO_ENABLED=0 builds nothing else), print the
# status and the body's SHA-256
GO_CLIENT = """\
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	net.DefaultResolver.PreferGo = true
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(os.Args[1])
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Printf("status %d sha256 %x\\n", resp.StatusCode, h.Sum(nil))
}
"""


def chain3(lab: lablib.Lab) -> list[str]:
    """SOCKS4, then SOCKS4a, then SOCKS5 (which carries the name to the far end)."""
    if lab.socks4a_url is None:
        skip_or_fail("no SOCKS4a hop (python package tiny-proxy) for the 3-hop chain")
    assert lab.socks4a_url is not None
    last = lab.hops[2]
    return [lab.hops[0].url, lab.socks4a_url, f"socks5://{last.host}:{last.port}"]


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.access(GO, os.X_OK):
        skip_or_fail(f"no Go toolchain at {GO} (Debian package golang-go)")
    d = tmp_path_factory.mktemp("goclient")
    (d / "main.go").write_text(GO_CLIENT)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(d), "GOCACHE": str(d / "cache"),
           "GOPATH": str(d / "gopath"), "CGO_ENABLED": "0", "GO111MODULE": "off",
           "GOPROXY": "off", "GOFLAGS": ""}   # the standard library only: no network
    r = subprocess.run([GO, "build", "-o", str(d / "client"), "main.go"], cwd=d, env=env,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"go build failed: {r.stderr[-800:]}")
    os.chmod(d, 0o755)
    return d / "client"


@pytest.fixture(scope="module")
def ownquery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build tests/programs/ownquery.c")
    assert cc is not None
    d = tmp_path_factory.mktemp("ownquery")
    r = subprocess.run([cc, "-static", "-O1", "-Wall", "-o", str(d / "ownquery"),
                        str(PROGRAMS / "ownquery.c")], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        skip_or_fail(f"cc -static failed (libc6-dev's libc.a missing?): {r.stderr[-400:]}")
    os.chmod(d, 0o755)
    return d / "ownquery"


class Wire:
    """What the lab's watchers saw before a run, to compare with after it."""

    def __init__(self, lab: lablib.Lab) -> None:
        assert lab.dns is not None and lab.witness is not None
        self.lab = lab
        self.queries = list(lab.dns.seen())
        self.witnessed = lab.witness.count()

    def assert_quiet(self) -> None:
        assert self.lab.dns is not None and self.lab.witness is not None
        time.sleep(0.3)   # let the watchers' threads count anything that got through
        leaked = self.lab.dns.seen()[len(self.queries):]
        assert not leaked, f"DNS queries reached the client zone's resolver: {leaked}"
        assert self.lab.witness.count() == self.witnessed, "a direct connection leaked"


def test_busybox_wget_by_name_through_three_hops(lab: lablib.Lab, sk,
                                                 tmp_path: Path) -> None:
    if not os.access(BUSYBOX, os.X_OK):
        skip_or_fail(f"no static busybox at {BUSYBOX} (Debian package busybox-static)")
    via = chain3(lab)
    m = f"bbname-{os.urandom(4).hex()}"
    out = tmp_path / "small.bin"
    os.chmod(tmp_path, 0o777)
    wire = Wire(lab)
    res = sk.run([BUSYBOX, "wget", "-q", "-O", str(out), lab.far_url("small.bin", m)],
                 via=via, opts=["--isolate", "-v"])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    wire.assert_quiet()
    log = sk.daemon_log(20000)
    assert f"DNS A {lablib.FAR_NAME}: stand-in" in log, sk.describe(res)


def test_static_go_client_by_name(lab: lablib.Lab, sk, go_client: Path) -> None:
    m = f"goname-{os.urandom(4).hex()}"
    wire = Wire(lab)
    res = sk.run([str(go_client), lab.far_url("small.bin", m)], via=chain3(lab),
                 opts=["--isolate", "-v"])
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.split() == ["status", "200", "sha256", lab.small_sha256], \
        sk.describe(res)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    wire.assert_quiet()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_own_query_is_answered_inside(lab: lablib.Lab, sk, ownquery: Path,
                                      transport: str) -> None:
    """The program reads resolv.conf (the recorder's address), sends its own query
    there (UDP, or TCP connected with a raw syscall), gets a stand-in from the
    in-namespace server, and connects to it with a raw syscall: carried through the
    chain by name. The recorder sees nothing."""
    m = f"ownq-{os.urandom(4).hex()}"
    wire = Wire(lab)
    extra = ["tcp"] if transport == "tcp" else []
    res = sk.run([str(ownquery), lablib.FAR_NAME, str(lab.http_port),
                  f"/small.bin?m={m}", *extra], via=chain3(lab),
                 opts=["--isolate", "-v"])
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
    assert lines.get("server") == lab.client_ip, sk.describe(res)   # the recorder's
    rcode, addr = lines.get("dns", "? ?").split(" ", 1)
    assert rcode == "0" and ipaddress.ip_address(addr) in STAND_INS, sk.describe(res)
    assert lines.get("connect") == "0", sk.describe(res)
    assert lines.get("http", "").split()[1:3] == ["HTTP/1.0", "200"], sk.describe(res)
    assert res.returncode == 0, sk.describe(res)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    wire.assert_quiet()


def test_own_udp_query_for_a_blocked_name(lab: lablib.Lab, sk, ownquery: Path,
                                          tmp_path: Path) -> None:
    """A name the policy blocks for this program (found by its query's socket in the
    namespace, as a redirected connection's program is): NXDOMAIN from the
    in-namespace server, no connect, nothing on the wire."""
    hop = lab.hops[2]
    policy = tmp_path / "names.toml"
    policy.write_text(f"""\
[chains.far]
hops = ["socks5://{hop.host}:{hop.port}"]

[[rules]]
app = ["ownquery"]
dest = ["{lablib.FAR_NAME}"]
action = "block"

[default]
action = "chain:far"
""")
    os.chmod(tmp_path, 0o755)
    wire = Wire(lab)
    res = sk.run([str(ownquery), lablib.FAR_NAME, str(lab.http_port), "/small.bin"],
                 opts=["--isolate", "-v", "-c", str(policy)])
    assert res.returncode == 1 and "dns 3 -" in res.stdout, sk.describe(res)
    assert "connect" not in res.stdout
    wire.assert_quiet()
    assert "ownquery[" in sk.daemon_log(20000)
    assert f"DNS A {lablib.FAR_NAME}: blocked" in sk.daemon_log(20000)


def daemon_logs(rt: Path) -> str:
    return "".join(f"\n--- {p} ---\n" + p.read_text(errors="replace")[-4000:]
                   for p in rt.rglob("*.log"))


def test_unprivileged_user_by_name(lab: lablib.Lab, unprivileged,  # noqa: F811
                                   go_client: Path) -> None:
    """A non-root user, no --isolate (socksify picks the path for static programs):
    static busybox wget and the static Go client fetch by host name through the
    three hops; the recorder sees no query, the witness nothing."""
    if not os.access(BUSYBOX, os.X_OK):
        skip_or_fail(f"no static busybox at {BUSYBOX} (Debian package busybox-static)")
    pw, site, rt = unprivileged
    client = site.parent / "goclient"          # the fixture's dir is root's only
    shutil.copy2(go_client, client)
    os.chmod(client, 0o755)
    env = lablib.clean_env({"PYTHONPATH": str(site), "SOCKSIFY_RUNTIME_DIR": str(rt),
                            "HOME": str(rt), "XDG_CONFIG_HOME": str(rt / "config"),
                            "XDG_STATE_HOME": str(rt / "state")})
    env.pop("XDG_RUNTIME_DIR", None)
    as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
               "--clear-groups", SYSTEM_PY]
    socksify = [*as_user, "-m", "socksify.cli", "-v"]
    for hop in chain3(lab):
        socksify += ["--via", hop]
    out = rt / "small.bin"
    mb, mg = f"ubb-{os.urandom(4).hex()}", f"ugo-{os.urandom(4).hex()}"
    wire = Wire(lab)
    try:
        res = lab.client_run([*socksify, "--", BUSYBOX, "wget", "-q", "-O", str(out),
                              lab.far_url("small.bin", mb)], env=env, timeout=60)
        assert res.returncode == 0, res.describe()
        assert lablib.sha256_file(out) == lab.small_sha256
        res = lab.client_run([*socksify, "--", str(client),
                              lab.far_url("small.bin", mg)], env=env, timeout=60)
        assert res.returncode == 0, res.describe() + daemon_logs(rt)
        assert res.stdout.split() == ["status", "200", "sha256", lab.small_sha256], \
            res.describe()
        for m in (mb, mg):
            assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
        wire.assert_quiet()
    finally:
        lab.client_run([*as_user, "-m", "socksify.service", "stop"], env=env,
                       timeout=20)
