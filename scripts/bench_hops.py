"""bench.py --hop-kinds: one hop of each kind, in one run, through socksify.

  socks5      the lab's danted hop 1 spoken to as SOCKS5
  http        Debian's tinyproxy (HTTP CONNECT), started here in the proxy zone
  https       the same tinyproxy behind stunnel4, with a test CA (ca_file)

Per-connect latency (connect + first byte, p50/p99) for socks5 and http, each with
the handoff and the relay data path (https is always relayed); bulk throughput of
http and https (relay), the median of interleaved runs."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

import lab as labmod
from httpproxy import Stunnel, TinyProxy, make_ca

Run = Callable[..., dict[str, object]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def hop_kinds(lab: labmod.Lab, run: Run, fb_port: int, src_port: int, size: int,
              connections: int, bulk_runs: int, say: Callable[[str], None]
              ) -> dict[str, dict[str, float]]:
    certdir = Path(tempfile.mkdtemp(prefix="skbenchca-"))
    name = "benchproxy.socksify.test"
    ca, cert, key = make_ca(certdir, name)
    tiny = TinyProxy.start(lab)
    tunnel = Stunnel.start(lab, tiny.port, cert, key)
    policy = certdir / "https.toml"
    # verified as users would: the certificate's name (in the client zone's hosts
    # file while the bench runs) and the test CA
    policy.write_text(
        f'[proxies]\ntp = {{ url = "https://{name}:{tunnel.port}", ca_file = "{ca}" }}\n'
        '[chains.c]\nhops = ["tp"]\n[default]\naction = "chain:c"\n')
    hosts = Path("/etc/netns") / lab.client_ns / "hosts"
    hosts.write_text(hosts.read_text() + f"{labmod.PROXY_NEAR_IP} {name}\n")
    hop1 = lab.hops[0]
    ways: dict[str, list[str]] = {
        "socks5 handoff": ["--via", f"socks5://{hop1.host}:{hop1.port}"],
        "socks5 relay": ["--data-path", "relay", "--via",
                         f"socks5://{hop1.host}:{hop1.port}"],
        "http handoff": ["--via", tiny.url()],
        "http relay": ["--data-path", "relay", "--via", tiny.url()],
        "https relay": ["-c", str(policy)],
    }
    results: dict[str, dict[str, float]] = {}
    try:
        for way, flags in ways.items():
            prefix = ["socksify", "-q", *flags, "--"]
            lat = run(lab.client_ns, prefix, "latency", lab.far_ip, fb_port,
                      connections)["latency"]
            assert isinstance(lat, list)
            results.setdefault("1 hop latency p50 (ms)", {})[way] = \
                statistics.median(lat) * 1000
            results.setdefault("1 hop latency p99 (ms)", {})[way] = pct(lat, 0.99) * 1000
            say(f"  {way:>15}: latency p50 {statistics.median(lat) * 1000:.2f} ms")
        bulk: dict[str, list[float]] = {}
        for attempt in range(bulk_runs):
            for way in ("http relay", "https relay"):
                prefix = ["socksify", "-q", *ways[way], "--"]
                out = run(lab.client_ns, prefix, "bulk", lab.far_ip, src_port, size)
                mbps = float(out["bytes"]) / float(out["seconds"]) / 1e6  # type: ignore[arg-type]
                bulk.setdefault(way, []).append(mbps)
                say(f"  {way:>15} bulk {attempt + 1}: {mbps:.0f} MB/s")
        for way, runs in bulk.items():
            results.setdefault("1 hop throughput (MB/s)", {})[way] = statistics.median(runs)
    finally:
        hosts.write_text("".join(ln for ln in hosts.read_text().splitlines(True)
                                 if not ln.rstrip().endswith(" " + name)))
        tunnel.close()
        tiny.close()
        for f in certdir.iterdir():
            f.unlink()
        certdir.rmdir()
    return results


def print_hop_table(results: dict[str, dict[str, float]]) -> None:
    cols = ("socks5 handoff", "socks5 relay", "http handoff", "http relay", "https relay")
    print(f"{'':26}" + "".join(f"{c:>16}" for c in cols))
    for row, figures in results.items():
        print(f"{row:26}" + "".join(f"{figures[c]:>16.2f}" if c in figures
                                    else f"{'-':>16}" for c in cols))
