"""The network-namespace test lab: a client zone, a proxy zone and a far zone.

    client zone  ──veth──  proxy zone  ──veth──  far zone
    10.77.1.1              10.77.1.2 | 10.77.2.2  10.77.2.3
                           3 danted SOCKS4 hops   HTTP server (big/small files)
                           near witness (TCP)     echo-until-EOF server
                           silent hop (never answers)

No forwarding anywhere (ip_forward=0 in every namespace), so the client zone reaches the
far zone only through a SOCKS hop in the proxy zone. Every name is unique to the run
("sk" + 6 hex digits + a role letter); `Lab.close()` kills every process the lab started
and deletes its namespaces, and is safe to call on a half-built lab.

The servers in the proxy and far zones (HTTP, echo, witness, silent hop) run in this
process: a short-lived thread enters the namespace with setns(2), creates the listening
socket there and exits; the socket stays in that namespace, so the test can read the
servers' records directly. Only the danted hops and the commands under test are separate
processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_mod
import hashlib
import http.server
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

CLIENT_IP = "10.77.1.1"
PROXY_NEAR_IP = "10.77.1.2"
PROXY_FAR_IP = "10.77.2.2"
FAR_IP = "10.77.2.3"
FAR_NAME = "far.socksify.test"   # resolvable only inside the proxy zone
HOP_PORTS = (10801, 10802, 10803)
DEAD_HOP_PORT = 10809          # nothing ever listens here (in the proxy zone)
SOCKS4A_PORT = 10804           # tiny-proxy (PyPI): a SOCKS4a hop (danted has no 4a)
_SOCKS4A_SERVER = (
    "import anyio, sys\n"
    "from tiny_proxy import Socks4ProxyHandler\n"
    "async def main():\n"
    "    listener = await anyio.create_tcp_listener(local_host='0.0.0.0',\n"
    "                                               local_port=int(sys.argv[1]))\n"
    "    await listener.serve(Socks4ProxyHandler().handle)\n"
    "anyio.run(main)\n")
BIG_SIZE = 16 * 1024 * 1024
SMALL_SIZE = 1024 * 1024

DANTED = "/usr/sbin/danted"
CLONE_NEWNET = 0x40000000

# Environment variables that would send a client to some other proxy, or point socksify
# somewhere else than the per-test runtime dir; stripped from every command's environment.
_STRIP_ENV = re.compile(r"^(?:(?:http|https|ftp|all|no|socks)_proxy|SOCKSIFY_.*|LD_PRELOAD"
                        r"|LD_BIND_NOW|CURL_HOME)$", re.IGNORECASE)


class LabError(RuntimeError):
    """The lab could not be built or a lab operation failed."""


class CommandTimeout(AssertionError):
    """A command run in a namespace did not finish within its timeout (it was killed)."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_prerequisites() -> list[str]:
    """What this machine lacks to build the lab (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("not running as root (network namespaces need root)")
    for tool in ("ip", "curl"):
        if shutil.which(tool) is None:
            missing.append(f"{tool!r} not found on PATH")
    if not os.access(DANTED, os.X_OK):
        missing.append(f"{DANTED} missing (apt-get install dante-server)")
    if not missing:
        probe = "sk" + secrets.token_hex(3) + "x"
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                           timeout=20)
        if r.returncode != 0:
            missing.append(f"cannot create a network namespace: {r.stderr.strip()}")
        else:
            subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return missing


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus proxy settings and socksify variables."""
    env = {k: v for k, v in os.environ.items() if not _STRIP_ENV.match(k)}
    if extra:
        env.update(extra)
    return env


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    def describe(self) -> str:
        return (f"command: {' '.join(self.argv)}\nexit status: {self.returncode} "
                f"(after {self.elapsed:.1f}s)\n--- stdout ---\n{self.stdout[-4000:]}"
                f"\n--- stderr ---\n{self.stderr[-4000:]}")


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60,
        input: bytes | None = None, cwd: str | None = None) -> Result:
    """Run argv with a timeout; on timeout kill its whole process group and raise
    CommandTimeout carrying whatever it printed."""
    argv = [str(a) for a in argv]
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=dict(env) if env is not None else clean_env(),
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:   # something still holds the pipes open
            proc.kill()
            out, err = b"", b"(output lost: pipes still held open after kill)"
        res = Result(argv, -9, out.decode(errors="replace"), err.decode(errors="replace"),
                     time.monotonic() - start)
        raise CommandTimeout(f"timed out after {timeout}s and was killed\n" + res.describe())
    return Result(argv, proc.returncode, out.decode(errors="replace"),
                  err.decode(errors="replace"), time.monotonic() - start)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with start_new_session=True and everything in its
    process group, then reap it (bounded)."""
    if proc.poll() is None:
        _killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.05) -> object:
    """Poll predicate until it returns something truthy; raise with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- entering a namespace from one thread --------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns: str, fn: Callable[[], object]) -> object:
    """Call fn in a fresh thread that has joined network namespace ns; return its result.
    Sockets created there stay in ns after the thread is gone."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({ns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:   # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=body, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


def socket_in(ns: str, family: int = socket.AF_INET,
              type: int = socket.SOCK_STREAM) -> socket.socket:
    return in_netns(ns, lambda: socket.socket(family, type))  # type: ignore[return-value]


def listener_in(ns: str, host: str = "0.0.0.0", port: int = 0) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(128)
        return s
    return in_netns(ns, make)  # type: ignore[return-value]


def try_connect(ns: str, host: str, port: int, timeout: float = 1.0) -> int:
    """Connect from namespace ns; return 0 on success or the errno (ETIMEDOUT on timeout)."""
    s = socket_in(ns)
    try:
        s.settimeout(timeout)
        e = s.connect_ex((host, port))
        # with a timeout set, CPython reports a timed-out connect as EAGAIN
        return errno_mod.ETIMEDOUT if e in (errno_mod.EAGAIN, errno_mod.EINPROGRESS) else e
    except socket.timeout:
        return errno_mod.ETIMEDOUT
    finally:
        s.close()


# --- in-process servers ---------------------------------------------------------------

class _Server:
    """An accept loop in a daemon thread; handle(conn, addr) runs in its own thread."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.name = name
        self._lock = threading.Lock()
        self.accepted: list[tuple[str, int]] = []
        self._closing = False
        self._conns: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def _loop(self) -> None:
        while not self._closing:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted.append(addr)
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, addr), daemon=True).start()

    def _serve(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        try:
            self.handle(conn, addr)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)


