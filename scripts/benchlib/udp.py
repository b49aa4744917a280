"""UDP through chains, the bench's yardstick for issue 19's "Speed" (`bench.py --udp`,
and part of the full run): the lab's client zone, three danted SOCKS5 hops with UDP
ASSOCIATE (tests/udplab.py, the hops the UDP tests use), a far UDP echo server
(tests/udplab.py) and a far TCP echo server. One client program runs under
`socksify -c POLICY` whose rule sends both TCP and UDP through the 3 hops
(udp = "chain": its datagrams handed off, docs/wire.md "Datagram handoff: WRAP", its
TCP connection handed off), and measures, in the same process and interleaved sample
by sample:

  rtt     a 64-byte echo on a connected UDP socket (handed off: it sends to hop 1's
          relay itself), the same echo on a connected UDP socket bound to 127.0.0.1
          (which cannot reach hop 1: carried by the daemon's carrier, as every UDP
          socket is under data_path = "relay"), and on one TCP connection kept open
          (TCP_NODELAY): p50/p90 of each, and the ratios to TCP
  floor   (same process, interleaved too) the same UDP echo on a socket the client
          associated through the hops itself (the daemon's own chains/udp.py; a
          direct rule for the hops' address lets it): what danted's three UDP relays
          cost, without the carrier and the daemon's loop
  paced   RATE datagrams/s of SIZE bytes for SECONDS, paced by the clock, echoes
          taken as they come: sent, received, lost, reordered; the daemon's CPU
          seconds over the run (psutil on its pid) per 1,000 datagrams

Each run is a new client process (a new association), after one warm-up run that is
not counted (the daemon's start and first association); the figures reported are
medians over the runs.
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable

import psutil

import lab as labmod

CLIENT = r'''
import json, select, socket, struct, sys, time
mode, host, uport = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "rtt":
    tport, count = int(sys.argv[4]), int(sys.argv[5])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(10)
    u.connect((host, uport))
    t = socket.create_connection((host, tport), timeout=10)
    t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def udp(msg):
        t0 = time.perf_counter()
        u.send(msg)
        if u.recv(2048) != msg:
            sys.exit("udp: wrong echo")
        return time.perf_counter() - t0
    def tcp(msg):
        t0 = time.perf_counter()
        t.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = t.recv(len(msg) - len(got))
            if not chunk:
                sys.exit("tcp: closed")
            got += chunk
        if got != msg:
            sys.exit("tcp: wrong echo")
        return time.perf_counter() - t0
    # the carrier path beside it: a socket bound to 127.0.0.1 cannot reach hop 1
    # itself, so the daemon answers its WRAP with CARRY (as --data-path relay does for
    # every UDP socket), while TCP stays handed off
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    c.settimeout(10)
    c.connect((host, uport))
    def carried(msg):
        t0 = time.perf_counter()
        c.send(msg)
        if c.recv(2048) != msg:
            sys.exit("carried: wrong echo")
        return time.perf_counter() - t0
    kinds = {"udp": udp, "tcp": tcp, "carried": carried}
    if len(sys.argv) > 6:                        # the floor: this process associates
        import asyncio                           # through the hops itself (the daemon's
        from socksify.chains import ChainSpec    # own code; the policy sends the hops
        from socksify.chains.udp import open_association     # direct) and sends on
        from socksify.protocol import socks5udp  # its own UDP socket
        from socksify.proxies import Proxy
        route = tuple(Proxy.parse(url) for url in sys.argv[6].split(","))
        assoc = asyncio.run(open_association(route, ChainSpec("floor", route)))
        f = assoc.sock
        f.setblocking(True)
        f.settimeout(10)
        def floor(msg):
            t0 = time.perf_counter()
            f.send(socks5udp.wrap_layers(assoc.relays[1:], host, uport, msg))
            if socks5udp.unwrap_layers(f.recv(2048), len(route))[1] != msg:
                sys.exit("floor: wrong echo")
            return time.perf_counter() - t0
        kinds["floor"] = floor
    names = list(kinds)
    out = {k: [] for k in names}
    for i in range(count + 20):                  # 20 of each to warm up, not counted
        msg = struct.pack("!I", i) * 16          # 64 bytes
        for k in names[i % len(names):] + names[:i % len(names)]:   # rotate the order
            took = kinds[k](msg)
            if i >= 20:
                out[k].append(took)
    print(json.dumps(out))
elif mode == "paced":
    rate, size, seconds = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.connect((host, uport))
    s.setblocking(False)
    pad = bytes(range(256)) * (size // 256 + 1)
    pad = pad[:size - 4]
    total = int(rate * seconds)
    got, bad, blocked = [], 0, 0
    def take():
        global bad
        while True:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                return
            if data[4:] != pad:
                bad += 1
            got.append(struct.unpack("!I", data[:4])[0])
    start = time.perf_counter()
    late = 0.0
    for seq in range(total):
        due = start + seq / rate
        while True:
            now = time.perf_counter()
            if now >= due:
                break
            select.select([s], [], [], due - now)
            take()
        late = max(late, now - due)
        try:
            s.send(struct.pack("!I", seq) + pad)
        except BlockingIOError:
            blocked += 1
        take()
    sent_for = time.perf_counter() - start
    end = time.perf_counter() + 2.0              # the last echoes
    while len(got) < total and time.perf_counter() < end:
        select.select([s], [], [], 0.05)
        take()
    print(json.dumps({"sent": total - blocked, "blocked": blocked, "received": len(got),
                      "distinct": len(set(got)), "bad": bad,
                      "reordered": sum(1 for a, b in zip(got, got[1:]) if b < a),
                      "send_seconds": sent_for, "max_late_ms": late * 1000}))
'''


class TcpEcho:
    """A TCP echo server in the far zone, one thread per connection."""

    def __init__(self, lab: labmod.Lab) -> None:
        self.sock = labmod.listener_in(lab.far_ns, labmod.FAR_IP)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_udp(lab: labmod.Lab, work: Path, say: Callable[[str], None], runs: int = 5,
            echoes: int = 300, rate: int = 1000, size: int = 1200,
            seconds: float = 5.0) -> dict[str, Any]:
    """The UDP section on a built lab; its own daemon (runtime dir work/rt-udp),
    stopped afterwards. Returns the figures (see print_udp)."""
    sys.path.insert(0, str(Path(labmod.__file__).resolve().parent))
    from udplab import FarUdp, UdpHops     # the UDP tests' hops and far echo server

    client = work / "udpclient.py"
    client.write_text(CLIENT)
    rt = work / "rt-udp"
    rt.mkdir(mode=0o700)
    env = labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt)})
    hops = UdpHops(lab)
    far = FarUdp(lab)
    tcp = TcpEcho(lab)
    policy = work / "udp.toml"
    listed = ", ".join(f'"{hops.url(i)}"' for i in range(3))
    policy.write_text(textwrap.dedent(f"""\
        [chains.three]
        hops = [{listed}]

        [[rules]]
        name = "hops"
        dest = ["{labmod.PROXY_NEAR_IP}/32"]
        action = "direct"

        [[rules]]
        name = "everything"
        action = "chain:three"
        udp = "chain"
        """))
    out: dict[str, Any] = {"runs": [], "paced": [], "echoes": echoes, "rate": rate,
                           "size": size, "seconds": seconds}
    prefix = ["socksify", "-q", "-c", str(policy), "--", sys.executable, str(client)]

    def run(*args: str, timeout: float = 300) -> dict[str, Any]:
        res = lab.ns_run(lab.client_ns, [*prefix, *args], env=env, timeout=timeout)
        if res.returncode != 0:
            raise SystemExit("bench: a UDP client run failed\n" + res.describe())
        got: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        return got

    def daemon() -> psutil.Process:
        return psutil.Process(int((rt / "socksifyd.pid").read_text().split()[0]))

    def cpu(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return float(t.user + t.system)

    try:       # the floor uses the daemon's code, if this Python has it
        import socksify.chains.udp  # noqa: F401
        floor = [",".join(hops.url(i) for i in range(3))]
    except ImportError:
        floor = []
    try:
        # not counted: the daemon's start, its first association, danted's first relays
        run("rtt", labmod.FAR_IP, str(far.echo_port), str(tcp.port), "50")
        for i in range(runs):
            r = run("rtt", labmod.FAR_IP, str(far.echo_port), str(tcp.port), str(echoes),
                    *floor)
            row = {k: {"p50": statistics.median(v) * 1000, "p90": _pct(v, 0.9) * 1000}
                   for k, v in r.items()}
            for k, name in (("udp", "ratio"), ("floor", "floor_ratio"),
                            ("carried", "carried_ratio")):
                if k in row:
                    row[name] = {q: row[k][q] / row["tcp"][q] for q in ("p50", "p90")}
            out["runs"].append(row)
            say(f"  UDP run {i + 1}: echo p50 UDP {row['udp']['p50']:.3f} ms, TCP "
                f"{row['tcp']['p50']:.3f} ms, ratio {row['ratio']['p50']:.2f}; carried "
                f"{row['carried']['p50']:.3f} ms, ratio "
                f"{row['carried_ratio']['p50']:.2f}")
            if "floor" in row:
                say(f"  UDP run {i + 1}: in-process UDP echo p50 "
                    f"{row['floor']['p50']:.3f} ms")
            proc = daemon()
            before = cpu(proc)
            p = run("paced", labmod.FAR_IP, str(far.echo_port), str(rate), str(size),
                    str(seconds))
            p["daemon_cpu"] = cpu(proc) - before
            p["lost"] = p["sent"] - p["received"]
            out["paced"].append(p)
            say(f"  UDP run {i + 1}: paced {p['sent']} sent, {p['received']} received, "
                f"{p['reordered']} reordered, daemon CPU {p['daemon_cpu']:.2f} s")
        sources = {ip for ip, _ in far.seen()}
        out["far_saw"] = sorted(sources)
        if sources - {labmod.PROXY_FAR_IP}:
            raise SystemExit(f"bench: the far UDP echo saw {sources}, not only the "
                             "last hop: datagrams went around the chain")
    finally:
        labmod.run(["ip", "netns", "exec", lab.client_ns, "socksifyd", "stop"],
                   env=env, timeout=30)
        tcp.close()
        far.close()
        hops.close()
    return out


def _median_of(rows: list[dict[str, Any]], *path: str) -> float:
    vals = []
    for row in rows:
        v: Any = row
        for k in path:
            v = v[k]
        vals.append(float(v))
    return statistics.median(vals)


def print_udp(out: dict[str, Any], target: float = 1.3) -> None:
    runs, paced = out["runs"], out["paced"]
    print(f"\nUDP through 3 SOCKS5 hops (danted), {len(runs)} runs, medians over runs")
    print(f"{'echo round trip (ms), 64 bytes':<34}{'p50':>9}{'p90':>9}")
    for k, name in (("udp", "UDP, handed off (WRAP)"), ("carried", "UDP, carried (carrier)"),
                    ("tcp", "TCP, handoff (socksify)"), ("floor", "UDP, in-process (floor)")):
        if k not in runs[0]:
            continue
        print(f"  {name:<32}{_median_of(runs, k, 'p50'):>9.3f}"
              f"{_median_of(runs, k, 'p90'):>9.3f}")
    r50, r90 = _median_of(runs, "ratio", "p50"), _median_of(runs, "ratio", "p90")
    print(f"  {'ratio UDP / TCP':<32}{r50:>9.2f}{r90:>9.2f}   (per run p50: "
          + ", ".join(f"{r['ratio']['p50']:.2f}" for r in runs) + ")")
    if "carried_ratio" in runs[0]:
        print(f"  {'ratio carried / TCP':<32}"
              f"{_median_of(runs, 'carried_ratio', 'p50'):>9.2f}"
              f"{_median_of(runs, 'carried_ratio', 'p90'):>9.2f}   (per run p50: "
              + ", ".join(f"{r['carried_ratio']['p50']:.2f}" for r in runs) + ")")
    if "floor_ratio" in runs[0]:
        print(f"  {'ratio floor / TCP':<32}{_median_of(runs, 'floor_ratio', 'p50'):>9.2f}"
              f"{_median_of(runs, 'floor_ratio', 'p90'):>9.2f}   (danted's UDP relays "
              "against its TCP ones, no daemon)")
    verdict = "holds" if r50 <= target else "does NOT hold"
    print(f"  target <= {target}x at p50: {verdict}")
    print(f"\n{out['rate']} datagrams/s of {out['size']} bytes for {out['seconds']:.0f} s, "
          "echoed (each run):")
    print(f"  {'sent':>7}{'received':>10}{'lost':>6}{'reordered':>10}{'bad':>5}"
          f"{'daemon CPU s':>14}{'CPU s / 1000 dg':>17}")
    for p in paced:
        per = p["daemon_cpu"] / p["sent"] * 1000
        print(f"  {p['sent']:>7}{p['received']:>10}{p['lost']:>6}{p['reordered']:>10}"
              f"{p['bad']:>5}{p['daemon_cpu']:>14.2f}{per:>17.3f}")
    print("  (CPU per 1000 datagrams sent, each also carried back as its echo)")
    print(f"  the far echo server saw only: {', '.join(out['far_saw'])}")
