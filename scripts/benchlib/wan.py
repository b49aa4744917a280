"""The WAN yardstick of scripts/bench.py (`--wan`): the lab chain (three danted SOCKS4
hops) with a fixed delay on every link in each direction -- client -> hop 1 -> hop 2
-> hop 3 -> target, four links -- by a delay forwarder per link (delay.py; this
kernel has no netem). The same client runs under each contender in one run and
measures connect + first byte (the target sends one byte on accept), p50 over N
sequential connections after 5 warm-up ones:

  proxychains4      strict_chain over the forwarders (it asks each hop in turn)
  sequential        socksify --no-pipeline (each hop asked once the last replied)
  pipelined         socksify --pipeline (every request at once), no pool
  prebuilt          socksify --prebuilt 4 (tunnels built up to hop 3 beforehand)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import lab as labmod

HERE = Path(__file__).resolve().parent


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_wan(client_text: str, first_byte: Callable[[Any], Any], delay_ms: float,
            connections: int, contenders: list[str] | None = None) -> dict[str, Any]:
    """Build a lab, put a delay forwarder on each link, run each contender; returns
    {"delay_ms", "connections", "p50": {way: ms}, "p90": {way: ms}}."""
    import shutil
    import tempfile
    work = Path(tempfile.mkdtemp(prefix="skwan-"))
    client = work / "client.py"
    client.write_text(client_text)
    rt = work / "rt"
    rt.mkdir(mode=0o700)
    env = labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt)})
    lab = labmod.build_lab()
    fb = first_byte(labmod.listener_in(lab.far_ns))
    fwd: subprocess.Popen[bytes] | None = None
    out: dict[str, Any] = {"delay_ms": delay_ms, "connections": connections,
                           "p50": {}, "p90": {}}
    try:
        links = [(h.host, h.port) for h in lab.hops] + [(lab.far_ip, fb.port)]
        if delay_ms > 0:           # 0: the lab's own links, no forwarders
            fwd = subprocess.Popen(
                ["ip", "netns", "exec", lab.proxy_ns, sys.executable,
                 str(HERE / "delay.py"), "--delay-ms", str(delay_ms), "--listen",
                 labmod.PROXY_NEAR_IP,
                 *(f"{h}:{p}" + ("/socks4" if i < 3 else "")
                   for i, (h, p) in enumerate(links))],
                stdout=subprocess.PIPE, env=env, start_new_session=True)
            assert fwd.stdout is not None
            links = [(labmod.PROXY_NEAR_IP, p) for p in json.loads(fwd.stdout.readline())]
        hops, target = links[:3], links[3]
        pc4 = work / "pc4.conf"
        pc4.write_text("strict_chain\nquiet_mode\ntcp_read_time_out 15000\n"
                       "tcp_connect_time_out 8000\n[ProxyList]\n"
                       + "".join(f"socks4 {h} {p}\n" for h, p in hops))
        via = [a for h, p in hops for a in ("--via", f"socks4://{h}:{p}")]
        prefixes = {
            "proxychains4": ["proxychains4", "-q", "-f", str(pc4)],
            "sequential": ["socksify", "-q", "--no-pipeline", *via, "--"],
            "pipelined": ["socksify", "-q", "--pipeline", *via, "--"],
            "prebuilt": ["socksify", "-q", "--pipeline", "--prebuilt", "4", *via, "--"],
        }
        for way in contenders or list(prefixes):
            res = lab.ns_run(lab.client_ns, [*prefixes[way], sys.executable, str(client),
                                             "latency", target[0], str(target[1]),
                                             str(connections)], env=env, timeout=1800)
            if res.returncode != 0:
                raise SystemExit(f"bench --wan: {way} failed\n" + res.describe())
            lat = json.loads(res.stdout.strip().splitlines()[-1])["latency"]
            out["p50"][way] = statistics.median(lat) * 1000
            out["p90"][way] = _percentile(lat, 0.9) * 1000
            print(f"  {way:>13} WAN 3 hops: p50 {out['p50'][way]:.1f} ms",
                  file=sys.stderr, flush=True)
    finally:
        if fwd is not None:
            labmod.kill_group(fwd)
        fb.close()
        labmod.run(["ip", "netns", "exec", lab.client_ns, "socksifyd", "stop"],
                   env=env, timeout=30)
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def print_wan(out: dict[str, Any]) -> None:
    import platform
    print(f"\nWAN links: {out['delay_ms']:g} ms each way on each of 4 links (client, "
          f"3 danted SOCKS4 hops, target), {time.strftime('%Y-%m-%d')}, "
          f"{platform.node()} ({os.cpu_count()} cores, Linux {platform.release()}); "
          f"connect + first byte over {out['connections']} sequential connections")
    print(f"{'contender':<14}{'p50 (ms)':>10}{'p90 (ms)':>10}{'vs pc4':>9}")
    base = out["p50"].get("proxychains4")
    for way, p50 in out["p50"].items():
        ratio = f"{p50 / base:.2f}x" if base else "-"
        print(f"{way:<14}{p50:>10.1f}{out['p90'][way]:>10.1f}{ratio:>9}")
