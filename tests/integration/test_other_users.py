"""Another user against a non-root daemon's listeners, with two real users: user A
runs the daemon (its own, not root's), user B is anyone else on the machine.

- B cannot ride A's SOCKS front door: a port-only rule leading to a chain whose hop
  carries A's proxy credentials must not serve B (the `unidentified` action decides
  before any rule). Watched at a credentialed SOCKS5 hop that records every login, and
  at the far server.
- B cannot exhaust A's daemon's descriptors: with the daemon at 512 open files, B
  holds 600 idle connections to each relay listener and to the front door while A's
  socksify fetches through the lab's chain and `socksifyd status` answers."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import lab as lablib
import users as userslib
from conftest import skip_or_fail

pytestmark = pytest.mark.lab

SYSTEM_PY = userslib.SYSTEM_PY


class Users:
    """Two fresh system users, a world-readable copy of socksify and the packages its
    daemon imports (this suite's Python may live where other users cannot read), and a
    0700 runtime directory for A."""

    def __init__(self, a: pwd.struct_passwd, b: pwd.struct_passwd, root: Path) -> None:
        self.a, self.b, self.root = a, b, root
        self.site = root / "site"
        self.rt = root / "rt"
        self.env = lablib.clean_env({
            "PYTHONPATH": str(self.site), "SOCKSIFY_RUNTIME_DIR": str(self.rt),
            "HOME": str(self.rt), "XDG_CONFIG_HOME": str(self.rt / "config"),
            "XDG_STATE_HOME": str(self.rt / "state"), "PATH": "/usr/bin:/bin"})
        self.env.pop("XDG_RUNTIME_DIR", None)

    def argv(self, user: pwd.struct_passwd, *argv: str, nofile: int | None = None
             ) -> list[str]:
        limit = ["prlimit", f"--nofile={nofile}:{nofile}"] if nofile else []
        return [*limit, "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                "--clear-groups", *argv]

    def run(self, lab: lablib.Lab, user: pwd.struct_passwd, *argv: str,
            timeout: float = 60, nofile: int | None = None) -> lablib.Result:
        return lab.client_run(self.argv(user, *argv, nofile=nofile), env=self.env,
                              timeout=timeout)

    def socksifyd(self, lab: lablib.Lab, *args: str, nofile: int | None = None
                  ) -> lablib.Result:
        return self.run(lab, self.a, SYSTEM_PY, "-m", "socksify.service", *args,
                        timeout=30, nofile=nofile)

    def status(self, lab: lablib.Lab) -> dict[str, Any]:
        code = ("import json; from socksify import client; from socksify.paths import "
                "Paths; print(json.dumps(client.request(Paths.from_env(), "
                "{'op': 'status'})))")
        res = self.run(lab, self.a, SYSTEM_PY, "-c", code, timeout=30)
        assert res.returncode == 0, res.describe() + self.log()
        return json.loads(res.stdout)  # type: ignore[no-any-return]

    def pid(self) -> int:
        return int((self.rt / "socksifyd.pid").read_text().split()[0])

    def log(self) -> str:
        try:
            return (self.rt / "socksifyd.log").read_text(errors="replace")
        except OSError:
            return "(no daemon log)"


@pytest.fixture
def users(lab: lablib.Lab) -> Iterator[Users]:
    differs = userslib.system_python_differs()
    if differs:
        skip_or_fail(f"the other users' programs run under {userslib.SYSTEM_PY}: "
                     f"{differs}")
    for tool in ("useradd", "userdel", "setpriv", "prlimit", "curl"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} is missing: the test runs real users' programs")
    root = Path(tempfile.mkdtemp(prefix="skusers-"))   # in /tmp: traversable
    os.chmod(root, 0o755)
    userslib.readable_site(root / "site")
    try:
        with userslib.system_users("ab") as (a, b):
            the_users = Users(a, b, root)
            the_users.rt.mkdir(mode=0o700)
            os.chown(the_users.rt, a.pw_uid, a.pw_gid)
            try:
                yield the_users
            finally:
                try:
                    the_users.socksifyd(lab, "stop")
                except Exception:
                    pass
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start(lab: lablib.Lab, users: Users, policy: str, nofile: int | None = None
          ) -> dict[str, Any]:
    pol = users.root / "policy.toml"
    pol.write_text(textwrap.dedent(policy))
    pol.chmod(0o644)
    res = users.socksifyd(lab, "start", "-c", str(pol), nofile=nofile)
    assert res.returncode == 0, res.describe() + users.log()
    return users.status(lab)


def curl(users: Users, lab: lablib.Lab, user: pwd.struct_passwd, port: int,
         url: str) -> lablib.Result:
    return users.run(lab, user, "curl", "-q", "-sS", "--max-time", "20",
                     "--socks5-hostname", f"127.0.0.1:{port}", "-o", "/dev/null",
                     "-w", "%{http_code}", url)


# --- a credentialed SOCKS5 hop that records every login ---------------------------------

def _login_hop(lab: lablib.Lab, logins: list[tuple[str, str]]) -> lablib.HostileSocksServer:
    """A SOCKS5 hop in the proxy zone that requires user/password (RFC 1929), records
    each login, then connects to the target from the proxy zone and relays."""

    def script(conn: socket.socket) -> None:
        conn.sendall(b"\x05\x02")
        ver, ulen = lablib.recv_exact(conn, 2)
        user = lablib.recv_exact(conn, ulen).decode()
        plen = lablib.recv_exact(conn, 1)[0]
        password = lablib.recv_exact(conn, plen).decode()
        logins.append((user, password))
        conn.sendall(b"\x01\x00")
        req = lablib.recv_socks5_request(conn)
        if req[3] == 1:
            host = socket.inet_ntoa(req[4:8])
        else:
            host = req[5:5 + req[4]].decode()
        port = int.from_bytes(req[-2:], "big")
        far = lablib.socket_in(lab.proxy_ns)
        far.settimeout(20)
        far.connect((host, port))
        conn.sendall(b"\x05\x00\x00\x01" + bytes(6))

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        t = threading.Thread(target=pump, args=(far, conn), daemon=True)
        t.start()
        pump(conn, far)
        t.join(30)
        far.close()

    return lab.hostile_hop(script, socks5=True)


def test_another_user_cannot_ride_the_front_door(lab: lablib.Lab, users: Users) -> None:
    """B's curl against A's front door is refused (SOCKS5 'not allowed'): the hop
    holding A's credentials never hears from it and the far server sees nothing. A's
    own curl, same rule, goes through and logs in with A's credentials."""
    logins: list[tuple[str, str]] = []
    hop = _login_hop(lab, logins)
    try:
        status = start(lab, users, f"""\
            [chains.anon]
            hops = ["socks5://owner:s3cret@{lablib.PROXY_NEAR_IP}:{hop.port}"]

            [[rules]]
            port = [{lab.http_port}]
            action = "chain:anon"

            [default]
            action = "block"

            [frontdoor]
            listen = "127.0.0.1:0"
            """)
        port = int(str(status["frontdoor"]).rsplit(":", 1)[1])
        mb = f"userb-{os.urandom(4).hex()}"
        res = curl(users, lab, users.b, port, lab.url("small.bin", mb))
        assert res.returncode != 0 and res.stdout != "200", res.describe()
        # the same by hand: the refusal is SOCKS5's "connection not allowed" (2)
        code = textwrap.dedent(f"""\
            import socket
            s = socket.create_connection(("127.0.0.1", {port}), timeout=20)
            s.sendall(bytes([5, 1, 0]))
            assert s.recv(2) == bytes([5, 0])
            s.sendall(bytes([5, 1, 0, 1]) + socket.inet_aton("{lab.far_ip}")
                      + ({lab.http_port}).to_bytes(2, "big"))
            print(list(s.recv(10)[:2]))
            """)
        res = users.run(lab, users.b, SYSTEM_PY, "-c", code)
        assert res.returncode == 0 and res.stdout.strip() == "[5, 2]", res.describe()
        assert hop.requests == [] and logins == [], (hop.requests, logins)
        assert lab.http.requests_for(mb) == []
        log = users.log()
        assert f"uid {users.b.pw_uid} (127.0.0.1:" in log and "[unidentified]" in log, log

        ma = f"usera-{os.urandom(4).hex()}"
        res = curl(users, lab, users.a, port, lab.url("small.bin", ma))
        assert res.returncode == 0 and res.stdout == "200", res.describe() + users.log()
        assert logins == [("owner", "s3cret")]
        assert len(lab.http.requests_for(ma)) == 1
    finally:
        hop.close()


# --- a flood of idle connections ----------------------------------------------------------

FLOOD = """\
import socket, sys, time
targets = [(h, int(p)) for h, p in (t.rsplit(":", 1) for t in sys.argv[1:])]
held = []
for host, port in targets:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(600):
        s = socket.socket(fam)
        s.setblocking(False)
        try:
            s.connect_ex((host, port))
        except OSError:
            s.close()
            continue
        held.append(s)
print(len(held), flush=True)
sys.stdin.read()             # hold them until told to stop
"""


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_another_users_flood_leaves_the_owner_served(lab: lablib.Lab,
                                                     users: Users) -> None:
    """The daemon at 512 open files; B opens 600 idle connections to each relay
    listener and to the front door and holds them. Meanwhile A's socksify fetches
    through the lab's 3-hop chain on the relay data path, `socksifyd status` answers,
    and the daemon's descriptors stay bounded; B's connections are closed at once or
    capped, and logged once per burst."""
    h = lab.hops
    status = start(lab, users, f"""\
        [chains.lab]
        hops = ["{h[0].url}", "{h[1].url}", "{h[2].url}"]
        data_path = "relay"

        [default]
        action = "chain:lab"

        [frontdoor]
        listen = "127.0.0.1:0"
        """, nofile=512)
    pid = users.pid()
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert any(ln.startswith("Max open files") and ln.split()[3] == "512"
               for ln in limits.splitlines()), limits
    baseline = _fds(pid)
    relay = status["relay"]
    targets = [f"127.0.0.1:{relay['port4']}", str(status["frontdoor"])]
    if relay.get("port6"):
        targets.append(f"::1:{relay['port6']}")
    flood = subprocess.Popen(
        ["ip", "netns", "exec", lab.client_ns,
         *users.argv(users.b, SYSTEM_PY, "-c", FLOOD, *targets, nofile=4096)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=users.env, start_new_session=True)
    try:
        assert flood.stdout is not None
        line = flood.stdout.readline().strip()
        assert line and int(line) >= 600 * len(targets) - 10, \
            (line, flood.stderr.read() if flood.poll() is not None and flood.stderr
             else "")
        time.sleep(1.0)                  # let the daemon accept what it will
        peak = _fds(pid)
        # A: a fetch through the chain, relayed by the daemon, during the flood
        m = f"flood-{os.urandom(4).hex()}"
        res = users.run(lab, users.a, SYSTEM_PY, "-m", "socksify.cli", "-c",
                        str(users.root / "policy.toml"), "--", "curl", "-q", "-sS",
                        "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}",
                        lab.url("small.bin", m), timeout=60)
        assert res.returncode == 0 and res.stdout == "200", res.describe() + users.log()
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
        res = users.socksifyd(lab, "status")
        assert res.returncode == 0 and str(pid) in res.stdout, res.describe()
        peak = max(peak, _fds(pid))
        assert flood.poll() is None, "the flood ended early"
    finally:
        if flood.stdin is not None:
            flood.stdin.close()
        try:
            flood.wait(20)
        except subprocess.TimeoutExpired:
            lablib.kill_group(flood)   # type: ignore[arg-type]
    # bounded: B's front-door connections wait under its per-uid cap (16 at 512
    # files), its relay connections are closed at once
    print(f"daemon fds: baseline {baseline}, peak during the flood {peak}")
    assert peak - baseline <= 40, (baseline, peak)
    lablib.wait_until(lambda: _fds(pid) <= baseline + 4, 20, "B's connections to close")
    log = users.log()
    b = users.b.pw_uid
    foreign = [ln for ln in log.splitlines()
               if f"relay: closed connections from uid {b}," in ln]
    capped = [ln for ln in log.splitlines()
              if f"front door: closed connections from uid {b}:" in ln]
    # once per burst (every 10 s at most), not once per connection (600 each)
    assert 1 <= len(foreign) <= 10 and 1 <= len(capped) <= 10, log[-3000:]
    assert "EMFILE" not in log and "Too many open files" not in log, log[-3000:]


UNIX_FLOOD = """\
import socket, sys
held = []
for _ in range(600):
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
    except OSError:
        s.close()
        continue
    held.append(s)
print(len(held), flush=True)
sys.stdin.read()             # hold them until told to stop
"""


def test_flood_of_roots_shared_control_socket(lab: lablib.Lab, users: Users,
                                              sk) -> None:
    """Root's daemon with allow_users = [A] opens its control socket to everyone
    (0666); B, not allowed, holds 600 idle connections to it while the daemon is at
    512 open files. A's program (the shim, relay data path) still goes through the
    chain, and B's connections are capped and closed at once beyond the cap."""
    h = lab.hops
    rt = users.root / "rootrt"
    rt.mkdir(mode=0o700)
    pol = users.root / "root.toml"
    pol.write_text(textwrap.dedent(f"""\
        [chains.lab]
        hops = ["{h[0].url}", "{h[1].url}", "{h[2].url}"]
        data_path = "relay"

        [default]
        action = "chain:lab"

        [daemon]
        allow_users = ["{users.a.pw_name}"]
        """))
    env = {**sk.env, "SOCKSIFY_RUNTIME_DIR": str(rt)}
    res = lab.client_run(["prlimit", "--nofile=512:512", sk.install.socksifyd, "start",
                          "-c", str(pol)], env=env, timeout=30)
    assert res.returncode == 0, res.describe()
    pid = int((rt / "socksifyd.pid").read_text().split()[0])
    shim = users.site / "socksify" / "_shim" / "libsocksify.so"
    assert shim.is_file(), shim
    baseline = _fds(pid)
    flood = subprocess.Popen(
        ["ip", "netns", "exec", lab.client_ns,
         *users.argv(users.b, SYSTEM_PY, "-c", UNIX_FLOOD, str(rt / "control.sock"),
                     nofile=4096)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=users.env, start_new_session=True)
    try:
        assert flood.stdout is not None
        line = flood.stdout.readline().strip()
        assert line and int(line) >= 500, line
        time.sleep(1.0)
        peak = _fds(pid)
        m = f"rootflood-{os.urandom(4).hex()}"
        res = lab.client_run(
            users.argv(users.a, "env", "-i", f"SOCKSIFY_RUNTIME_DIR={rt}",
                       f"LD_PRELOAD={shim}", "PATH=/usr/bin:/bin", "curl", "-q", "-sS",
                       "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}",
                       lab.url("small.bin", m)), env=lablib.clean_env(), timeout=60)
        log = (rt / "socksifyd.log").read_text(errors="replace")
        assert res.returncode == 0 and res.stdout == "200", res.describe() + log[-3000:]
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
        peak = max(peak, _fds(pid))
        assert flood.poll() is None, "the flood ended early"
    finally:
        if flood.stdin is not None:
            flood.stdin.close()
        try:
            flood.wait(20)
        except subprocess.TimeoutExpired:
            lablib.kill_group(flood)   # type: ignore[arg-type]
        lab.client_run([sk.install.socksifyd, "stop"], env=env, timeout=30)
    print(f"root daemon fds: baseline {baseline}, peak during the flood {peak}")
    assert peak - baseline <= 40, (baseline, peak)
    log = (rt / "socksifyd.log").read_text(errors="replace")
    capped = [ln for ln in log.splitlines()
              if f"control: closed connections from uid {users.b.pw_uid}," in ln]
    assert 1 <= len(capped) <= 10, log[-3000:]     # once per burst, not per connection
    assert "Too many open files" not in log, log[-3000:]
