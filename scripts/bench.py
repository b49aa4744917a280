#!/usr/bin/env python3
"""Benchmark socksify against proxychains4 on the same danted chain, in one run.

Builds the test lab (tests/lab.py: client zone, proxy zone with three danted SOCKS4
hops, far zone), then runs the same Python client three ways:

  direct        from the proxy zone straight to the far host (no proxy at all)
  proxychains4  from the client zone under `proxychains4 -f CONF` (strict_chain)
  socksify      from the client zone under `socksify --via ...`

and prints connect+first-byte latency (p50/p99 over sequential connections) through
1 and 3 hops and bulk throughput through 3 hops, with socksify's figures as ratios to
proxychains4's. Needs root, dante-server, proxychains4 and socksify installed.

    sudo python3 scripts/bench.py [--connections 300] [--bulk-mib 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import lab as labmod  # noqa: E402

CLIENT = r'''
import json, socket, sys, time
mode, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "latency":
    for _ in range(5):                       # warm-up, not counted
        s = socket.create_connection((host, port)); s.recv(1); s.close()
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        s = socket.create_connection((host, port))
        if s.recv(1) != b"!":
            sys.exit("bad first byte")
        out.append(time.perf_counter() - t0)
        s.close()
    print(json.dumps({"latency": out}))
else:
    buf = bytearray(1 << 20); got = 0
    t0 = time.perf_counter()
    s = socket.create_connection((host, port))
    while True:
        n = s.recv_into(buf)
        if not n:
            break
        got += n
    elapsed = time.perf_counter() - t0
    if got != count:
        sys.exit(f"short transfer: {got} of {count} bytes")
    print(json.dumps({"bytes": got, "seconds": elapsed}))
'''


class FirstByte(labmod._Server):
    """Sends one byte on accept, then waits for the client to close."""

    def handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        conn.sendall(b"!")
        while conn.recv(4096):
            pass


class Source(labmod._Server):
    """Sends `size` bytes on accept, then closes."""

    size = 0

    def handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        chunk = b"\xa5" * (1 << 20)
        left = self.size
        while left > 0:
            n = min(left, len(chunk))
            conn.sendall(chunk[:n])
            left -= n


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=300,
                    help="sequential connections per latency run (default 300)")
    ap.add_argument("--bulk-mib", type=int, default=512,
                    help="MiB per throughput run (default 512)")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args()
    missing = labmod.missing_prerequisites()
    for tool in ("proxychains4", "socksify"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} not on PATH")
    if missing:
        print("bench: cannot run:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="skbench-"))
    client = work / "client.py"
    client.write_text(CLIENT)
    rt = work / "rt"
    rt.mkdir(mode=0o700)
    lab = labmod.build_lab()
    servers: list[labmod._Server] = []
    try:
        fb = FirstByte(labmod.listener_in(lab.far_ns), "first-byte")
        Source.size = args.bulk_mib << 20
        src = Source(labmod.listener_in(lab.far_ns), "source")
        servers += [fb, src]
        env = labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt)})
        results: dict[str, dict[str, float]] = {}

        def run(ns: str, prefix: list[str], mode: str, port: int, count: int,
                timeout: float = 600) -> dict[str, object]:
            res = lab.ns_run(ns, [*prefix, sys.executable, str(client), mode, lab.far_ip,
                                  str(port), str(count)], env=env, timeout=timeout)
            if res.returncode != 0:
                raise SystemExit("bench: a client run failed\n" + res.describe())
            return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

        def pc4(hops: int) -> list[str]:
            conf = work / f"pc4-{hops}.conf"
            lines = ["strict_chain", "quiet_mode", "tcp_read_time_out 15000",
                     "tcp_connect_time_out 8000", "[ProxyList]"]
            lines += [f"socks4 {h.host} {h.port}" for h in lab.hops[:hops]]
            conf.write_text("\n".join(lines) + "\n")
            return ["proxychains4", "-q", "-f", str(conf)]

        def sfy(hops: int) -> list[str]:
            via = [a for h in lab.hops[:hops] for a in ("--via", h.url)]
            return ["socksify", "-q", *via, "--"]

        ways = {
            "direct": lambda hops: (lab.proxy_ns, []),
            "proxychains4": lambda hops: (lab.client_ns, pc4(hops)),
            "socksify": lambda hops: (lab.client_ns, sfy(hops)),
        }
        for hops in (1, 3):
            for way, how in ways.items():
                if way == "direct" and hops == 3:
                    continue
                ns, prefix = how(hops)
                lat = run(ns, prefix, "latency", fb.port, args.connections)["latency"]
                assert isinstance(lat, list)
                results.setdefault(f"latency {hops} hop p50 (ms)", {})[way] = \
                    statistics.median(lat) * 1000
                results.setdefault(f"latency {hops} hop p99 (ms)", {})[way] = \
                    pct(lat, 0.99) * 1000
                print(f"  {way:>12} {hops} hop(s): latency p50 "
                      f"{statistics.median(lat) * 1000:.2f} ms", file=sys.stderr)
        for way, how in ways.items():
            ns, prefix = how(3)
            out = run(ns, prefix, "bulk", src.port, Source.size)
            mbps = float(out["bytes"]) / float(out["seconds"]) / 1e6  # type: ignore[arg-type]
            results.setdefault("throughput 3 hops (MB/s)", {})[way] = mbps
            print(f"  {way:>12} bulk: {mbps:.0f} MB/s", file=sys.stderr)
        rss = daemon_rss(rt)
    finally:
        for s in servers:
            s.close()
        labmod.run(["ip", "netns", "exec", lab.client_ns, "socksifyd", "stop"],
                   env=labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt)}), timeout=30)
        lab.close()
        shutil.rmtree(work, ignore_errors=True)

    print_table(results, args, rss)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def daemon_rss(rt: Path) -> float | None:
    try:
        import psutil
        pid = int((rt / "socksifyd.pid").read_text().split()[0])
        return float(psutil.Process(pid).memory_info().rss) / (1 << 20)
    except Exception:
        return None


def print_table(results: dict[str, dict[str, float]], args: argparse.Namespace,
                rss: float | None) -> None:
    print(f"\nsocksify vs proxychains4, {time.strftime('%Y-%m-%d')}, "
          f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()}, "
          f"Linux {platform.release()}), {args.connections} sequential connections, "
          f"{args.bulk_mib} MiB bulk")
    header = f"{'metric':<26} {'direct':>9} {'proxychains4':>13} {'socksify':>9} " \
             f"{'socksify/pc4':>13}"
    print(header)
    print("-" * len(header))
    for metric, row in results.items():
        direct = f"{row['direct']:.2f}" if "direct" in row else "-"
        ratio = row["socksify"] / row["proxychains4"]
        better = "lower is better" if "latency" in metric else "higher is better"
        print(f"{metric:<26} {direct:>9} {row['proxychains4']:>13.2f} "
              f"{row['socksify']:>9.2f} {ratio:>12.2f}x  ({better})")
    print("direct = the same client in the proxy zone, straight to the far host "
          "(no proxy at all)")
    if rss is not None:
        print(f"socksifyd RSS after the run: {rss:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
