#!/usr/bin/env python3
"""Benchmark socksify against proxychains4 on the same danted chain, in one run.

Builds the test lab (tests/lab.py: client zone, proxy zone with three danted SOCKS4
hops, far zone), then runs the same Python client under each contender:

  direct            from the proxy zone straight to the far host (no proxy at all)
  proxychains4      from the client zone under `proxychains4 -f CONF` (strict_chain)
  socksify          `socksify --via ...`: the program's own socket is handed to the
                    daemon, which builds the chain on it and steps out (handoff);
                    every connect of a round after the first is built by the lane
  socksify relay    the same with `--data-path relay`: the daemon copies every byte
  socksify prebuilt handoff with `--prebuilt 8`: tunnels wait, built up to the last hop
  socksify isolated the isolation path (static/Go programs): the client runs in its own
                    network namespace without the shim (busybox env -u LD_PRELOAD), its
                    connects redirected by nft to the daemon, which relays (splice)
  in-process        (floor) the client speaks SOCKS4 to the hops itself, no socksify
  ideal prebuilt    (floor) only its last request, on a tunnel it built beforehand
  ideal pool        (floor) the same on the oldest of 8 ready tunnels, which a helper
                    process refills after each take (what `--prebuilt 8` does): the
                    best a pool that keeps itself full can give back to back
  handoff floor     (floor) the client under the real shim, served by a daemon in C
                    that does nothing but the handoff (benchlib/handoff_floor.c)

and prints, with socksify's figures as ratios to proxychains4's:

  - connect + first-byte latency, p50 and p99 over sequential connections, 1 and 3 hops,
    taken in interleaved rounds (every contender in turn, the order rotating), so that
    a shared machine's slow minutes fall on all of them alike
  - throughput of one large transfer through 3 hops
  - 1,000 connections held open at once through 3 hops with data moving on every one
    (each echoed and compared), and the daemon's RSS and descriptors per connection
  - 20,000 connections of churn through 1 hop, and the daemon's RSS and descriptors
    before and after
  - the added cost of a connect the policy sends direct (p50, against no socksify)
  - UDP through chains (scripts/benchlib/udp.py): three danted SOCKS5 hops with UDP
    ASSOCIATE; a handed-off UDP echo (WRAP) and a carried one (the carrier) against
    the same echo over TCP, interleaved in one client, p50/p90 and their ratios; 1,000 datagrams/s of 1,200 bytes, paced, for 5 s:
    lost, reordered and the daemon's CPU

Needs root, dante-server, proxychains4 and socksify installed.

    sudo python3 scripts/bench.py [--connections 300] [--latency-rounds 5]
                                  [--bulk-mib 512] [--concurrent 1000] [--churn 20000]
    sudo python3 scripts/bench.py --wan [--wan-delay-ms 10] [--wan-connections 40]
    sudo python3 scripts/bench.py --udp [--udp-runs 5] [--udp-rate 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import lab as labmod  # noqa: E402

CLIENT = r'''
import json, os, resource, socket, sys, threading, time
mode, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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
elif mode in ("inproc", "ideal", "pool"):    # the client speaks SOCKS4 itself
    import struct
    hops = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in sys.argv[5].split(",")]
    def request(s, h, p):
        s.sendall(b"\x04\x01" + struct.pack("!H", p) + socket.inet_aton(h) + b"\0")
        r = b""
        while len(r) < 8:
            r += s.recv(8 - len(r))
        if r[1] != 90:
            sys.exit(f"refused: {r!r}")
    def tunnel_to_last():
        s = socket.create_connection(hops[0])
        for h, p in hops[1:]:
            request(s, h, p)
        return s
    if mode == "pool":     # 8 tunnels kept ready: a helper process builds one after
        pair, theirs = socket.socketpair()   # each take, as socksify's lane does
        if os.fork() == 0:
            pair.close()
            try:
                while theirs.recv(1):
                    t = tunnel_to_last()
                    socket.send_fds(theirs, [b"t"], [t.fileno()])
                    t.close()
            except OSError:
                pass
            os._exit(0)
        theirs.close()
        pair.sendall(b"b" * 8)
        ready = []
    out = []
    for i in range(count + 5):
        if mode == "ideal":                  # built beforehand: only the last request
            s = tunnel_to_last()
            time.sleep(0.002)
            t0 = time.perf_counter()
        elif mode == "pool":                 # the oldest ready tunnel: the last request
            while True:                      # (recv_fds ignores its flags before 3.12)
                pair.setblocking(not ready)
                try:
                    _, fds, _, _ = socket.recv_fds(pair, 1, 1)
                except BlockingIOError:
                    break
                if not fds:
                    sys.exit("pool: the helper process is gone")
                ready.append(socket.socket(fileno=fds[0]))
            s = ready.pop(0)
            t0 = time.perf_counter()
        else:
            t0 = time.perf_counter()
            s = tunnel_to_last()
        request(s, host, port)
        if s.recv(1) != b"!":
            sys.exit("bad first byte")
        if i >= 5:
            out.append(time.perf_counter() - t0)
        if mode == "pool":
            pair.sendall(b"b")               # its replacement, once the answer is in
        s.close()
    print(json.dumps({"latency": out}))
elif mode == "connect":                      # connect only (a direct destination)
    for _ in range(20):
        socket.create_connection((host, port)).close()
    out = []
    for _ in range(count):
        s = socket.socket()
        t0 = time.perf_counter()
        s.connect((host, port))
        out.append(time.perf_counter() - t0)
        s.close()
    print(json.dumps({"latency": out}))
elif mode == "bulk":
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
elif mode == "hold":                         # count connections open at once, echoing
    marker, go = sys.argv[5], sys.argv[6]
    socks = []
    t0 = time.perf_counter()
    for i in range(count):
        socks.append(socket.create_connection((host, port), timeout=60))
    opened = time.perf_counter() - t0
    def echo_round(tag):
        sent = []
        for i, s in enumerate(socks):        # data moving on every connection
            msg = b"%s %06d " % (tag, i) + os.urandom(1000).hex().encode()
            s.sendall(msg)
            sent.append(msg)
        for i, s in enumerate(socks):
            got = b""
            while len(got) < len(sent[i]):
                chunk = s.recv(len(sent[i]) - len(got))
                if not chunk:
                    sys.exit(f"connection {i} closed early")
                got += chunk
            if got != sent[i]:
                sys.exit(f"connection {i}: wrong echo")
    echo_round(b"r1")
    open(marker, "w").close()                # all open: the bench samples the daemon
    deadline = time.time() + 120
    while not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.05)
    echo_round(b"r2")
    for s in socks:
        s.close()
    print(json.dumps({"opened": count, "open_seconds": opened}))
elif mode == "churn":
    threads, done, errors = 16, [0], []
    lock = threading.Lock()
    def worker(n):
        for _ in range(n):
            try:
                s = socket.create_connection((host, port), timeout=30)
                if s.recv(1) != b"!":
                    raise OSError("bad first byte")
                s.close()
            except OSError as exc:
                with lock:
                    errors.append(str(exc))
            with lock:
                done[0] += 1
    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(count // threads,)) for _ in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    print(json.dumps({"done": done[0], "errors": len(errors), "first_error": errors[:1],
                      "seconds": time.perf_counter() - t0}))
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


class Echo(labmod._Server):
    """Echoes every byte until the client closes."""

    def handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class DaemonProbe:
    """RSS and open descriptors of the socksifyd that serves runtime dir `rt`."""

    def __init__(self, rt: Path) -> None:
        self.rt = rt

    def pid(self) -> int:
        return int((self.rt / "socksifyd.pid").read_text().split()[0])

    def sample(self) -> tuple[float, int]:
        pid = self.pid()
        rss_kib = next(int(line.split()[1]) for line in
                       Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
        return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))

    def settled(self, want_fds: int | None = None, timeout: float = 20.0
                ) -> tuple[float, int]:
        """A sample once the descriptor count stops changing (or reaches want_fds)."""
        deadline = time.monotonic() + timeout
        last = self.sample()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.sample()
            if (want_fds is not None and now[1] <= want_fds) or \
                    (want_fds is None and now[1] == last[1]):
                return now
            last = now
        return last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=300,
                    help="sequential connections per contender for latency "
                    "(default 300)")
    ap.add_argument("--latency-rounds", type=int, default=5,
                    help="split them into this many rounds, every contender in turn "
                    "(default 5)")
    ap.add_argument("--bulk-mib", type=int, default=512,
                    help="MiB per throughput run (default 512; 0 skips)")
    ap.add_argument("--bulk-runs", type=int, default=3,
                    help="interleaved throughput runs per contender; the median is "
                    "reported (default 3)")
    ap.add_argument("--concurrent", type=int, default=1000,
                    help="connections held open at once (default 1000; 0 skips)")
    ap.add_argument("--churn", type=int, default=20000,
                    help="connections of churn (default 20000; 0 skips)")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--only", help="comma-separated contenders and floors to run (e.g. "
                    "'proxychains4,socksify,socksify relay,socksify isolated'); "
                    "default all")
    add_wan_options(ap)
    add_udp_options(ap)
    ap.add_argument("--hop-kinds", action="store_true", help="only compare one SOCKS5, "
                    "HTTP CONNECT and HTTPS hop (scripts/bench_hops.py)")
    args = ap.parse_args()
    missing = labmod.missing_prerequisites()
    for tool in ("proxychains4", "socksify"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} not on PATH")
    if missing:
        print("bench: cannot run:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    if args.wan:
        return wan_main(args)
    if args.udp:
        return udp_main(args)

    work = Path(tempfile.mkdtemp(prefix="skbench-"))
    client = work / "client.py"
    client.write_text(CLIENT)
    rt = work / "rt"
    rt.mkdir(mode=0o700)
    probe = DaemonProbe(rt)
    lab = labmod.build_lab()
    servers: list[labmod._Server] = []
    running: list[Any] = []          # the handoff floor of the hop count being run
    results: dict[str, dict[str, float]] = {}
    notes: list[str] = []

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        fb = FirstByte(labmod.listener_in(lab.far_ns), "first-byte")
        Source.size = args.bulk_mib << 20
        src = Source(labmod.listener_in(lab.far_ns), "source")
        echo = Echo(labmod.listener_in(lab.far_ns), "echo")
        near = FirstByte(labmod.listener_in(lab.client_ns, labmod.CLIENT_IP), "near")
        servers += [fb, src, echo, near]
        env = labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt)})

        def run(ns: str, prefix: list[str], mode: str, host: str, port: int,
                count: int, *extra: str, timeout: float = 900) -> dict[str, object]:
            res = lab.ns_run(ns, [*prefix, sys.executable, str(client), mode, host,
                                  str(port), str(count), *extra], env=env,
                             timeout=timeout)
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

        def sfy(*flags: str, then: tuple[str, ...] = ()) -> Callable[[int], list[str]]:
            def prefix(hops: int) -> list[str]:
                via = [a for h in lab.hops[:hops] for a in ("--via", h.url)]
                return ["socksify", "-q", *flags, *via, "--", *then]
            return prefix

        if args.hop_kinds:
            from bench_hops import hop_kinds, print_hop_table
            table = hop_kinds(lab, run, fb.port, src.port, Source.size, args.connections,
                              args.bulk_runs, say)
            print_hop_table(table)
            return 0

        # static busybox drops the shim's variable before the client starts: the
        # client is then carried by the nft redirect alone, as a static program is
        unshimmed = ("/usr/bin/busybox", "env", "-u", "LD_PRELOAD")

        contenders: dict[str, tuple[str, Callable[[int], list[str]]]] = {
            "direct": (lab.proxy_ns, lambda hops: []),
            "proxychains4": (lab.client_ns, pc4),
            "socksify": (lab.client_ns, sfy()),
            "socksify relay": (lab.client_ns, sfy("--data-path", "relay")),
            "socksify prebuilt": (lab.client_ns, sfy("--prebuilt", "8")),
        }
        if os.access(unshimmed[0], os.X_OK):
            contenders["socksify isolated"] = (lab.client_ns,
                                               sfy("--isolate", then=unshimmed))
        else:
            notes.append(f"socksify isolated: skipped ({unshimmed[0]} missing, "
                         "package busybox-static)")
        # floors, no socksify: the same Python client doing the SOCKS4 requests itself
        # (the whole chain; or only the last request, on a tunnel built beforehand:
        # what a pre-built tunnel could give at best)
        floors: dict[str, tuple[str, Callable[[int], list[str]]]] = {
            "in-process": (lab.client_ns, lambda hops: []),
            "ideal prebuilt": (lab.client_ns, lambda hops: []),
            "ideal pool": (lab.client_ns, lambda hops: []),
        }
        # and the design's floor for handoff: the real shim and a daemon that does
        # nothing but the handoff, in C (benchlib/handoff_floor.c), one per hop count
        from benchlib import floor as floormod
        floor_bin, why_not = floormod.build(work)
        shim = floormod.shim_library()
        floor_rt = work / "floor"
        floor_rt.mkdir(mode=0o700)
        if floor_bin is not None and shim is not None:
            floors["handoff floor"] = (lab.client_ns,
                                       lambda hops: running[-1].prefix(shim))
        else:
            notes.append("handoff floor: skipped ("
                         + (why_not or "the shim of the socksify on PATH not found")
                         + ")")
        if args.only:
            keep = {w.strip() for w in args.only.split(",")}
            contenders = {w: c for w, c in contenders.items() if w in keep}
            floors = {w: c for w, c in floors.items() if w in keep}
        rounds = max(1, min(args.latency_rounds, args.connections))
        say(f"latency: {args.connections} connections per contender, in {rounds} "
            "interleaved round(s)")
        everyone = {**contenders, **floors}
        for hops in (1, 3):
            ways = [w for w in everyone if not (w == "direct" and hops == 3)]
            samples: dict[str, list[float]] = {w: [] for w in ways}
            hop_list = ",".join(f"{h.host}:{h.port}" for h in lab.hops[:hops])
            if "handoff floor" in ways and floor_bin is not None:
                running.append(floormod.Floor(floor_bin, lab.client_ns, floor_rt,
                                              hop_list))
            for r in range(rounds):
                count = args.connections // rounds + (r < args.connections % rounds)
                for way in ways[r % len(ways):] + ways[:r % len(ways)]:
                    ns, prefix = everyone[way]
                    mode = {"in-process": "inproc", "ideal prebuilt": "ideal",
                            "ideal pool": "pool"}.get(
                        way, "latency")
                    lat = run(ns, prefix(hops), mode, lab.far_ip, fb.port, count,
                              hop_list)["latency"]
                    assert isinstance(lat, list)
                    samples[way] += lat
            if running:
                said = running.pop().close()
                if said:
                    notes.append(f"handoff floor, {hops} hop(s): {said[-400:]}")
            for way, lat in samples.items():
                results.setdefault(f"latency {hops} hop p50 (ms)", {})[way] = \
                    statistics.median(lat) * 1000
                results.setdefault(f"latency {hops} hop p99 (ms)", {})[way] = \
                    pct(lat, 0.99) * 1000
                say(f"  {way:>17} {hops} hop(s): latency p50 "
                    f"{statistics.median(lat) * 1000:.2f} ms")
        bulk: dict[str, list[float]] = {}
        for attempt in range(args.bulk_runs if args.bulk_mib else 0):
            for way, (ns, prefix) in contenders.items():
                if way == "socksify prebuilt":
                    continue        # the same data path as socksify (handoff)
                out = run(ns, prefix(3), "bulk", lab.far_ip, src.port, Source.size)
                mbps = float(out["bytes"]) / float(out["seconds"]) / 1e6  # type: ignore[arg-type]
                bulk.setdefault(way, []).append(mbps)
                say(f"  {way:>17} bulk {attempt + 1}: {mbps:.0f} MB/s")
        for way, runs in bulk.items():      # the median of interleaved runs
            results.setdefault("throughput 3 hops (MB/s)", {})[way] = \
                statistics.median(runs)

        if args.concurrent:
            for way in ("proxychains4", "socksify", "socksify relay"):
                ns, prefix = contenders[way]
                marker, go = work / f"held-{len(notes)}", work / f"go-{len(notes)}"
                before = probe.settled() if way != "proxychains4" else None
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", ns, *prefix(3), sys.executable, str(client),
                     "hold", lab.far_ip, str(echo.port), str(args.concurrent),
                     str(marker), str(go)], env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
                labmod.wait_until(lambda: marker.exists() or proc.poll() is not None,
                                  600, f"{way}: {args.concurrent} connections open")
                held = probe.sample() if way != "proxychains4" else None
                go.touch()
                out_b, err_b = proc.communicate(timeout=300)
                if proc.returncode != 0:
                    raise SystemExit(f"bench: {way} hold run failed: "
                                     f"{err_b.decode(errors='replace')[-2000:]}")
                opened = json.loads(out_b.decode().strip().splitlines()[-1])
                results.setdefault(f"{args.concurrent} concurrent: open all (s)", {})[way] \
                    = float(opened["open_seconds"])
                if before is not None and held is not None:
                    per_fd = (held[1] - before[1]) / args.concurrent
                    per_kib = (held[0] - before[0]) * 1024 / args.concurrent
                    notes.append(f"{args.concurrent} concurrent, {way}: daemon "
                                 f"{per_fd:.2f} fds and {per_kib:.1f} KiB RSS per "
                                 f"connection ({before[1]} -> {held[1]} fds, "
                                 f"{before[0]:.1f} -> {held[0]:.1f} MiB)")
                    after = probe.settled(want_fds=before[1])
                    notes.append(f"  after they closed: {after[1]} fds, "
                                 f"{after[0]:.1f} MiB")
                say(f"  {way:>17} {args.concurrent} concurrent: ok")

        if args.churn:
            baseline = probe.settled()
            for way in ("socksify", "socksify relay"):
                ns, prefix = contenders[way]
                lab.wait_for_ports(args.churn + 2000)   # the last churn's, in TIME_WAIT
                out = run(ns, prefix(1), "churn", lab.far_ip, fb.port, args.churn)
                if int(out["errors"]):  # type: ignore[call-overload]
                    raise SystemExit(f"bench: churn under {way}: {out['errors']} "
                                     f"errors, first {out['first_error']}")
                after = probe.settled(want_fds=baseline[1])
                rate = float(out["done"]) / float(out["seconds"])  # type: ignore[arg-type]
                notes.append(f"{out['done']} connections of churn, {way}, 1 hop, 16 "
                             f"at a time ({rate:.0f}/s): daemon {baseline[1]} -> "
                             f"{after[1]} fds, {baseline[0]:.1f} -> {after[0]:.1f} MiB "
                             f"RSS ({(after[0] / baseline[0] - 1) * 100:+.1f}%)")
                say(f"  {way:>17} churn: {rate:.0f} connections/s")

        # the added cost of a connect the policy sends direct
        policy = work / "direct.toml"
        policy.write_text(
            f'[chains.out]\nhops = ["{lab.hops[0].url}"]\n\n'
            f'[[rules]]\nname = "near"\ndest = ["{labmod.CLIENT_IP}/32"]\n'
            'action = "direct"\n\n[default]\naction = "chain:out"\n')
        plain = run(lab.client_ns, [], "connect", labmod.CLIENT_IP, near.port,
                    args.connections * 10)["latency"]
        under = run(lab.client_ns, ["socksify", "-q", "-c", str(policy), "--"],
                    "connect", labmod.CLIENT_IP, near.port,
                    args.connections * 10)["latency"]
        assert isinstance(plain, list) and isinstance(under, list)
        results["direct connect p50 (us)"] = {
            "no socksify": statistics.median(plain) * 1e6,
            "socksify": statistics.median(under) * 1e6}
        notes.append(f"a connect the policy sends direct costs "
                     f"{(statistics.median(under) - statistics.median(plain)) * 1e6:.1f}"
                     f" us more at p50 ({len(plain)} connects each; the first asks the "
                     "daemon, the rest use the shim's cached answer)")
        rss = probe.sample()[0]
        udp = udp_section(lab, work, say, args) if args.udp_runs else None
    finally:
        for s in servers:
            s.close()
        for floor in running:
            floor.close()
        labmod.run(["ip", "netns", "exec", lab.client_ns, "socksifyd", "stop"],
                   env=labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt)}), timeout=30)
        lab.close()
        shutil.rmtree(work, ignore_errors=True)

    print_table(results, args, notes, rss)
    if udp is not None:
        from benchlib import udp as udpmod
        udpmod.print_udp(udp)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "notes": notes, "udp": udp},
                                        indent=2))
    return 0


def add_udp_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--udp", action="store_true",
                    help="run only the UDP section (scripts/benchlib/udp.py; it is also "
                    "part of the full run unless --udp-runs 0)")
    ap.add_argument("--udp-runs", type=int, default=5,
                    help="UDP runs (each: interleaved UDP/TCP echoes, then a paced run); "
                    "medians over them are reported (default 5; 0 skips)")
    ap.add_argument("--udp-echoes", type=int, default=300,
                    help="echo round trips of each kind per UDP run (default 300)")
    ap.add_argument("--udp-rate", type=int, default=1000,
                    help="datagrams/s of the paced run (default 1000)")
    ap.add_argument("--udp-seconds", type=float, default=5.0,
                    help="length of the paced run (default 5)")


def udp_section(lab: labmod.Lab, work: Path, say: Callable[[str], None],
                args: argparse.Namespace) -> dict[str, object]:
    from benchlib import udp as udpmod
    return udpmod.run_udp(lab, work, say, runs=args.udp_runs, echoes=args.udp_echoes,
                          rate=args.udp_rate, seconds=args.udp_seconds)


def udp_main(args: argparse.Namespace) -> int:
    from benchlib import udp as udpmod
    work = Path(tempfile.mkdtemp(prefix="skbench-udp-"))
    lab = labmod.build_lab()
    try:
        out = udp_section(lab, work, lambda text: print(text, file=sys.stderr,
                                                        flush=True), args)
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    udpmod.print_udp(out)
    if args.json:
        args.json.write_text(json.dumps({"udp": out}, indent=2))
    return 0


def add_wan_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--wan", action="store_true",
                    help="run only the WAN yardstick (scripts/benchlib/wan.py): a delay "
                    "on every link of the 3-hop chain; proxychains4, socksify step by "
                    "step, pipelined and pre-built")
    ap.add_argument("--wan-delay-ms", type=float, default=10.0,
                    help="delay each way on each link (default 10)")
    ap.add_argument("--wan-connections", type=int, default=40,
                    help="sequential connections per contender (default 40)")


def wan_main(args: argparse.Namespace) -> int:
    from benchlib import wan
    out = wan.run_wan(CLIENT, lambda sock: FirstByte(sock, "first-byte"),
                      args.wan_delay_ms, args.wan_connections)
    wan.print_wan(out)
    if args.json:
        args.json.write_text(json.dumps({"wan": out}, indent=2))
    return 0


COLUMNS = ("direct", "proxychains4", "socksify", "socksify relay", "socksify prebuilt",
           "socksify isolated", "in-process", "ideal prebuilt", "ideal pool",
           "handoff floor")


def _short(column: str) -> str:
    """A column's name in the ratio lines."""
    return {"socksify": "handoff", "handoff floor": "floor"}.get(
        column, column.replace("socksify ", ""))