class WitnessServer(_Server):
    """Counts accepted connections; reads until EOF (or 30 s) and closes."""

    def handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        conn.settimeout(30)
        while conn.recv(65536):
            pass


class SilentServer(_Server):
    """Accepts and never says a word: a hop that does not answer."""

    def handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        conn.settimeout(60)
        while conn.recv(65536):
            pass


class EchoHashServer(_Server):
    """Reads until EOF, then replies "<sha256 hex> <byte count>\\n" and closes."""

    def handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        conn.settimeout(60)
        echo_hash(conn)


# --- a SOCKS hop that misbehaves on purpose ---------------------------------------------
#
# Written from the protocol descriptions, independently of socksify's own parsers, so a
# shared misreading cannot hide a bug. A script gets the accepted connection after the
# server has read the client's whole SOCKS4/4a request (or SOCKS5 greeting) and does
# whatever the test wants: a bad reply, a late one, none at all, a reset.

Script = Callable[[socket.socket], None]


def recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def recv_until_nul(conn: socket.socket, limit: int = 1024) -> bytes:
    data = b""
    while not data.endswith(b"\0"):
        if len(data) > limit:
            raise ConnectionError("no NUL within the limit")
        data += recv_exact(conn, 1)
    return data


def recv_socks4_request(conn: socket.socket) -> bytes:
    """VN CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL] (SOCKS4a when DSTIP is 0.0.0.x)."""
    head = recv_exact(conn, 8)
    if head[0] != 4:
        raise ConnectionError(f"not a SOCKS4 request: {head!r}")
    data = head + recv_until_nul(conn)
    if head[4:7] == b"\0\0\0" and head[7] != 0:
        data += recv_until_nul(conn)
    return data


def recv_socks5_greeting(conn: socket.socket) -> bytes:
    head = recv_exact(conn, 2)
    return head + recv_exact(conn, head[1])


