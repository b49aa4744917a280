#!/usr/bin/env python3
"""The daemon's CPU per handoff connect (issue 16's 150 us), A/B between installs.

Builds the lab chain (tests/lab.py: three danted SOCKS4 hops), starts one socksifyd
per venv given (each its own runtime dir), then runs bench.py's latency client under
each venv's `socksify --via ...` (handoff, no pool), 1 and 3 hops, in interleaved
rounds (the order flips every round), and prints per run and as medians: the
daemon's CPU per connect (/proc/PID/schedstat, split into user and system by
/proc/PID/stat's ticks), its context switches per connect and the client's p50.
With --control N, also N connects the policy blocks (the shim-daemon round trip
without the network); with --socks5, the same danted hops are spoken to as SOCKS5
(greeting and CONNECT per hop). Needs root and the lab's prerequisites.

    sudo python3 scripts/connect_cpu.py /work/venv-a /work/venv-b [--rounds 6]
                                        [--connections 400] [--hops 1,3] [--control 0]
                                        [--socks5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402
import lab as labmod  # noqa: E402
import profile_connect  # noqa: E402


def sample(pid: int) -> tuple[float, float, int, float]:
    """(CPU seconds, user share of it, context switches, the main thread's CPU
    seconds: the daemon's Python; the rest is the lane's C) of pid so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks_user, ticks_sys = int(fields[11]), int(fields[12])
    ran = profile_connect.cpu_seconds(pid)
    switches = sum(int(line.split()[1])
                   for task in Path(f"/proc/{pid}/task").iterdir()
                   for line in (task / "status").read_text().splitlines()
                   if "ctxt_switches" in line)        # every thread's (the lane's too)
    main = profile_connect.thread_cpu(pid).get("main", (0.0, 0.0, 0))[0]
    return ran, ticks_user / max(ticks_user + ticks_sys, 1), switches, main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("venvs", nargs="+", type=Path, help="installs to compare")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--connections", type=int, default=400)
    ap.add_argument("--hops", default="1,3")
    ap.add_argument("--control", type=int, default=0, metavar="N")
    ap.add_argument("--socks5", action="store_true",
                    help="speak SOCKS5 to the hops (they take both)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skcpu-"))
    client, blocked = work / "client.py", work / "blocked.py"
    client.write_text(bench.CLIENT)
    blocked.write_text(profile_connect.BLOCKED)
    lab = labmod.build_lab()
    far = bench.FirstByte(labmod.listener_in(lab.far_ns), "first-byte")
    sides = []
    for i, venv in enumerate(args.venvs):
        rt = work / f"rt{i}"
        rt.mkdir(mode=0o700)
        env = labmod.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt)})
        env["PATH"] = f"{venv}/bin:{env.get('PATH', '/usr/bin:/bin')}"
        sides.append((venv, rt, env))

    def run(venv: Path, env: dict[str, str], cmd: list[str]) -> str:
        res = lab.ns_run(lab.client_ns, [str(venv / "bin" / "socksify"), "-q", *cmd],
                         env=env, timeout=600)
        if res.returncode != 0:
            raise SystemExit(res.describe())
        return res.stdout.strip().splitlines()[-1]

    def latency(venv: Path, env: dict[str, str], hops: int, n: int) -> list[float]:
        via = [a for h in lab.hops[:hops] for a in
               ("--via", h.url.replace("socks4://", "socks5://") if args.socks5 else h.url)]
        out = run(venv, env, [*via, "--", sys.executable, str(client), "latency",
                              lab.far_ip, str(far.port), str(n)])
        return json.loads(out)["latency"]  # type: ignore[no-any-return]

    results: dict[tuple[str, int], list[tuple[float, float, float, float, float]]] = {}
    try:
        for venv, _, env in sides:          # starts each daemon
            latency(venv, env, 1, 20)
        for r in range(args.rounds):
            for hops in (int(h) for h in args.hops.split(",")):
                for venv, rt, env in (sides if r % 2 == 0 else sides[::-1]):
                    pid = int((rt / "socksifyd.pid").read_text().split()[0])
                    cpu0, _, sw0, main0 = sample(pid)
                    lat = latency(venv, env, hops, args.connections)
                    cpu1, user, sw1, main1 = sample(pid)
                    n = args.connections + 5           # with the client's warm-up
                    per = (cpu1 - cpu0) / n * 1e6
                    row = (per, per * user, (sw1 - sw0) / n, statistics.median(lat) * 1e3,
                           (main1 - main0) / n * 1e6)
                    results.setdefault((venv.name, hops), []).append(row)
                    print(f"round {r} {venv.name:24} {hops} hop(s): daemon CPU "
                          f"{row[0]:5.0f} us/connect (user {row[1]:4.0f}; Python "
                          f"{row[4]:4.0f}, the rest {row[0] - row[4]:4.0f}), "
                          f"{row[2]:.2f} switches/connect, client p50 {row[3]:.2f} ms",
                          flush=True)
        print("medians:")
        for (name, hops), rows in results.items():
            print(f"  {name:24} {hops} hop(s): daemon CPU "
                  f"{statistics.median(x[0] for x in rows):5.0f} us/connect "
                  f"(runs {', '.join(f'{x[0]:.0f}' for x in rows)}; Python "
                  f"{statistics.median(x[4] for x in rows):.0f}, the rest "
                  f"{statistics.median(x[0] - x[4] for x in rows):.0f}); switches "
                  f"{statistics.median(x[2] for x in rows):.2f}; client p50 "
                  f"{statistics.median(x[3] for x in rows):.2f} ms")
        if args.control:
            policy = work / "block.toml"
            policy.write_text(f'[chains.out]\nhops = ["{lab.hops[0].url}"]\n\n'
                              '[[rules]]\nname = "nope"\ndest = ["192.0.2.1/32"]\n'
                              'action = "block"\n\n[default]\naction = "chain:out"\n')
            for r in range(args.rounds):
                for venv, rt, env in (sides if r % 2 == 0 else sides[::-1]):
                    pid = int((rt / "socksifyd.pid").read_text().split()[0])
                    cpu0, _, _, _ = sample(pid)
                    run(venv, env, ["-c", str(policy), "--", sys.executable, str(blocked),
                                    str(args.control)])
                    cpu1, _, _, _ = sample(pid)
                    print(f"control {venv.name:24} daemon CPU "
                          f"{(cpu1 - cpu0) / (args.control + 50) * 1e6:5.0f} us/request",
                          flush=True)
    finally:
        far.close()
        for venv, _, env in sides:
            labmod.run(["ip", "netns", "exec", lab.client_ns,
                        str(venv / "bin" / "socksifyd"), "stop"], env=env, timeout=30)
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