def print_table(results: dict[str, dict[str, float]], args: argparse.Namespace,
                notes: list[str], rss: float) -> None:
    print(f"\nsocksify vs proxychains4, {time.strftime('%Y-%m-%d')}, "
          f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()}, "
          f"Linux {platform.release()}), {args.connections} sequential connections, "
          f"{args.bulk_mib} MiB bulk (median of {args.bulk_runs})")
    header = f"{'metric':<32}" + "".join(f"{c:>13}" for c in
                                          ("direct", "pc4", "handoff", "relay",
                                           "prebuilt", "isolated", "in-process",
                                           "ideal", "pool", "floor"))
    print(header)
    print("-" * len(header))
    for metric, row in results.items():
        if "no socksify" in row:
            continue
        cells = "".join(f"{row[c]:>13.2f}" if c in row else f"{'-':>13}"
                        for c in COLUMNS)
        print(f"{metric:<32}{cells}")
    print("\nratios to proxychains4 (latency: lower is better; throughput: higher)")
    for metric, row in results.items():
        if "proxychains4" not in row:
            continue
        ratios = ", ".join(f"{_short(c)} {row[c] / row['proxychains4']:.2f}x"
                           for c in COLUMNS[2:] if c in row)
        print(f"  {metric:<32} {ratios}")
    direct = results.get("direct connect p50 (us)")
    if direct:
        print(f"\ndirect connect p50: {direct['no socksify']:.1f} us without socksify, "
              f"{direct['socksify']:.1f} us under it")
    for note in notes:
        print(note)
    print("direct = the same client in the proxy zone, straight to the far host "
          "(no proxy at all); in-process = the client speaks SOCKS4 to the hops itself; "
          "ideal = only its last request, on a tunnel it built beforehand; pool = "
          "the same on the oldest of 8 tunnels that a helper process refills after "
          "each take; floor = "
          "the client under the shim, served by a daemon that only does the handoff, "
          "in C (scripts/benchlib/handoff_floor.c)")
    print(f"socksifyd RSS after the run: {rss:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
