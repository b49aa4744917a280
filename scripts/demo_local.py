#!/usr/bin/env python3
"""socksify's main job on one machine, no root, nothing else installed (scripts/demo.sh).

Two throwaway socksify daemons serve as SOCKS5 hops (their front doors, policy
"direct"); a third, the user's own for this demo, runs `socksify -v` with both hops
as its chain; a local web server is the target. The program under socksify is curl
if it is installed, else Python's urllib."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from socksify import client
from socksify.paths import Paths

TIMEOUT = 60


def socksifyd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "socksify.service", *args], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def start_hop(work: Path, name: str) -> tuple[dict[str, str], int]:
    """A daemon whose front door forwards everything directly: a SOCKS hop."""
    rt = work / name
    rt.mkdir(mode=0o700)
    (rt / "policy.toml").write_text('[default]\naction = "direct"\n\n[frontdoor]\n'
                                    'listen = "127.0.0.1:0"\n')
    env = {**os.environ, "SOCKSIFY_RUNTIME_DIR": str(rt)}
    env.pop("LD_PRELOAD", None)
    res = socksifyd(env, "start", "-c", str(rt / "policy.toml"))
    if res.returncode != 0:
        raise SystemExit(f"demo: cannot start {name}: {res.stderr.strip()}")
    status = client.request(Paths.from_env(env), {"op": "status"})
    port = int(str(status["frontdoor"]).rsplit(":", 1)[1])
    return env, port


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="socksify-demo-"))
    hops: list[dict[str, str]] = []
    server = None
    try:
        www = work / "www"
        www.mkdir()
        data = os.urandom(4 << 20)
        (www / "file.bin").write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(www)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/file.bin"
        print(f"== a local web server: {url} (4 MiB, sha256 {digest[:16]}...)")

        print("== two SOCKS hops: the front doors of two throwaway socksify daemons")
        ports = []
        for name in ("hop1", "hop2"):
            env, port = start_hop(work, name)
            hops.append(env)
            ports.append(port)
            print(f"   {name}: socks5://127.0.0.1:{port}")

        out = work / "got.bin"
        if shutil.which("curl"):
            program = ["curl", "-sS", "-o", str(out), url]
        else:
            program = [sys.executable, "-c", "import sys, urllib.request; open(sys.argv[2], "
                       "'wb').write(urllib.request.urlopen(sys.argv[1]).read())", url,
                       str(out)]
        mine = {**os.environ, "SOCKSIFY_RUNTIME_DIR": str(work / "mine")}
        cmd = [sys.executable, "-m", "socksify.cli", "-v", "--proxy-loopback",
               "--via", f"socks5://127.0.0.1:{ports[0]}",
               "--via", f"socks5://127.0.0.1:{ports[1]}", "--", *program]
        print("\n== the program, under socksify (loopback is proxied for the demo):")
        print("   $ socksify -v --proxy-loopback --via socks5://127.0.0.1:%d "
              "--via socks5://127.0.0.1:%d -- %s" % (ports[0], ports[1],
                                                     " ".join(program[:1] + ["..."])))
        t0 = time.monotonic()
        res = subprocess.run(cmd, env=mine, capture_output=True, text=True,
                             timeout=TIMEOUT)
        for line in res.stderr.strip().splitlines():
            print(f"   {line}")
        if res.returncode != 0:
            print(f"demo: the program failed (exit {res.returncode})", file=sys.stderr)
            return 1
        got = hashlib.sha256(out.read_bytes()).hexdigest()
        print(f"   fetched {out.stat().st_size} bytes in {time.monotonic() - t0:.2f}s; "
              f"sha256 {'matches' if got == digest else 'DIFFERS'}")

        print("\n== what each hop saw (its daemon's log):")
        for name, env in zip(("hop1", "hop2"), hops):
            log = Path(env["SOCKSIFY_RUNTIME_DIR"]) / "socksifyd.log"
            for line in log.read_text().splitlines():
                if "->" in line and "[" in line:
                    print(f"   {name}: {line.split(': ', 1)[-1]}")
        return 0 if got == digest else 1
    finally:
        print("\n== cleaning up")
        for env in [*hops, {**os.environ, "SOCKSIFY_RUNTIME_DIR": str(work / "mine")}]:
            socksifyd(env, "stop")
        if server is not None:
            server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
