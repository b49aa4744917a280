"""Real HTTP CONNECT proxies for the lab: Debian's tinyproxy in the proxy zone, with
its own config file in a temp dir, optionally behind stunnel4 (TLS) with a test CA
made here by the openssl CLI. Each is started by a test and killed afterwards."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import lab as lablib

TINYPROXY = "/usr/bin/tinyproxy"
STUNNEL = "/usr/bin/stunnel4"


def free_port(the_lab: lablib.Lab) -> int:
    """A port the kernel picked in the proxy zone (a daemon given a port in its config
    cannot take port 0; the window between close and its bind is tiny)."""
    sock = lablib.listener_in(the_lab.proxy_ns)
    port = int(sock.getsockname()[1])
    sock.close()
    return port


@dataclass
class Daemon:
    the_lab: lablib.Lab
    port: int
    workdir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def spawn(self, argv: list[str], what: str) -> None:
        err = open(self.workdir / "stderr", "ab")
        try:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.the_lab.proxy_ns, *argv],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                env=lablib.clean_env(), start_new_session=True)
        finally:
            err.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise lablib.LabError(f"{what} exited {self.proc.returncode}: "
                                      + (self.workdir / "stderr").read_text()
                                      + self.read_log())
            return lablib.try_connect(self.the_lab.client_ns, lablib.PROXY_NEAR_IP,
                                      self.port, 1.0) == 0
        lablib.wait_until(up, 20, f"{what} to accept on {self.port}")

    def close(self) -> None:
        if self.proc is not None:
            lablib.kill_group(self.proc)
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class TinyProxy(Daemon):
    user: str = ""
    password: str = field(default="", repr=False)

    @classmethod
    def start(cls, the_lab: lablib.Lab, user: str = "", password: str = "") -> TinyProxy:
        workdir = Path(tempfile.mkdtemp(prefix="sktiny-"))
        workdir.chmod(0o755)
        proxy = cls(the_lab, free_port(the_lab), workdir, workdir / "tinyproxy.log",
                    user=user, password=password)
        auth = f"BasicAuth {user} {password}\n" if user else ""
        conf = workdir / "tinyproxy.conf"
        conf.write_text(f"Port {proxy.port}\nTimeout 30\nMaxClients 100\n"
                        f"PidFile \"{workdir}/tinyproxy.pid\"\n"
                        f"LogFile \"{proxy.log}\"\nLogLevel Info\n{auth}")
        try:
            proxy.spawn([TINYPROXY, "-d", "-c", str(conf)], "tinyproxy")
        except BaseException:
            proxy.close()
            raise
        return proxy

    def url(self, host: str = lablib.PROXY_NEAR_IP, password: str | None = None,
            scheme: str = "http") -> str:
        pw = self.password if password is None else password
        cred = f"{self.user}:{pw}@" if self.user else ""
        return f"{scheme}://{cred}{host}:{self.port}"

    def connects(self) -> list[str]:
        """host:port of each CONNECT tinyproxy opened ("opensock: opening connection
        to HOST:PORT")."""
        key = "opensock: opening connection to "
        return [ln.split(key, 1)[1].strip() for ln in self.read_log().splitlines()
                if key in ln]


def make_ca(workdir: Path, *names: str) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for `names` (subjectAltName DNS:each)
    signed by it: (ca.pem, server.pem, server.key)."""
    name = names[0]
    ca_key, ca = workdir / "ca.key", workdir / "ca.pem"
    key, csr, cert = workdir / "server.key", workdir / "server.csr", workdir / "server.pem"
    ext = workdir / "ext.cnf"
    ext.write_text(f"subjectAltName={','.join('DNS:' + n for n in names)}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj",
        "/CN=socksify test CA " + workdir.name)
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    ssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@dataclass
class Stunnel(Daemon):
    """stunnel4 in the proxy zone: TLS on `port`, plain TCP to backend_port."""

    @classmethod
    def start(cls, the_lab: lablib.Lab, backend_port: int, cert: Path,
              key: Path) -> Stunnel:
        workdir = Path(tempfile.mkdtemp(prefix="skstun-"))
        workdir.chmod(0o755)
        tunnel = cls(the_lab, free_port(the_lab), workdir, workdir / "stunnel.log")
        conf = workdir / "stunnel.conf"
        conf.write_text(f"foreground = yes\npid =\noutput = {tunnel.log}\ndebug = 5\n"
                        f"[proxy]\naccept = 0.0.0.0:{tunnel.port}\n"
                        f"connect = 127.0.0.1:{backend_port}\ncert = {cert}\n"
                        f"key = {key}\n")
        try:
            tunnel.spawn([STUNNEL, str(conf)], "stunnel4")
        except BaseException:
            tunnel.close()
            raise
        return tunnel


def add_host(ns: str, name: str, addr: str) -> None:
    """Make `name` resolve to addr through ns's hosts file (written in place: `ip netns
    exec` bind-mounts this file over /etc/hosts)."""
    hosts = Path("/etc/netns") / ns / "hosts"
    hosts.write_text(hosts.read_text() + f"{addr} {name}\n")


def remove_host(ns: str, name: str) -> None:
    hosts = Path("/etc/netns") / ns / "hosts"
    try:
        lines = hosts.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return
    hosts.write_text("".join(ln for ln in lines if not ln.rstrip().endswith(" " + name)))

