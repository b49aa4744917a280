"""socksifyd: run, start, stop, restart, reload and inspect the per-user daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from . import __version__, client
from .errors import ConfigError
from .paths import Paths
from .policy import Policy

STOP_TIMEOUT = 15.0

DESCRIPTION = """\
Manage the socksify daemon: the per-user process that applies the policy, builds SOCKS
chains and carries the bytes of every socksified connection. `socksify` starts it on
demand; use this command to run it under a service manager or to inspect it."""

EPILOG = """\
commands:
  run            stay in the foreground (for systemd, containers, debugging)
  start          start in the background; log to the state dir
  stop           stop gracefully (live connections get a few seconds to finish)
  restart        stop, then start
  reload         re-read the policy (same as SIGHUP); live connections go on
  status         show pid, uptime, policy, sessions, live connections, dead hops
  check-config   validate a policy file without running anything

environment:
  SOCKSIFY_RUNTIME_DIR   directory of the control socket and pidfile
                         (default $XDG_RUNTIME_DIR/socksify or /tmp/socksify-UID)
  SOCKSIFY_CONFIG        policy file (default ~/.config/socksify/socksify.toml,
                         then /etc/socksify/socksify.toml)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="socksifyd", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"socksifyd {__version__}")
    parser.add_argument("command", choices=["run", "start", "stop", "restart", "reload",
                                            "status", "check-config"],
                        metavar="COMMAND", help="one of the commands below")
    parser.add_argument("file", nargs="?", help="policy file, for check-config")
    parser.add_argument("-c", "--config", type=Path, help="policy file to serve")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    paths = Paths.from_env()
    try:
        if args.command == "run":
            return _run(paths, args.config, args.verbose)
        if args.command == "start":
            return _start(paths, args.config)
        if args.command == "stop":
            return _stop(paths)
        if args.command == "restart":
            _stop(paths)
            return _start(paths, args.config)
        if args.command == "reload":
            return _reload(paths)
        if args.command == "status":
            return _status(paths)
        return _check_config(args.file or args.config)
    except client.DaemonUnavailable as exc:
        print(f"socksifyd: {exc}", file=sys.stderr)
        return 1


def _run(paths: Paths, config: Path | None, verbose: bool) -> int:
    from .daemon import AlreadyRunning, Daemon
    from .shimlib import ShimMismatch, check_versions

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_versions()
        asyncio.run(Daemon(paths, config).run())
    except (AlreadyRunning, ConfigError, ShimMismatch, PermissionError) as exc:
        print(f"socksifyd: {exc}", file=sys.stderr)
        return 1
    return 0


def _start(paths: Paths, config: Path | None) -> int:
    if client.is_running(paths):
        print(f"socksifyd: already running ({_pid(paths) or '?'}); not starting another",
              file=sys.stderr)
        return 1
    pid = client.start_daemon(paths, config)
    print(f"socksifyd started (pid {pid}), log {paths.logfile}")
    return 0


def _pid(paths: Paths) -> int | None:
    try:
        return int(paths.pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop(paths: Paths) -> int:
    pid = _pid(paths)
    if pid is None or not client.is_running(paths):
        print("socksifyd: not running", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"socksifyd stopped (pid {pid})")
            return 0
        if not paths.pidfile.exists():
            print(f"socksifyd stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    print(f"socksifyd: pid {pid} still running after {STOP_TIMEOUT:.0f}s",
          file=sys.stderr)
    return 1


def _reload(paths: Paths) -> int:
    reply = client.request(paths, {"op": "reload"})
    if not reply.get("ok"):
        print(f"socksifyd: reload failed, the old policy stays: {reply.get('error')}",
              file=sys.stderr)
        return 1
    print(f"policy reloaded from {reply.get('policy')}")
    return 0


def _status(paths: Paths) -> int:
    try:
        st = client.request(paths, {"op": "status"})
    except client.DaemonUnavailable:
        print(f"socksifyd: not running (no daemon at {paths.socket})")
        return 3
    down = st.get("hops_down") or {}
    rows = [
        ("state", "running"),
        ("pid", str(st["pid"])),
        ("version", st["version"]),
        ("uptime", _duration(float(st["uptime"]))),
        ("control socket", st["socket"]),
        ("policy", st["policy"] or "none (only socksify sessions)"),
        ("sessions", str(st["sessions"])),
        ("connections", f"{st['live']} live, {st['pending']} being attached"),
        ("hops down", ", ".join(f"{h} (retry in {s:.0f}s)" for h, s in down.items())
         or "none"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:>{width}}  {value}")
    return 0


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def _check_config(file: str | Path | None) -> int:
    if not file:
        print("socksifyd: check-config needs a file: socksifyd check-config FILE",
              file=sys.stderr)
        return 2
    try:
        policy = Policy.load(Path(file))
    except ConfigError as exc:
        print(f"socksifyd: {exc}", file=sys.stderr)
        return 1
    print(f"{file}: ok ({len(policy.chains)} chain(s), default {policy.default})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
