"""Stand-in addresses under pressure (issue 13 item 5): a full table never hands a
held address to another name. A program looks the far host's name up and connects;
the same user then looks up as many other names as the [dns] range holds; the next
lookup is refused with the reason, and the far host's stand-in still reaches the far
host through the chain (the far server sees the request come from the last hop)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

import lab as lablib
from conftest import names_via, start_daemon

pytestmark = pytest.mark.lab

# A /24: the table holds 254 names per user (max_names is capped by the range).
RANGE4 = "240.77.0.0/24"

SCRIPT = textwrap.dedent("""\
    import json, socket, sys
    name, port, m1, m2, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], \\
        int(sys.argv[5])
    def addr(host):
        return socket.getaddrinfo(host, port, socket.AF_INET,
                                  socket.SOCK_STREAM)[0][4][0]
    def get(a, marker):
        s = socket.create_connection((a, port), timeout=30)
        s.sendall(f"GET /small.bin?m={marker} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.split(b"\\r\\n", 1)[0].decode()
    out = {}
    far = addr(name)
    out["far"] = far
    out["first"] = get(far, m1)
    others = {}
    for i in range(n):
        h = f"x{i}.attacker.example"
        try:
            others[h] = addr(h)
        except socket.gaierror as exc:
            out["refused_at"] = i
            out["gai_error"] = exc.errno
            break
    out["far_reused_for"] = [h for h, a in others.items() if a == far]
    out["name_of_far"] = socket.gethostbyaddr(far)[0]
    out["second"] = get(far, m2)
    print(json.dumps(out))
""")


def test_a_full_table_refuses_rather_than_recycle(lab: lablib.Lab, sk,
                                                   tmp_path: Path) -> None:
    hops = ", ".join(f'"{h}"' for h in names_via(lab))
    pol = tmp_path / "p.toml"
    pol.write_text(f'[chains.c]\nhops = [{hops}]\n\n[default]\naction = "chain:c"\n\n'
                   f'[dns]\nrange4 = "{RANGE4}"\n')
    start_daemon(sk, pol)
    script = tmp_path / "standins.py"
    script.write_text(SCRIPT)
    os.chmod(tmp_path, 0o755)
    m1, m2 = (f"standin-{os.urandom(4).hex()}" for _ in range(2))
    before = list(lab.dns.seen())
    res = lab.client_run([sys.executable, str(script), lablib.FAR_NAME,
                          str(lab.http_port), m1, m2, "300"],
                         env={**sk.env, "LD_PRELOAD": sk.shim}, timeout=120)
    assert res.returncode == 0, sk.describe(res)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["far"].startswith("240.77.0."), out
    assert out["first"].endswith("200 OK"), out
    # 1 + 253 names fill the table; the next lookup is refused (EAI_AGAIN)...
    assert out.get("refused_at") == 253, out
    assert out["gai_error"] == -3, out             # EAI_AGAIN: try again later
    assert "stand-in addresses of this user are in use" in sk.daemon_log()
    # ...and the far host's address was never given to another name
    assert out["far_reused_for"] == [], out
    assert out["name_of_far"] == lablib.FAR_NAME, out
    assert out["second"].endswith("200 OK"), out
    # a socksify command is told why its program's lookup failed
    res = sk.run(["getent", "ahostsv4", "one-more.attacker.example"], opts=["-v"])
    assert res.returncode != 0, sk.describe(res)
    assert "lookup of one-more.attacker.example refused: all 254 stand-in addresses" \
        in res.stderr, sk.describe(res)
    for m in (m1, m2):
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert lab.dns.seen() == before, f"DNS leak: {lab.dns.seen()[len(before):]}"
