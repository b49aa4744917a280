#!/usr/bin/env python3
"""The daemon's CPU per shim request on the control side, A/B between installs, no lab.

Starts one `socksifyd run` per venv given (each in its own runtime directory, no
policy file), then runs N connects the policy blocks (a connect to 192.0.2.1 under
`socksify -q -c block.toml`: request read, record, policy, the log line, the reply;
no network) under each venv's socksify, in interleaved rounds whose order flips
every round, and prints per run and as medians the daemon's CPU per request
(/proc/PID/schedstat, including the session's start amortized over N + 50) and the
program's round trip p50. With --profile, the daemons run under cProfile and its
tables (internal and cumulative time) are printed at the end. Linux; no root needed.

    python3 scripts/control_cpu.py /work/venv-a /work/venv-b [--rounds 8] [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import profile_connect  # noqa: E402

POLICY = """\
[chains.out]
hops = ["socks4://127.0.0.1:1"]

[[rules]]
name = "nope"
dest = ["192.0.2.1/32"]
action = "block"

[default]
action = "chain:out"
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("venvs", nargs="+", type=Path, help="installs to compare")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--profile", action="store_true",
                    help="run the daemons under cProfile and print its tables")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skctl-"))
    policy, blocked = work / "block.toml", work / "blocked.py"
    policy.write_text(POLICY)
    blocked.write_text(profile_connect.BLOCKED)
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    daemons = []
    try:
        for i, venv in enumerate(args.venvs):
            rt = work / f"rt{i}"
            rt.mkdir(mode=0o700)
            env = dict(os.environ, SOCKSIFY_RUNTIME_DIR=str(rt),
                       PATH=f"{venv}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}")
            cmd = [str(venv / "bin" / "socksifyd"), "run"]
            if args.profile:
                cmd = [str(venv / "bin" / "python"), "-c",
                       "import cProfile; from socksify.service import main; "
                       f"cProfile.run('main([\"run\"])', {str(work / f'prof{i}')!r})"]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            daemons.append((venv, env, proc))
            deadline = time.monotonic() + 20
            while not (rt / "control.sock").exists() and not list(rt.glob("*.sock")):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"{venv}: socksifyd did not start")
                time.sleep(0.05)
        results: dict[Path, list[tuple[float, float]]] = {v: [] for v in args.venvs}
        for r in range(args.rounds):
            for venv, env, proc in (daemons if r % 2 == 0 else daemons[::-1]):
                cpu0 = profile_connect.cpu_seconds(proc.pid)
                res = subprocess.run([str(venv / "bin" / "socksify"), "-q", "-c",
                                      str(policy), "--", python, str(blocked),
                                      str(args.requests)], env=env, capture_output=True,
                                     text=True, timeout=600)
                cpu1 = profile_connect.cpu_seconds(proc.pid)
                if res.returncode != 0:
                    raise SystemExit(f"{venv}: {res.stderr}")
                times = json.loads(res.stdout.strip().splitlines()[-1])["times"]
                row = ((cpu1 - cpu0) / (args.requests + 50) * 1e6,
                       statistics.median(times) * 1e6)
                results[venv].append(row)
                print(f"round {r} {str(venv):28} daemon CPU {row[0]:5.0f} us/request, "
                      f"round trip p50 {row[1]:4.0f} us", flush=True)
        print("medians:")
        for venv, rows in results.items():
            print(f"  {str(venv):28} daemon CPU "
                  f"{statistics.median(x[0] for x in rows):5.0f} us/request (runs "
                  f"{', '.join(f'{x[0]:.0f}' for x in rows)}); round trip p50 "
                  f"{statistics.median(x[1] for x in rows):4.0f} us")
    finally:
        for _, _, proc in daemons:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.profile:
            import pstats
            for i, (venv, _, _) in enumerate(daemons):
                print(f"===== {venv}")
                stats = pstats.Stats(str(work / f"prof{i}"))
                stats.sort_stats("tottime").print_stats(40)
                stats.sort_stats("cumulative").print_stats(40)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
