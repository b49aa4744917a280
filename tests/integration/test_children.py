"""Children in the lab: however a program starts a child (a shell, subprocess, env -i,
a cleared environment), the child's connections and lookups go through the chain; a
child the shim cannot load into is refused. The near witness is directly reachable
from the client zone, so a leaked connection would show there with the client's
own address."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lab as lablib

pytestmark = pytest.mark.lab


def s5(hop: lablib.Hop) -> str:
    return f"socks5://{hop.host}:{hop.port}"


def witness_fetch(lab: lablib.Lab) -> str:
    """A child command: curl to the near witness by address, then the far server by
    a name only the proxy zone knows."""
    return (f"curl -q -s --max-time 2 -o /dev/null http://{lab.proxy_near_ip}:"
            f"{lab.witness.port}/ ; curl -q -sS --max-time 30 -o /dev/null -w "
            f"%{{http_code}} {lab.far_url('small.bin')}")


@pytest.mark.parametrize("shape", ["env -i", "python env={}", "sh exec env -i"])
def test_cleared_environment_keeps_the_shim(lab: lablib.Lab, sk, shape: str) -> None:
    inner = witness_fetch(lab)
    curl = shutil.which("curl") or "/usr/bin/curl"
    path = "PATH=/usr/bin:/bin"
    if shape == "env -i":
        cmd = ["env", "-i", path, "sh", "-c", inner]
    elif shape == "python env={}":
        cmd = [sys.executable, "-c",
               "import subprocess, sys; sys.exit(subprocess.run(['/bin/sh', '-c', "
               f"{inner!r}], env={{'PATH': '/usr/bin:/bin'}}).returncode)"]
    else:
        cmd = ["sh", "-c", f"exec env -i {path} sh -c '{inner}'"]
    assert os.path.exists(curl)
    before_dns = list(lab.dns.seen())
    before = list(lab.witness.accepted)
    res = sk.run(cmd, via=[lab.hops[0].url, s5(lab.hops[1])])
    assert res.returncode == 0 and res.stdout.endswith("200"), sk.describe(res)
    lablib.wait_until(lambda: len(lab.witness.accepted) > len(before), 10,
                      "the witness connection")
    new = lab.witness.accepted[len(before):]
    assert [a for a, _ in new] == [lab.proxy_near_ip], new   # via a hop, not direct
    assert lab.dns.seen() == before_dns


def test_setuid_child_is_refused(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """A setuid program would run without the shim: the exec fails (EPERM) and it
    never connects."""
    src = tmp_path / "c.c"
    src.write_text(textwrap_client(lab))
    exe = tmp_path / "suid-client"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True, timeout=120)
    os.chown(exe, 65534, 65534)
    exe.chmod(0o4755)
    tmp_path.chmod(0o755)
    before = len(lab.witness.accepted)
    res = sk.run(["sh", "-c", f"{exe}; echo status=$?"], via=sk.hops(1))
    assert "status=126" in res.stdout, sk.describe(res)
    assert "refusing to exec" in res.stderr, res.stderr
    assert len(lab.witness.accepted) == before


def textwrap_client(lab: lablib.Lab) -> str:
    return (
        "#include <arpa/inet.h>\n#include <netinet/in.h>\n#include <sys/socket.h>\n"
        "int main(void) {\n"
        "  struct sockaddr_in a = {0};\n"
        "  int s = socket(AF_INET, SOCK_STREAM, 0);\n"
        f"  a.sin_family = AF_INET; a.sin_port = htons({lab.witness.port});\n"
        f"  inet_pton(AF_INET, \"{lab.proxy_near_ip}\", &a.sin_addr);\n"
        "  return connect(s, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : 1;\n}\n")
