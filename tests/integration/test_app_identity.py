"""Which program is asking (issue 13 item 10): `app` rules match the executable, not
the name a program gives itself. A real program renames itself "ssh" (prctl
PR_SET_NAME and argv[0]) under a policy whose `app = ["ssh"]` rule says direct: it
does not get that rule (the default blocks it, and the near witness, which a direct
connection would reach, sees nothing); the same binary copied to a file named ssh,
and the real ssh, do get it."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

import lab as lablib
from conftest import need, skip_or_fail

pytestmark = pytest.mark.lab

PROGRAMS = Path(__file__).parents[1] / "programs"


def build_rename(out: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build tests/programs/rename.c")
    exe = out / "rename"
    r = subprocess.run([cc, "-O1", "-Wall", "-o", str(exe), str(PROGRAMS / "rename.c")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"cannot build rename.c:\n{r.stderr}"
    return exe


def test_a_program_cannot_take_another_programs_rule(lab: lablib.Lab, sk,
                                                     tmp_path: Path) -> None:
    need("ssh")
    assert lab.witness is not None
    pol = tmp_path / "p.toml"
    pol.write_text(textwrap.dedent("""\
        [[rules]]
        name = "ssh goes direct"
        app = ["ssh"]
        action = "direct"

        [default]
        action = "block"
        """))
    prog = build_rename(tmp_path)
    near, port = lab.proxy_near_ip, str(lab.witness.port)
    opts = ["-v", "-c", str(pol)]

    # the renamed program: comm and argv[0] say ssh, the executable does not
    before = lab.witness.count()
    res = sk.run([str(prog), "ssh", near, port], opts=opts)
    assert "comm ssh connect EACCES" in res.stdout, sk.describe(res)
    assert res.returncode == 1, sk.describe(res)
    log = sk.daemon_log()
    assert "ssh[" in log and "[default]" in log, log      # named ssh, decided by default
    # the witness would have counted a direct connection; it accepts in order, so a
    # leaked one would be counted before the one the copy below makes
    copy_dir = tmp_path / "bin"
    copy_dir.mkdir()
    copy = copy_dir / "ssh"
    shutil.copy(prog, copy)
    res = sk.run([str(copy), "ssh", near, port], opts=opts)
    assert "comm ssh connect 0" in res.stdout, sk.describe(res)
    lablib.wait_until(lambda: lab.witness.count() >= before + 1, 5, "the witness")
    assert lab.witness.count() == before + 1, lab.witness.accepted[-3:]
    assert lab.witness.accepted[-1][0] == lab.client_ip   # direct, as the rule says

    # the real ssh: its rule sends it direct to the witness (which speaks no SSH)
    res = sk.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o",
                  "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                  "-p", port, f"nobody@{near}", "true"], opts=opts, timeout=60)
    lablib.wait_until(lambda: lab.witness.count() >= before + 2, 10,
                      "the real ssh at the witness")
    assert lab.witness.accepted[-1][0] == lab.client_ip
    assert "EACCES" not in res.stderr, sk.describe(res)
