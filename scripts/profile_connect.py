#!/usr/bin/env python3
"""Where a connect's time goes: run bench.py's latency client through the lab chain
under `socksify` and sample the daemon with py-spy while it runs.

Prints the client's p50, the daemon's CPU time per connect (from /proc), and the
share of the daemon's samples per step of a connect (accept, request parse,
identification, policy, chain build, per-hop replies, handoff/reply, logging, event
loop). Needs root, the lab's prerequisites, socksify on PATH and py-spy
(`pip install py-spy`).

    sudo python3 scripts/profile_connect.py [--hops 1] [--connections 3000]
                                            [--prebuilt N] [--stacks stacks.txt]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
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

# A sample's step. First by its innermost frame, for the system calls that dominate
# (their kernel time includes the TCP work on the lab's veth links), then by the
# innermost frame that names a step (file or file:function).
LEAF_STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("hop 1 TCP connect (syscall, poll)", ("_sock_connect", "sock_connect",
                                           "_connect_within", "_connected_soon")),
    ("SOCKS request send (syscall)", ("sock_sendall", "RawStream.drain")),
    ("epoll wait (syscall)", ("EpollSelector.select",)),
]
STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("router.py:Router._event", "router.py:Router._notify",
                 "router.py:Router._connected")),
    ("identification", ("procinfo.py",)),
    ("policy", ("policy", "sessions.py:Sessions.policy_for")),
    ("request parse", ("protocol/control.py",)),
    ("accept", ("control.py:Control._accept",)),
    ("per-hop replies", ("hops.py:_Step.read", "steps.py:Step.read",
                         "sockstream.py:recv_exactly", "sockstream.py:recv_exactly_within",
                         "sockstream.py:wait_ready", "sockstream.py:RawStream.readexactly",
                         "sockstream.py:RawStream.read_within")),
    ("chain build", ("chains",)),
    ("handoff/reply", ("fdpass.py", "control.py:_handoff", "control.py:Control._shim")),
    ("control read", ("control.py:Control.serve",)),
    ("router", ("router.py",)),
]


def _frame(frame: str) -> tuple[str, str]:
    """(function, path) of a py-spy raw frame "function (path:line)"."""
    name, _, rest = frame.partition(" (")
    return name, rest.rsplit(":", 1)[0]


def step_of(stack: str) -> str:
    frames = [_frame(f) for f in stack.split(";") if f]
    if frames:
        leaf = frames[-1][0].split(".")[-1]
        for step, marks in LEAF_STEPS:
            if frames[-1][0] in marks or leaf in marks:
                return step
    for name, path in reversed(frames):        # innermost first
        if path.startswith("logging/"):
            return "logging"
        if not path.startswith("socksify/"):
            continue
        rel = path[len("socksify/"):]
        for step, marks in STEPS:
            for mark in marks:
                if ":" in mark:
                    if f"{os.path.basename(rel)}:{name}" == mark:
                        return step
                elif rel == mark or rel.startswith(mark + "/") or \
                        os.path.basename(rel) == mark:
                    return step
    return "event loop"


BLOCKED = r'''
import errno, json, resource, socket, sys, time
out = []
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
for i in range(int(sys.argv[1]) + 50):
    s = socket.socket()
    t0 = time.perf_counter()
    err = s.connect_ex(("192.0.2.1", 9))
    t1 = time.perf_counter()
    s.close()
    if err != errno.EACCES:
        sys.exit(f"connect: {errno.errorcode.get(err, err)}, not EACCES")
    if i == 49:
        c0 = cpu()
    if i >= 50:
        out.append(t1 - t0)
print(json.dumps({"times": out, "cpu": cpu() - c0}))
'''


def cpu_seconds(pid: int) -> float:
    """CPU time pid has run so far, all its threads (the lane's too): the sum of
    /proc/PID/task/*/schedstat (ns, not /proc/PID/stat's ticks; a process's own
    schedstat counts its main thread only); connect_cpu.py and control_cpu.py read
    it too."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass                # a thread that ended meanwhile
    return total / 1e9


def thread_cpu(pid: int) -> dict[str, tuple[float, float, int]]:
    """Per thread of pid, by name: (CPU seconds from schedstat, user share from stat's
    ticks, times it was given a CPU from schedstat: its wake-ups and preemptions).
    The main thread, where the daemon's Python runs, is "main"; the others go by
    /proc/PID/task/TID/comm (the lane's C is "socksifyd-lane")."""
    out: dict[str, tuple[float, float, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            sched = (task / "schedstat").read_text().split()
            ticks = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        user, system = int(ticks[11]), int(ticks[12])
        was = out.get(name, (0.0, 0.0, 0))
        out[name] = (was[0] + int(sched[0]) / 1e9, user / max(user + system, 1),
                     was[2] + int(sched[2]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hops", type=int, default=1)
    ap.add_argument("--connections", type=int, default=3000)
    ap.add_argument("--stacks", type=Path, help="also keep py-spy's raw stacks here")
    ap.add_argument("--prebuilt", type=int, default=0, metavar="N",
                    help="profile the pre-built path: socksify --prebuilt N (the warm-up "
                    "run starts the pool)")
    ap.add_argument("--control", type=int, default=3000, metavar="N",
                    help="also time N connects the policy blocks: the shim-daemon round "
                    "trip without the network (0 skips)")
    args = ap.parse_args()
    if shutil.which("py-spy") is None or shutil.which("socksify") is None:
        print("profile: needs py-spy and socksify on PATH", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="skprof-"))
    client = work / "client.py"
    client.write_text(bench.CLIENT)
    rt = work / "rt"
    rt.mkdir(mode=0o700)
    lab = labmod.build_lab()
    fb = bench.FirstByte(labmod.listener_in(lab.far_ns), "first-byte")
    env = labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt)})
    try:
        via = [a for h in lab.hops[:args.hops] for a in ("--via", h.url)]
        if args.prebuilt:
            via = ["--prebuilt", str(args.prebuilt), *via]
        # start the daemon with a short run, so that py-spy sees only the timed one
        warm = lab.ns_run(lab.client_ns, ["socksify", "-q", *via, "--", sys.executable,
                                          str(client), "latency", lab.far_ip,
                                          str(fb.port), "20"], env=env, timeout=120)
        if warm.returncode != 0:
            raise SystemExit(warm.describe())
        pid = int((rt / "socksifyd.pid").read_text().split()[0])
        raw = work / "stacks.txt"
        spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "--rate", "1000",
                                "--format", "raw", "-o", str(raw), "--pid", str(pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)
        cpu0, threads0 = cpu_seconds(pid), thread_cpu(pid)
        res = lab.ns_run(lab.client_ns, ["socksify", "-q", *via, "--", sys.executable,
                                         str(client), "latency", lab.far_ip,
                                         str(fb.port), str(args.connections)],
                         env=env, timeout=900)
        cpu, threads1 = cpu_seconds(pid) - cpu0, thread_cpu(pid)
        spy.send_signal(2)
        spy.wait(timeout=60)
        if res.returncode != 0:
            raise SystemExit(res.describe())
        lat = json.loads(res.stdout.strip().splitlines()[-1])["latency"]
        counts: collections.Counter[str] = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                counts[step_of(stack)] += int(n)
        total = sum(counts.values()) or 1
        n = args.connections + 5
        per = cpu / n * 1e6
        print(f"{args.hops} hop(s), {args.connections} connects: client p50 "
              f"{statistics.median(lat) * 1000:.3f} ms; daemon CPU {per:.0f} us per "
              f"connect ({total} samples)")
        for name, (ran, user, runs) in sorted(threads1.items()):
            was = threads0.get(name, (0.0, 0.0, 0))
            print(f"  thread {name:<16} {(ran - was[0]) / n * 1e6:6.0f} us per connect, "
                  f"on a CPU {(runs - was[2]) / n:.2f} times per connect "
                  f"(user share {user:.0%} over its life)")
        # py-spy sees the Python thread only: its samples share out that thread's CPU
        python = (threads1.get("main", (0.0, 0.0, 0))[0]
                  - threads0.get("main", (0.0, 0.0, 0))[0]) / n * 1e6
        for step, c in counts.most_common():
            print(f"  {step:<16} {c / total * 100:5.1f}%  ~{python * c / total:6.0f} us")
        if args.stacks:
            shutil.copy(raw, args.stacks)
        if args.control:
            policy = work / "block.toml"
            policy.write_text(f'[chains.out]\nhops = ["{lab.hops[0].url}"]\n\n'
                              '[[rules]]\nname = "nope"\ndest = ["192.0.2.1/32"]\n'
                              'action = "block"\n\n[default]\naction = "chain:out"\n')
            blocked = work / "blocked.py"
            blocked.write_text(BLOCKED)
            cpu0 = cpu_seconds(pid)
            res = lab.ns_run(lab.client_ns, ["socksify", "-q", "-c", str(policy), "--",
                                             sys.executable, str(blocked),
                                             str(args.control)], env=env, timeout=300)
            cpu = cpu_seconds(pid) - cpu0
            if res.returncode != 0:
                raise SystemExit(res.describe())
            out = json.loads(res.stdout.strip().splitlines()[-1])
            times, n = out["times"], args.control + 50
            print(f"control round trip (a connect the policy blocks, {args.control}): "
                  f"p50 {statistics.median(times) * 1e6:.0f} us, "
                  f"p90 {sorted(times)[int(len(times) * 0.9)] * 1e6:.0f} us; "
                  f"CPU per connect: daemon {cpu / n * 1e6:.0f} us, program "
                  f"{out['cpu'] / len(times) * 1e6:.1f} us")
    finally:
        fb.close()
        labmod.run(["ip", "netns", "exec", lab.client_ns, "socksifyd", "stop"],
                   env=env, timeout=30)
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
