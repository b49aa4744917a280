"""Real clients through the lab chain: wget, node (http.get and a raw net.Socket on
libuv's non-blocking connect), curl by name with happy eyeballs, and git cloning over
HTTP and over git:// from the far zone. Each download is checked, and the far server
must have seen the proxy zone's address."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

import lab as lablib
from conftest import names_via as via, need

pytestmark = pytest.mark.lab

GIT_ENV = {**lablib.clean_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, timeout=60,
                   capture_output=True)


def bare_repo(src: Path, bare: Path, text: str) -> None:
    """A one-commit repository (hello.txt holds text), cloned bare to `bare`."""
    git("init", "-q", str(src))
    (src / "hello.txt").write_text(text)
    git("add", "hello.txt", cwd=src)
    git("commit", "-q", "-m", "first", cwd=src)
    git("clone", "-q", "--bare", str(src), str(bare))


def test_wget(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    need("wget")
    m = f"wget-{os.urandom(4).hex()}"
    out = tmp_path / "big.bin"
    res = sk.run(["wget", "-q", "-O", str(out), lab.far_url("big.bin", m)], via=via(lab))
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


@pytest.mark.parametrize("api", ["http.get", "net.Socket"])
def test_node(lab: lablib.Lab, sk, tmp_path: Path, api: str) -> None:
    need("node")
    m = f"node-{os.urandom(4).hex()}"
    if api == "http.get":
        code = f"""
            const http = require('http'), crypto = require('crypto');
            http.get('{lab.far_url("small.bin", m)}', res => {{
              const h = crypto.createHash('sha256');
              res.on('data', d => h.update(d));
              res.on('end', () => console.log(h.digest('hex')));
            }}).on('error', e => {{ console.log('error ' + e.code); process.exit(1); }});
            """
    else:
        code = f"""
            const net = require('net'), crypto = require('crypto');
            const chunks = [];
            const s = net.connect({lab.http_port}, '{lab.far_ip}', () => s.write(
              'GET /small.bin?m={m} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n'));
            s.on('data', d => chunks.push(d));
            s.on('end', () => {{
              const all = Buffer.concat(chunks);
              const body = all.subarray(all.indexOf('\\r\\n\\r\\n') + 4);
              console.log(crypto.createHash('sha256').update(body).digest('hex'));
            }});
            s.on('error', e => {{ console.log('error ' + e.code); process.exit(1); }});
            """
    script = tmp_path / "client.js"
    script.write_text(textwrap.dedent(code))
    res = sk.run(["node", str(script)], via=via(lab))
    assert res.returncode == 0 and res.stdout.strip() == lab.small_sha256, sk.describe(res)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


def test_git_clone_over_http(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """A repository served by the far zone's HTTP server (git's "dumb" HTTP protocol),
    cloned by name through the chain; the clone has the commit."""
    need("git")
    repo = lab.workdir / "www" / f"repo-{os.urandom(3).hex()}.git"
    bare_repo(tmp_path / "src", repo, "through the chain\n")
    git("update-server-info", cwd=repo)
    out = tmp_path / "clone"
    try:
        res = sk.run(["git", "clone", "-q", f"http://{lablib.FAR_NAME}:{lab.http_port}/"
                      f"{repo.name}", str(out)], via=via(lab), timeout=120)
        assert res.returncode == 0, sk.describe(res)
        assert (out / "hello.txt").read_text() == "through the chain\n"
        assert {r.client for r in lab.http.requests_for(repo.name)} == \
            {lab.proxy_far_ip}
    finally:
        shutil.rmtree(repo, ignore_errors=True)


@pytest.mark.parametrize("family", ["any", "-4"])
def test_curl_happy_eyeballs_by_name(lab: lablib.Lab, sk, tmp_path: Path,
                                     family: str) -> None:
    """curl asks for both address families of a name and would race them ("happy
    eyeballs", --happy-eyeballs-timeout-ms); -4 asks for one. The shim answers with a
    stand-in address (the client zone has no IPv6 route, so curl's IPv4 one), the
    daemon carries the name to the SOCKS5 last hop, and no query leaves the client
    zone. The hash and the far server's view prove the route."""
    need("curl")
    m = f"eyeballs-{os.urandom(4).hex()}"
    out = tmp_path / "small.bin"
    before = list(lab.dns.seen())
    flags = [] if family == "any" else [family]
    res = sk.run(["curl", "-q", "-sS", "--max-time", "60", "--happy-eyeballs-timeout-ms",
                  "100", *flags, "-o", str(out), "-w", "%{remote_ip}",
                  lab.far_url("small.bin", m)], via=via(lab), opts=["-v"])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert lab.dns.seen() == before, f"DNS leak: {lab.dns.seen()[len(before):]}"
    # curl connected to an IPv4 stand-in (240.0.0.0/4), not to a real address
    assert ipaddress.ip_address(res.stdout) in ipaddress.ip_network("240.0.0.0/4"), \
        res.stdout


def test_git_clone_over_git_protocol(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """`git daemon` in the far zone serves a repository on git:// (port 9418 of the
    far host, which the client zone cannot reach); git clones it by name through the
    chain, and the daemon's log shows the connection came from the proxy zone."""
    need("git")
    base = tmp_path / "served"
    base.mkdir()
    bare_repo(tmp_path / "src", base / "repo.git", "over git://\n")
    log = tmp_path / "git-daemon.log"
    with open(log, "wb") as logf:
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", lab.far_ns, "git", "daemon", "--export-all",
             "--reuseaddr", "--verbose", f"--base-path={base}", f"--listen={lab.far_ip}",
             "--port=9418", "--log-destination=stderr", str(base)],
            env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=logf, start_new_session=True)
    try:
        lablib.wait_until(lambda: lablib.try_connect(lab.proxy_ns, lab.far_ip, 9418) == 0
                          or daemon.poll() is not None, 20, "git daemon to listen")
        assert daemon.poll() is None, log.read_text()
        # a control: the client zone cannot reach it directly
        assert lablib.try_connect(lab.client_ns, lab.far_ip, 9418) != 0
        time.sleep(0.5)                 # let it log the readiness probe first
        seen = len(log.read_text())
        out = tmp_path / "clone"
        res = sk.run(["git", "clone", "-q", f"git://{lablib.FAR_NAME}/repo.git", str(out)],
                     via=via(lab), timeout=120)
        assert res.returncode == 0, sk.describe(res)
        assert (out / "hello.txt").read_text() == "over git://\n"
        lablib.wait_until(lambda: f"Connection from {lab.proxy_far_ip}:" in
                          log.read_text()[seen:], 10, "git daemon to log the clone")
        assert f"Connection from {lablib.CLIENT_IP}" not in log.read_text()
    finally:
        lablib.kill_group(daemon)
