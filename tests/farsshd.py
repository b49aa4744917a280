"""An OpenSSH server in the lab's far zone, for ssh/scp through the chain.

Everything it uses is made per run in a temporary directory: a throwaway host key, a
client key and the authorized_keys file naming it, and the sshd_config. sshd runs in the
foreground (`sshd -D -e`) inside the far namespace, listening only on the far zone's
address, and logs to a file the tests read ("Accepted publickey ... from ADDR" shows
which address the far side saw). The machine's own sshd, if any, is never used.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import lab as lablib

SSHD = "/usr/sbin/sshd"
# The far namespace belongs to this run alone, so a fixed port cannot collide.
SSHD_PORT = 2222


def missing() -> str | None:
    """Why a far sshd cannot run here (None when it can)."""
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (openssh-client)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    return None


class FarSshd:
    def __init__(self, lab: lablib.Lab, port: int = SSHD_PORT) -> None:
        self.lab = lab
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="skssh-"))
        os.chmod(self.dir, 0o700)
        self.host_key = self.dir / "host_ed25519"
        self.key = self.dir / "client_ed25519"
        self.config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self.home = self.dir / "far-home"    # where files land in the far zone
        self.proc: subprocess.Popen[bytes] | None = None

    # setup
    def start(self, timeout: float = 30) -> "FarSshd":
        self.home.mkdir()
        for key in (self.host_key, self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                            "socksify-test", "-f", str(key)], check=True, timeout=30,
                           capture_output=True, env=lablib.clean_env())
        (self.dir / "authorized_keys").write_text(
            self.key.with_suffix(".pub").read_text())
        self.config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.lab.far_ip}\n"
            f"HostKey {self.host_key}\n"
            "PidFile none\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "LogLevel VERBOSE\n"
            "Subsystem sftp internal-sftp\n")
        # the privilege separation directory sshd insists on (Debian's service makes it)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.far_ns, SSHD, "-D", "-e", "-f",
                 str(self.config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=lablib.clean_env(), start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while "Server listening on" not in self.read_log():
            if self.proc.poll() is not None:
                raise lablib.LabError(f"sshd exited with {self.proc.returncode}:\n"
                                      + self.read_log())
            if time.monotonic() >= deadline:
                raise lablib.LabError(f"sshd not listening after {timeout}s:\n"
                                      + self.read_log())
            time.sleep(0.05)
        return self

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def accepted_from(self) -> list[str]:
        """The peer address of every login sshd accepted ("Accepted publickey for root
        from ADDR port N ssh2")."""
        out = []
        for ln in self.read_log().splitlines():
            words = ln.split()
            if "Accepted" in words and "from" in words:
                out.append(words[words.index("from") + 1])
        return out

    def client_opts(self, connect_timeout: int = 60) -> list[str]:
        """Options for ssh and scp: no user or system config, this run's key only, no
        known_hosts, never a prompt."""
        return ["-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR"]

    def ssh(self, host: str, *args: str, tty: bool = False,
            connect_timeout: int = 60) -> list[str]:
        return ["ssh", *self.client_opts(connect_timeout), *(["-tt"] if tty else ["-T"]),
                "-p", str(self.port), f"root@{host}", *args]

    def scp(self, *args: str) -> list[str]:
        return ["scp", *self.client_opts(), "-q", "-P", str(self.port), *args]

    # teardown
    def close(self) -> None:
        """Kill sshd, every session it forked (they live in the far namespace, where
        nothing else of this run has a process of its own), and remove the directory."""
        if self.proc is not None:
            lablib.kill_group(self.proc)
            self.proc = None
        for pid in self.lab.ns_pids(self.lab.far_ns):
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)
