#!/usr/bin/env python3
"""Start-up yardstick (issue 16): the whole command `socksify -q --via URL ARGS...`
against `proxychains4 -q -f CONF ARGS...`, run in alternating pairs; prints the median
wall time of each and the difference. The proxy (URL and CONF's one entry) is the
caller's: an idle danted, or a daemon's own front door. docs/performance.md,
"Start-up", has the commands and a run.

    scripts/startup.py --socksify VENV/bin/socksify --via socks5://127.0.0.1:1080 \\
        --proxychains-conf pc.conf --pairs 20 -- true
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import time


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall time, and the CPU time (user + system) of the command and its children:
    on a machine others load, the CPU time still says what the command itself
    costs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socksify", required=True, help="the socksify script to time")
    p.add_argument("--via", required=True, help="the proxy, as a --via URL")
    p.add_argument("--proxychains-conf", required=True,
                   help="a proxychains4 configuration naming the same proxy")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--socksify-arg", action="append", default=[],
                   help="more socksify options (e.g. --proxy-loopback)")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    ours = [args.socksify, "-q", "--via", args.via, *args.socksify_arg, "--", *command]
    theirs = ["proxychains4", "-q", "-f", args.proxychains_conf, *command]
    timed(ours), timed(theirs)   # warm the page cache
    a, b = [], []
    for _ in range(args.pairs):
        a.append(timed(ours))
        b.append(timed(theirs))
    print(f"{' '.join(command)} (medians of {args.pairs} pairs, load "
          f"{os.getloadavg()[0]:.1f}):")
    for i, what in ((0, "wall"), (1, "cpu ")):
        ma = statistics.median(x[i] for x in a)
        mb = statistics.median(x[i] for x in b)
        print(f"  {what} socksify {ma * 1000:6.1f} ms  proxychains4 {mb * 1000:6.1f} ms"
              f"  difference {(ma - mb) * 1000:+6.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
