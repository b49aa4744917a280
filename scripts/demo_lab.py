#!/usr/bin/env python3
"""Show socksify's main job in a lab on this machine (see scripts/demo.sh)."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import lab as labmod  # noqa: E402


def main() -> int:
    missing = labmod.missing_prerequisites()
    if missing:
        print("demo: cannot build the lab:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    print("== building the lab: client zone | proxy zone (3 danted hops) | far zone")
    with labmod.build_lab() as lab, tempfile.TemporaryDirectory() as tmp:
        url = lab.url("big.bin")
        print(f"   far web server: {url} (16 MiB, sha256 {lab.big_sha256[:16]}...)")
        print(f"   hops: {', '.join(h.url for h in lab.hops)}")
        print("\n== 1. from the client zone, directly (must fail: no route but the "
              "proxies)")
        res = lab.client_run(["curl", "-sS", "--connect-timeout", "2", "-o", "/dev/null",
                              url], timeout=30)
        print(f"   $ curl {url}\n   {res.stderr.strip()} (exit {res.returncode})")
        if res.returncode == 0:
            print("demo: the far zone was reachable directly; the lab is broken",
                  file=sys.stderr)
            return 1
        print("\n== 2. the same curl under socksify, through all three hops")
        out = Path(tmp) / "big.bin"
        env = labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(Path(tmp) / "rt")})
        via = [a for h in lab.hops for a in ("--via", h.url)]
        cmd = ["socksify", "-v", *via, "--", "curl", "-sS", "-o", str(out), url]
        print("   $ " + " ".join(cmd))
        before = lab.hop_connects()
        res = lab.client_run(cmd, env=env, timeout=120)
        for line in res.stderr.strip().splitlines():
            print(f"   {line}")
        if res.returncode != 0:
            print(f"demo: socksify curl failed (exit {res.returncode})", file=sys.stderr)
            return 1
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        same = digest == lab.big_sha256
        print(f"   downloaded {out.stat().st_size} bytes, sha256 "
              f"{'matches' if same else 'DIFFERS'}")
        deltas = lab.wait_hop_connects(before, [1, 1, 1])
        for hop, new in zip(lab.hops, deltas):
            print(f"   hop {hop.index} ({hop.url}) logged {new} new tunnel(s)")
        lab.client_run(["socksifyd", "stop"], env=env, timeout=30)
        print("\n== cleaning up the lab")
        return 0 if same and all(deltas) else 1


if __name__ == "__main__":
    sys.exit(main())
