#!/usr/bin/env python3
"""Where a handoff connect's latency goes, step by step, from the program's connect()
to its first byte: the critical path, not the daemon's CPU (connect_cpu.py) or its
samples (profile_connect.py).

Builds the lab chain (tests/lab.py: danted hops), runs one `socksifyd run` from the
given install with clock readings (CLOCK_MONOTONIC, shared by every process) added at
a few of its functions for this run only, and a client under `socksify --via ...`
that reads the same clock around each connect() and its first byte ("woken": the
daemon's first return from epoll with events in that connect). Each connect's
readings are matched by time (the client is sequential) and printed per step as
p10/p50/p90 over the connects. The readings themselves cost a few microseconds each.
Needs root and the lab's prerequisites; the install's daemon is patched in memory
only (function names below: a renamed one fails loudly). It times the chain engine's
path: the daemon runs without its lane (SOCKSIFY_LANE=0), which would otherwise build
every connect after the first in C, where none of these functions run.

    sudo python3 scripts/connect_timeline.py VENV [--hops 1] [--connections 400]
                                                  [--socks5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402
import lab as labmod  # noqa: E402

# socksifyd run, with a reading (name, clock) at each point of a connect's path
DAEMON = r'''
import atexit, os, selectors, sys, time
from socksify import service, sockstream
from socksify.chains import hops
from socksify.core import router
from socksify.listeners import control, shimconn

marks = []
now = time.monotonic_ns

def before(owner, name, mark):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        marks.append((mark, now()))
        return real(*args, **kwargs)
    setattr(owner, name, wrapper)

def after_async(owner, name, mark):
    real = getattr(owner, name)
    async def wrapper(*args, **kwargs):
        result = await real(*args, **kwargs)
        marks.append((mark, now()))
        return result
    setattr(owner, name, wrapper)

def around_sync(owner, name, mark):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        marks.append((mark, now()))
        return result
    setattr(owner, name, wrapper)

real_select = selectors.EpollSelector.select
def select(self, timeout=None):
    ready = real_select(self, timeout)
    if ready:
        marks.append(("woken", now()))
    return ready
selectors.EpollSelector.select = select

before(shimconn.ShimConnection, "_readable", "request")
around_sync(router.Router, "_decide", "decided")
before(hops, "dial_hop", "dial")
after_async(hops, "dial_hop", "dialled")
before(sockstream.RawStream, "drain", "sent")
after_async(sockstream.RawStream, "read_within", "reply")
after_async(control, "answer", "answer")

def dump():
    with open(os.environ["TIMELINE_MARKS"], "w") as out:
        out.writelines(f"{mark} {t}\n" for mark, t in marks)
atexit.register(dump)
sys.exit(service.main(sys.argv[1:]))
'''

CLIENT = r'''
import json, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
now = time.monotonic_ns
for _ in range(5):                      # warm-up, not counted
    s = socket.create_connection((host, port)); s.recv(1); s.close()
out = []
for _ in range(count):
    s = socket.socket()
    t0 = now(); s.connect((host, port)); t1 = now()
    if s.recv(1) != b"!":
        sys.exit("bad first byte")
    out.append((t0, t1, now()))
    s.close()
    time.sleep(0.001)                   # the daemon's log line and close, apart
print(json.dumps(out))
'''

STEPS = [
    ("connect() -> the daemon woken (the shim's request; the wake-up)", "start",
     "woken"),
    ("woken -> the request read (the event loop)", "woken", "request"),
    ("request -> decision (read, parse, identify, policy)", "request", "decided"),
    ("decision -> hop 1's connect starts (route, chain set-up)", "decided", "dial"),
    ("hop 1's TCP connect (the kernel's handshake on the link)", "dial", "dialled"),
    ("connected -> the requests sent (encoding, the write)", "dialled", "sent"),
    ("requests sent -> last reply read (the hops; the daemon's wake-up)", "sent",
     "reply"),
    ("last reply -> answer ready (checks, live table, events)", "reply", "answer"),
    ("answer -> the program's connect() returns "
     "(the send, the program's wake-up)", "answer", "connected"),
    ("connect() returned -> first byte", "connected", "first byte"),
    ("the program's connect(), whole", "start", "connected"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("venv", type=Path, help="the install whose daemon is timed")
    ap.add_argument("--hops", type=int, default=1)
    ap.add_argument("--connections", type=int, default=400)
    ap.add_argument("--socks5", action="store_true",
                    help="speak SOCKS5 to the hops (they take both)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sktime-"))
    (work / "daemon.py").write_text(DAEMON)
    (work / "client.py").write_text(CLIENT)
    rt = work / "rt"
    rt.mkdir(mode=0o700)
    env = labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt),
                            "TIMELINE_MARKS": str(work / "marks"),
                            "SOCKSIFY_LANE": "0"})
    env["PATH"] = f"{args.venv}/bin:{env.get('PATH', '/usr/bin:/bin')}"
    lab = labmod.build_lab()
    far = bench.FirstByte(labmod.listener_in(lab.far_ns), "first-byte")
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", lab.client_ns, str(args.venv / "bin" / "python"),
         str(work / "daemon.py"), "run"], env=env, stdout=subprocess.DEVNULL,
        stderr=(work / "daemon.err").open("w"))
    try:
        deadline = time.monotonic() + 20
        while not (rt / "socksifyd.pid").exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("socksifyd did not start:\n"
                                 + (work / "daemon.err").read_text())
            time.sleep(0.05)
        via = [a for h in lab.hops[:args.hops] for a in
               ("--via", h.url.replace("socks4://", "socks5://") if args.socks5
                else h.url)]
        res = lab.ns_run(lab.client_ns,
                         [str(args.venv / "bin" / "socksify"), "-q", *via, "--",
                          sys.executable, str(work / "client.py"), lab.far_ip,
                          str(far.port), str(args.connections)], env=env, timeout=600)
        if res.returncode != 0:
            raise SystemExit(res.describe())
        client = json.loads(res.stdout.strip().splitlines()[-1])
        daemon.terminate()
        daemon.wait(30)
        marks = sorted((int(t), name) for name, t in
                       (line.split() for line in (work / "marks").read_text().splitlines()))
        rows = []
        for start, connected, first in client:
            times = {"start": start, "connected": connected, "first byte": first}
            for t, name in marks:
                if start <= t <= connected:
                    # the first of each, but the last reply and the last answer
                    if name not in times or name in ("reply", "answer"):
                        times[name] = t
            if all(a in times and b in times for _, a, b in STEPS):
                rows.append([(times[b] - times[a]) / 1000 for _, a, b in STEPS])
        print(f"{args.hops} {'SOCKS5' if args.socks5 else 'SOCKS4'} hop(s), "
              f"{len(rows)} of {len(client)} connects with every reading; "
              f"microseconds: p10 / p50 / p90")
        for i, (what, _, _) in enumerate(STEPS):
            xs = sorted(r[i] for r in rows)
            if not xs:
                continue
            print(f"  {xs[len(xs) // 10]:7.0f} {statistics.median(xs):7.0f} "
                  f"{xs[len(xs) * 9 // 10]:7.0f}  {what}")
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(30)
        far.close()
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