def recv_socks5_request(conn: socket.socket) -> bytes:
    """VER CMD RSV ATYP DST.ADDR DST.PORT."""
    head = recv_exact(conn, 4)
    atyp = head[3]
    if atyp == 1:
        return head + recv_exact(conn, 4 + 2)
    if atyp == 4:
        return head + recv_exact(conn, 16 + 2)
    n = recv_exact(conn, 1)
    return head + n + recv_exact(conn, n[0] + 2)


def echo_hash(conn: socket.socket) -> None:
    """Act as the target: read until EOF, answer "<sha256 hex> <count>\\n" and close
    (like EchoHashServer)."""
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = conn.recv(262144)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    conn.sendall(f"{h.hexdigest()} {n}\n".encode())


def reset(conn: socket.socket) -> None:
    """Make the close that follows a TCP reset (SO_LINGER on, 0 seconds)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def linger_until_eof(conn: socket.socket) -> None:
    """Stop sending (FIN) and read until the peer closes, so the close is clean."""
    try:
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
    except OSError:
        pass


class HostileSocksServer(_Server):
    """A SOCKS4 (or SOCKS5: socks5=True) hop that reads the client's request (SOCKS5:
    only the greeting) and hands the connection to `script`. Every request read is
    kept in `requests`; a script that raises is recorded in `errors`."""

    def __init__(self, sock: socket.socket, name: str, script: Script,
                 socks5: bool = False) -> None:
        self.script = script
        self.socks5 = socks5
        self.requests: list[bytes] = []
        self.errors: list[BaseException] = []
        super().__init__(sock, name)

    @property
    def url(self) -> str:
        return f"{'socks5' if self.socks5 else 'socks4'}://{PROXY_NEAR_IP}:{self.port}"

    def handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        conn.settimeout(30)
        try:
            first = recv_socks5_greeting(conn) if self.socks5 else recv_socks4_request(conn)
            with self._lock:
                self.requests.append(first)
            self.script(conn)
        except Exception as exc:
            with self._lock:
                self.errors.append(exc)
            raise


class DnsRecorder:
    """The client zone's resolver (its /etc/netns resolv.conf points here): records
    the name of every query that reaches it and answers NXDOMAIN. Any recorded query
    for a proxied name is a DNS leak."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="dns-recorder",
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def qname(packet: bytes) -> str:
        labels, i = [], 12
        while i < len(packet) and packet[i]:
            n = packet[i]
            labels.append(packet[i + 1:i + 1 + n].decode(errors="replace"))
            i += 1 + n
        return ".".join(labels)

    def _loop(self) -> None:
        while True:
            try:
                packet, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            if len(packet) < 12:
                continue
            with self._lock:
                self.queries.append(self.qname(packet))
            # the same id and question, flags: response, recursion available, NXDOMAIN
            reply = packet[:2] + bytes([0x81, 0x83]) + packet[4:6] + bytes(6) + \
                packet[12:]
            try:
                self.sock.sendto(reply, addr)
            except OSError:
                pass

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.queries)

    def close(self) -> None:
        self.sock.close()
        self._thread.join(5)


@dataclass(frozen=True)
class HttpRequest:
    client: str
    client_port: int
    path: str


class _HttpHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def do_GET(self) -> None:
        self.server.record(HttpRequest(self.client_address[0],  # type: ignore[attr-defined]
                                       self.client_address[1], self.path))
        super().do_GET()


class FarHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, directory: str) -> None:
        super().__init__(sock.getsockname(), partial(_HttpHandler, directory=directory),
                         bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.port = sock.getsockname()[1]
        self.requests: list[HttpRequest] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="far-http", daemon=True)
        self._thread.start()

    def record(self, req: HttpRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def requests_for(self, marker: str) -> list[HttpRequest]:
        with self._lock:
            return [r for r in self.requests if marker in r.path]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


# --- danted hops ----------------------------------------------------------------------

@dataclass
class Hop:
    index: int                 # 1-based
    ns: str
    host: str                  # the address the client zone uses
    port: int
    conf: Path
    pidfile: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"socks4://{self.host}:{self.port}"

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connect_lines(self) -> list[str]:
        """One line per tunnel danted opened (`log: connect` in the socks rule writes
        "pass(1): tcp/connect [: CLIENT HOP -> OUT TARGET" when the tunnel is up)."""
        return [ln for ln in self.read_log().splitlines() if "pass(" in ln
                and "tcp/connect [: " in ln]

    def connect_targets(self, since: int = 0) -> list[str]:
        """The target ("IP.PORT", danted's spelling) of each tunnel after the first
        `since` ones."""
        return [ln.split()[-1] for ln in self.connect_lines()[since:]]

    def failed_lines(self) -> list[str]:
        """Lines for requests whose target connect failed ("tcp/connect ]: … remote peer
        error (Connection refused)")."""
        return [ln for ln in self.read_log().splitlines() if "tcp/connect ]: " in ln
                and "remote peer error" in ln]

    def connects(self) -> int:
        return len(self.connect_lines())


def _danted_conf(hop_log: Path, port: int, ifaces: Iterable[str]) -> str:
    ext = "".join(f"external: {i}\n" for i in ifaces)
    return (
        f"logoutput: {hop_log}\n"
        f"internal: 0.0.0.0 port = {port}\n"
        f"{ext}"
        "external.rotation: route\n"
        "clientmethod: none\n"
        "socksmethod: none\n"
        "user.privileged: root\n"
        "user.unprivileged: nobody\n"
        "timeout.negotiate: 30\n"
        "client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }\n"
        "socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect\n"
        " log: connect error }\n"
    )


# --- the lab --------------------------------------------------------------------------

@dataclass
class Lab:
    tag: str = field(default_factory=lambda: "sk" + secrets.token_hex(3))
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sklab-")))
    hops: list[Hop] = field(default_factory=list)
    big_sha256: str = ""
    small_sha256: str = ""
    http: FarHttpServer | None = None
    echo: EchoHashServer | None = None
    witness: WitnessServer | None = None
    silent: SilentServer | None = None
    dns: DnsRecorder | None = None
    socks4a: subprocess.Popen[bytes] | None = None
    _namespaces: list[str] = field(default_factory=list)

    # names
    @property
    def client_ns(self) -> str:
        return self.tag + "c"

    @property
    def proxy_ns(self) -> str:
        return self.tag + "p"

    @property
    def far_ns(self) -> str:
        return self.tag + "f"

    client_ip = CLIENT_IP
    proxy_near_ip = PROXY_NEAR_IP
    proxy_far_ip = PROXY_FAR_IP
    far_ip = FAR_IP

    @property
    def dead_hop_url(self) -> str:
        """A SOCKS4 URL in the proxy zone where nothing listens: connecting is refused."""
        return f"socks4://{PROXY_NEAR_IP}:{DEAD_HOP_PORT}"

    @property
    def silent_hop_url(self) -> str:
        """A SOCKS4 URL whose server accepts and never answers."""
        assert self.silent is not None
        return f"socks4://{PROXY_NEAR_IP}:{self.silent.port}"

    @property
    def http_port(self) -> int:
        assert self.http is not None
        return self.http.port

    def url(self, name: str = "big.bin", marker: str | None = None) -> str:
        q = f"?m={marker}" if marker else ""
        return f"http://{FAR_IP}:{self.http_port}/{name}{q}"

    @property
    def big_path(self) -> Path:
        return self.workdir / "www" / "big.bin"

    # building
    def build(self) -> "Lab":
        t = self.tag
        c, p, f = self.client_ns, self.proxy_ns, self.far_ns
        for ns in (c, p, f):
            r = _ip("netns", "add", ns, check=False)
            if r.returncode != 0:
                if "exists" not in r.stderr:
                    raise LabError(f"ip netns add {ns}: {r.stderr.strip()}")
                # a leftover of a crashed run with our name: start from a clean one
                _ip("netns", "del", ns, check=False)
                _ip("netns", "add", ns)
            self._namespaces.append(ns)
        v_cp, v_pc, v_pf, v_fp = t + "cp", t + "pc", t + "pf", t + "fp"
        _ip("-n", c, "link", "add", v_cp, "type", "veth", "peer", "name", v_pc, "netns", p)
        _ip("-n", p, "link", "add", v_pf, "type", "veth", "peer", "name", v_fp, "netns", f)
        for ns, dev, addr in ((c, v_cp, CLIENT_IP), (p, v_pc, PROXY_NEAR_IP),
                              (p, v_pf, PROXY_FAR_IP), (f, v_fp, FAR_IP)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        for ns in (c, p, f):
            _ip("-n", ns, "link", "set", "lo", "up")
            # new namespaces start with forwarding off; make it explicit
            self.ns_run(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0"], timeout=10,
                        check=True)
        # default routes towards the proxy zone, so a direct attempt really leaves the
        # client zone (and dies in the proxy zone, which does not forward)
        _ip("-n", c, "route", "add", "default", "via", PROXY_NEAR_IP)
        _ip("-n", f, "route", "add", "default", "via", PROXY_FAR_IP)

        # the far zone's content
        www = self.workdir / "www"
        www.mkdir()
        rnd = secrets.token_bytes(BIG_SIZE)
        (www / "big.bin").write_bytes(rnd)
        (www / "small.bin").write_bytes(rnd[:SMALL_SIZE])
        self.big_sha256 = hashlib.sha256(rnd).hexdigest()
        self.small_sha256 = hashlib.sha256(rnd[:SMALL_SIZE]).hexdigest()

        self.http = FarHttpServer(listener_in(f), str(www))
        self.echo = EchoHashServer(listener_in(f), "far-echo")
        self.witness = WitnessServer(listener_in(p), "near-witness")
        self.silent = SilentServer(listener_in(p), "silent-hop")
        self._name_zones()

        for i, port in enumerate(HOP_PORTS, start=1):
            d = self.workdir / f"hop{i}"
            d.mkdir()
            hop = Hop(i, p, PROXY_NEAR_IP, port, d / "danted.conf", d / "danted.pid",
                      d / "danted.log")
            hop.conf.write_text(_danted_conf(hop.log, port, ("lo", v_pc, v_pf)))
            self.hops.append(hop)
        for hop in self.hops:
            self._spawn_hop(hop)
        for hop in self.hops:
            self._wait_hop_up(hop)
        self._spawn_socks4a()
        return self

    def _spawn_socks4a(self) -> None:
        """A SOCKS4a hop from an independent implementation (tiny-proxy), when it is
        installed: it resolves host names in the proxy zone."""
        try:
            import tiny_proxy  # noqa: F401
        except ImportError:
            return
        err = open(self.workdir / "socks4a.stderr", "ab")
        try:
            self.socks4a = subprocess.Popen(
                ["ip", "netns", "exec", self.proxy_ns, sys.executable, "-c",
                 _SOCKS4A_SERVER, str(SOCKS4A_PORT)], stdin=subprocess.DEVNULL,
                stdout=err, stderr=err, env=clean_env(), start_new_session=True)
        finally:
            err.close()
        wait_until(lambda: try_connect(self.client_ns, PROXY_NEAR_IP, SOCKS4A_PORT, 1.0)
                   == 0, 20, "the SOCKS4a hop (tiny-proxy) to accept")

    @property
    def socks4a_url(self) -> str | None:
        return f"socks4a://{PROXY_NEAR_IP}:{SOCKS4A_PORT}" if self.socks4a else None

    def _spawn_hop(self, hop: Hop) -> None:
        err = open(hop.log.with_suffix(".stderr"), "ab")
        try:
            hop.proc = subprocess.Popen(
                ["ip", "netns", "exec", hop.ns, DANTED, "-f", str(hop.conf), "-p",
                 str(hop.pidfile)], stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                env=clean_env(), start_new_session=True)
        finally:
            err.close()

    def _wait_hop_up(self, hop: Hop, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if hop.proc is not None and hop.proc.poll() is not None:
                raise LabError(f"danted hop {hop.index} exited with {hop.proc.returncode}:\n"
                               + hop.log.with_suffix(".stderr").read_text(errors="replace")
                               + hop.read_log())
            if try_connect(self.client_ns, hop.host, hop.port, 1.0) == 0:
                return
            if time.monotonic() >= deadline:
                raise LabError(f"danted hop {hop.index} not accepting on "
                               f"{hop.host}:{hop.port} after {timeout}s:\n{hop.read_log()}")
            time.sleep(0.05)

    def _name_zones(self) -> None:
        """Names: FAR_NAME is known only in the proxy zone (its hosts file), where the
        hops resolve it; the client zone's resolver is the DnsRecorder, which knows
        nothing and records every query. `ip netns exec` mounts these files over
        /etc/hosts and /etc/resolv.conf for that namespace only."""
        base = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
        for ns, hosts, resolver in (
                (self.proxy_ns, base + f"{FAR_IP} {FAR_NAME}\n", "127.0.0.1"),
                (self.client_ns, base, CLIENT_IP)):
            d = Path("/etc/netns") / ns
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text(hosts)
            (d / "resolv.conf").write_text(f"nameserver {resolver}\noptions timeout:1 "
                                           "attempts:1\n")

        def udp() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((CLIENT_IP, 53))
            return s
        self.dns = DnsRecorder(in_netns(self.client_ns, udp))  # type: ignore[arg-type]

    def hostile_hop(self, script: Script, socks5: bool = False) -> HostileSocksServer:
        """A new misbehaving SOCKS hop in the proxy zone (close it after the test)."""
        return HostileSocksServer(listener_in(self.proxy_ns), "hostile-hop", script, socks5)

    def far_url(self, name: str = "big.bin", marker: str | None = None) -> str:
        """The far HTTP server by host name: only the proxy zone can resolve it."""
        q = f"?m={marker}" if marker else ""
        return f"http://{FAR_NAME}:{self.http_port}/{name}{q}"

    # hop control
    def stop_hop(self, index: int) -> None:
        """Stop hop `index` (1-based) and its children; its port then refuses."""
        hop = self.hops[index - 1]
        if hop.proc is None:
            return
        _killpg(hop.proc.pid, signal.SIGTERM)
        try:
            hop.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        _killpg(hop.proc.pid, signal.SIGKILL)   # stragglers of its process group
        try:
            hop.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        hop.proc = None
        wait_until(lambda: try_connect(self.client_ns, hop.host, hop.port, 1.0)
                   == errno_mod.ECONNREFUSED, 10, f"hop {index}'s port to refuse")

    def start_hop(self, index: int) -> None:
        hop = self.hops[index - 1]
        if hop.proc is not None and hop.proc.poll() is None:
            return
        self._spawn_hop(hop)
        self._wait_hop_up(hop)

    @contextlib.contextmanager
    def small_client_buffers(self, max_bytes: int = 262144) -> Iterator[None]:
        """Cap TCP buffer autotuning in the client zone for the block (restored after).
        On loopback the kernel would otherwise let a slow reader's receive buffer grow
        to tens of MiB and swallow a whole 16 MiB file at once: the daemon would have
        relayed everything long before the program has read it, so its byte counts stop
        moving and a "live" transfer is no longer live inside the daemon."""
        keys = ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem")
        saved = {}
        for key in keys:
            res = self.client_run(["sysctl", "-n", key], timeout=10)
            if res.returncode != 0:
                raise LabError("cannot read " + key + "\n" + res.describe())
            saved[key] = " ".join(res.stdout.split())
        try:
            for key in keys:
                self.client_run(["sysctl", "-qw", f"{key}=4096 65536 {max_bytes}"],
                                timeout=10, check=True)
            yield
        finally:
            for key, value in saved.items():
                self.client_run(["sysctl", "-qw", f"{key}={value}"], timeout=10)

    def hop_connects(self) -> list[int]:
        return [h.connects() for h in self.hops]

    def wait_hop_connects(self, before: Sequence[int], expected_min: Sequence[int],
                          timeout: float = 10) -> list[int]:
        """Wait until every hop logged at least expected_min[i] new connect lines since
        `before`; return the deltas (danted may write its log a moment after the data)."""
        def deltas() -> list[int]:
            return [a - b for a, b in zip(self.hop_connects(), before)]
        try:
            wait_until(lambda: all(d >= e for d, e in zip(deltas(), expected_min)), timeout,
                       "hop log lines")
        except TimeoutError:
            pass
        return deltas()

    def hop_targets_since(self, before: Sequence[int]) -> list[list[str]]:
        """For each hop, the targets of the tunnels it opened since `before`."""
        return [h.connect_targets(b) for h, b in zip(self.hops, before)]

    def hop_addr(self, index: int) -> str:
        """Hop `index` as it appears as a target in another hop's log."""
        h = self.hops[index - 1]
        return f"{h.host}.{h.port}"

    @property
    def far_http_addr(self) -> str:
        return f"{FAR_IP}.{self.http_port}"

    # commands
    def ns_run(self, ns: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
               timeout: float = 60, input: bytes | None = None,
               check: bool = False) -> Result:
        """Run argv inside namespace ns (`ip netns exec NS …`) with env (default: this
        process's, minus proxy and socksify variables)."""
        res = run(["ip", "netns", "exec", ns, *argv], env=env, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise LabError("command failed\n" + res.describe())
        return res

    def client_run(self, argv: Sequence[str], **kw: object) -> Result:
        return self.ns_run(self.client_ns, argv, **kw)  # type: ignore[arg-type]

    def free_ports(self) -> int:
        """Local ports the client zone has for new connections: its ephemeral range
        less its sockets in TIME_WAIT (each keeps its port for 60 s)."""
        low, high = (int(x) for x in self.client_run(
            ["cat", "/proc/sys/net/ipv4/ip_local_port_range"], check=True).stdout.split())
        waiting = self.client_run(["ss", "-Htan", "state", "time-wait"], check=True).stdout
        return high - low + 1 - len(waiting.splitlines())

    def wait_for_ports(self, need: int, timeout: float = 120) -> None:
        """Wait, bounded, until the client zone has `need` free local ports. A churn
        of 20,000 connections to one hop leaves that many ends in TIME_WAIT here for
        60 s; a second one started at once ran out of ports after about 3,500
        connects (EADDRNOTAVAIL on hop 1; kernel 6.18)."""
        wait_until(lambda: self.free_ports() >= need, timeout,
                   f"{need} free local ports in the client zone", interval=1.0)

    # teardown
    def ns_pids(self, ns: str) -> list[int]:
        r = _ip("netns", "pids", ns, check=False)
        return [int(x) for x in r.stdout.split() if x.isdigit()]

    def close(self) -> None:
        """Kill everything the lab started and delete its namespaces; never raises."""
        errors = []
        for hop in self.hops:
            try:
                self.stop_hop_quietly(hop)
            except Exception as exc:
                errors.append(exc)
        if self.dns is not None:
            self.dns.close()
        if self.socks4a is not None:
            _killpg(self.socks4a.pid, signal.SIGKILL)
            try:
                self.socks4a.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for ns in (self.client_ns, self.proxy_ns):
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        for srv in (self.http, self.echo, self.witness, self.silent):
            if srv is not None:
                try:
                    srv.close()
                except Exception as exc:
                    errors.append(exc)
        # backstop: anything still living in our namespaces (danted children, daemons)
        for ns in self._namespaces:
            for pid in self.ns_pids(ns):
                if pid != os.getpid():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for ns in self._namespaces:
            _ip("netns", "del", ns, check=False)
        self._namespaces.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_hop_quietly(self, hop: Hop) -> None:
        if hop.proc is not None:
            _killpg(hop.proc.pid, signal.SIGKILL)
            try:
                hop.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            hop.proc = None

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_lab() -> Lab:
    lab = Lab()
    try:
        return lab.build()
    except BaseException:
        lab.close()
        raise


def destroy(tag: str) -> None:
    """Remove what a crashed run with this tag left behind: kill every process in its
    namespaces and delete them. Only for a run known to be dead."""
    if not re.fullmatch(r"sk[0-9a-f]{6}", tag):
        raise SystemExit(f"not a lab tag: {tag!r} (expected sk + 6 hex digits)")
    lab = Lab(tag=tag, workdir=Path(tempfile.mkdtemp(prefix="sklab-")))
    lab._namespaces = [ns for ns in (lab.client_ns, lab.proxy_ns, lab.far_ns)
                       if Path(f"/run/netns/{ns}").exists()]
    lab.close()


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "destroy":
        destroy(sys.argv[2])
    else:
        raise SystemExit("usage: python3 tests/lab.py destroy TAG   "
                         "(TAG: sk + 6 hex, from `ip netns list`)")
