"""bench.py --hop-kinds: one hop of each kind, in one run, through socksify.

  socks5      the lab's danted hop 1 spoken to as SOCKS5
  http        Debian's tinyproxy (HTTP CONNECT), started here in the proxy zone
  https       the same tinyproxy behind stunnel4, with a test CA (ca_file)
  twin socks5 / twin http
              one small asyncio proxy (TWIN below) serving SOCKS5 on one port and
              HTTP CONNECT on another with the same code otherwise: the difference
              is the protocol's cost alone (danted and tinyproxy differ far more
              than SOCKS5 and HTTP do: tinyproxy takes 13-55 ms to answer a CONNECT)

Per-connect latency (connect + first byte, p50/p99), with the handoff and the relay
data path (https is always relayed); bulk throughput of http and https (relay), the
median of interleaved runs."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import lab as labmod
from httpproxy import Stunnel, TinyProxy, make_ca

Run = Callable[..., dict[str, object]]

TWIN = r'''
import asyncio, socket, struct, sys

async def pipe(r, w):
    try:
        while data := await r.read(1 << 16):
            w.write(data)
            await w.drain()
        w.write_eof()
    except OSError:
        w.close()

async def tunnel(r, w, host, port, ok):
    try:
        tr, tw = await asyncio.open_connection(host, port)
    except OSError:
        w.close()
        return
    w.write(ok)
    await w.drain()
    await asyncio.gather(pipe(r, tw), pipe(tr, w))
    w.close(); tw.close()

async def socks5(r, w):
    head = await r.readexactly(2)
    await r.readexactly(head[1])
    w.write(b"\x05\x00")
    req = await r.readexactly(4)
    if req[3] == 1:
        host = socket.inet_ntoa(await r.readexactly(4))
    else:
        host = (await r.readexactly((await r.readexactly(1))[0])).decode()
    port = struct.unpack("!H", await r.readexactly(2))[0]
    await tunnel(r, w, host, port, b"\x05\x00\x00\x01" + bytes(6))

async def http(r, w):
    head = await r.readuntil(b"\r\n\r\n")
    host, port = head.split(b" ")[1].decode().rsplit(":", 1)
    await tunnel(r, w, host, int(port), b"HTTP/1.1 200 Connection established\r\n\r\n")

async def main():
    a = await asyncio.start_server(socks5, "0.0.0.0", int(sys.argv[1]))
    b = await asyncio.start_server(http, "0.0.0.0", int(sys.argv[2]))
    await asyncio.gather(a.serve_forever(), b.serve_forever())

asyncio.run(main())
'''


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
    twin_s5, twin_http = _port(lab), _port(lab)
    twin = subprocess.Popen(["ip", "netns", "exec", lab.proxy_ns, sys.executable, "-c",
                             TWIN, str(twin_s5), str(twin_http)],
                            start_new_session=True, env=labmod.clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p in (twin_s5, twin_http):
        labmod.wait_until(lambda: labmod.try_connect(lab.client_ns, labmod.PROXY_NEAR_IP,
                                                     p, 1.0) == 0, 20, "the twin proxy")
    near = labmod.PROXY_NEAR_IP
    twin_tls = Stunnel.start(lab, twin_http, cert, key)
    policy2 = certdir / "twin-https.toml"
    policy2.write_text(
        f'[proxies]\ntp = {{ url = "https://{name}:{twin_tls.port}", ca_file = "{ca}" }}\n'
        '[chains.c]\nhops = ["tp"]\n[default]\naction = "chain:c"\n')
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
        "twin socks5 handoff": ["--via", f"socks5://{near}:{twin_s5}"],
        "twin http handoff": ["--via", f"http://{near}:{twin_http}"],
        "twin socks5 relay": ["--data-path", "relay", "--via", f"socks5://{near}:{twin_s5}"],
        "twin http relay": ["--data-path", "relay", "--via", f"http://{near}:{twin_http}"],
        "twin https relay": ["-c", str(policy2)],
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
            for way in ("http relay", "https relay", "twin http relay", "twin https relay"):
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
        labmod.kill_group(twin)
        twin_tls.close()
        tunnel.close()
        tiny.close()
        for f in certdir.iterdir():
            f.unlink()
        certdir.rmdir()
    return results


def _port(lab: labmod.Lab) -> int:
    sock = labmod.listener_in(lab.proxy_ns)
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def print_hop_table(results: dict[str, dict[str, float]]) -> None:
    ways = sorted({w for figures in results.values() for w in figures})
    print(f"{'':22}" + "".join(f"{r[:24]:>26}" for r in results))
    for way in ways:
        print(f"{way:22}" + "".join(f"{results[r][way]:>26.2f}" if way in results[r]
                                    else f"{'-':>26}" for r in results))
