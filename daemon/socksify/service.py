"""socksifyd: run, start, stop, restart, reload and inspect the per-user daemon."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__, client, daemonlog
from .errors import ConfigError
from .paths import Paths
from .printable import printable
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
  status         show pid, uptime, policy, sessions, connections, chains and their hops
  connections    list live connections: app, user, target, chain, bytes, age
                 (--json: the daemon's list as JSON, for scripts;
                 --app NAME, --chain NAME: only those; the chain of a direct
                 connection is "direct")
  top            a live view of the connections, the totals and rates per app and
                 per chain, and each chain's hops (q quits; --once: one frame;
                 --interval S; --app/--chain as for connections)
  events         follow connect, close and refuse events (--json: one object a line)
  check-config   validate a policy file without running anything
  install-service
                 write a systemd user unit for `socksifyd run` (--print: show it)

environment:
  SOCKSIFY_RUNTIME_DIR   directory of the control socket and pidfile
                         (default $XDG_RUNTIME_DIR/socksify or /tmp/socksify-UID;
                         on Windows %LOCALAPPDATA%\\socksify, which holds control.tcp
                         and the log too)
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
                                            "status", "connections", "top",
                                            "events", "check-config",
                                            "install-service"],
                        metavar="COMMAND", help="one of the commands below")
    parser.add_argument("file", nargs="?", help="policy file, for check-config")
    parser.add_argument("-c", "--config", type=Path, help="policy file to serve")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--socks", metavar="HOST:PORT", type=_listen_arg,
                        help="run/start: also serve SOCKS4/4a/5 on this loopback "
                        "address (the front door; overrides [frontdoor] listen)")
    parser.add_argument("--json", action="store_true",
                        help="connections, events: print JSON instead of text")
    parser.add_argument("--app", metavar="NAME",
                        help="connections, top: only this program's (its name)")
    parser.add_argument("--chain", metavar="NAME",
                        help="connections, top: only this chain's (\"direct\": none)")
    parser.add_argument("--once", action="store_true",
                        help="top: print one frame and exit")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S",
                        help="top: seconds between refreshes (default 1)")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="install-service: print the unit instead of writing it")
    args = parser.parse_args(argv)
    paths = Paths.from_env()
    try:
        if args.command == "run":
            return _run(paths, args.config, args.verbose, args.socks)
        if args.command == "start":
            return _start(paths, args.config, args.socks)
        if args.command == "stop":
            return _stop(paths)
        if args.command == "restart":
            _stop(paths)
            return _start(paths, args.config, args.socks)
        if args.command == "reload":
            return _reload(paths)
        if args.command == "status":
            return _status(paths)
        if args.command == "connections":
            return _connections(paths, args.json, args.app, args.chain)
        if args.command == "top":
            from . import toploop  # rich: imported only by the commands that draw
            return toploop.main(paths, args.app, args.chain, args.interval, args.once)
        if args.command == "events":
            from .eventstream import follow
            return follow(paths, args.json)
        if args.command == "install-service":
            return _install_service(args.config, args.print_only)
        return _check_config(args.file or args.config)
    except client.DaemonUnavailable as exc:
        print(f"socksifyd: {exc}", file=sys.stderr)
        return 1
    except client.UnsafeDaemon as exc:
        print(f"socksifyd: {exc}", file=sys.stderr)
        return 1


def _listen_arg(text: str) -> tuple[str, int]:
    from .policy import parse_listen
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run(paths: Paths, config: Path | None, verbose: bool,
         socks: tuple[str, int] | None = None) -> int:
    from .daemon import AlreadyRunning, Daemon
    from .shimlib import ShimMismatch, check_versions

    level = os.environ.get("SOCKSIFY_LOG_LEVEL", "").upper()
    daemonlog.setup(logging.DEBUG if verbose else
                    getattr(logging, level, logging.INFO) if level else logging.INFO)
    try:
        if sys.platform != "win32":   # the Linux shim; the DLL is checked by its build
            check_versions()
        try:
            asyncio.run(Daemon(paths, config, socks_listen=socks).run())
        finally:
            daemonlog.flush()         # before anything else is written to stderr
    except (AlreadyRunning, ConfigError, ShimMismatch, OSError, ValueError) as exc:
        print(f"socksifyd: {exc}", file=sys.stderr)
        return 1
    return 0


def _start(paths: Paths, config: Path | None,
           socks: tuple[str, int] | None = None) -> int:
    if client.is_running(paths):
        print(f"socksifyd: already running (pid {client.daemon_pid(paths) or '?'}); "
              "not starting another", file=sys.stderr)
        return 1
    extra = ["--socks", f"{socks[0]}:{socks[1]}"] if socks else []
    pid = client.start_daemon(paths, config, extra)
    print(f"socksifyd started (pid {pid}), log {paths.logfile}")
    return 0


def _stop(paths: Paths) -> int:
    """Ask the daemon on the checked control socket to stop (client.connect checks the
    directory and the peer), then wait for the pid it reported -- which must be the
    one the kernel gives for the socket's peer -- to end. No signal is sent: a pid
    read from a file could name any process of ours."""
    try:
        reply, peer = client.exchange(paths, {"op": "stop"})
    except client.DaemonUnavailable:
        print("socksifyd: not running", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"socksifyd: the daemon refused to stop: {printable(reply.get('error'))}",
              file=sys.stderr)
        return 1
    pid = reply.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) \
            or (peer is not None and pid != peer):
        print(f"socksifyd: the daemon at {_where(paths)} reported pid "
              f"{printable(pid)}, but pid {peer} answered; not waiting for it",
              file=sys.stderr)
        return 1
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"socksifyd stopped (pid {pid})")
            return 0
        if not paths.pidfile.exists():
            print(f"socksifyd stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    print(f"socksifyd: pid {pid} still running after {STOP_TIMEOUT:.0f}s",
          file=sys.stderr)
    return 1


def _alive(pid: int) -> bool:
    if sys.platform == "win32":
        import psutil
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reload(paths: Paths) -> int:
    reply = client.request(paths, {"op": "reload"})
    if not reply.get("ok"):
        print("socksifyd: reload failed, the old policy stays: "
              f"{printable(reply.get('error'))}", file=sys.stderr)
        return 1
    print(f"policy reloaded from {printable(reply.get('policy'))}")
    return 0


def _status(paths: Paths) -> int:
    try:
        st = client.request(paths, {"op": "status"})
    except client.DaemonUnavailable as exc:
        print(f"socksifyd: not running (no daemon at {_where(paths)})")
        print(f"socksifyd: {exc}", file=sys.stderr)   # e.g. a squatter on a stale port
        return 3
    from . import render  # rich: imported only by the commands that print with it
    print("\n".join(printable(line) for line in render.status_lines(st)))
    return 0


def _where(paths: Paths) -> str:
    """Where the daemon is looked for: its control socket, or control file."""
    return str(client.control_file(paths) if sys.platform == "win32" else paths.socket)


def _connections(paths: Paths, as_json: bool, app: str | None = None,
                 chain: str | None = None) -> int:
    """The table (or JSON): the daemon is asked for the filters' rows only, and they
    are applied here too (a daemon that does not know them sends every row)."""
    from .toprates import connections_request, filtered
    try:
        reply = client.request(paths, connections_request(app, chain))
    except client.DaemonUnavailable:
        print(f"socksifyd: not running (no daemon at {_where(paths)})", file=sys.stderr)
        return 3
    if not reply.get("ok"):
        print("socksifyd: the daemon cannot list connections: "
              f"{printable(reply.get('error'))}", file=sys.stderr)
        return 1
    conns = filtered(reply.get("connections") or [], app, chain)
    from . import render
    if as_json:
        # "now": the daemon's clock, so a script can take rates from two listings
        out: dict[str, Any] = {"connections": conns}
        if isinstance(reply.get("now"), (int, float)):
            out["now"] = reply["now"]
        print(json.dumps(out))
        return 0
    if sys.stdout.isatty():
        from rich.console import Console
        render.print_connections(conns, Console(highlight=False, emoji=False))
    else:
        sys.stdout.write(render.connections_text(conns))
    return 0


def _socksifyd_command() -> list[str]:
    """The absolute command that runs this socksifyd: the `socksifyd` script being
    run, else the one on PATH, else this Python with -m socksify.service."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "socksifyd" and argv0.is_file() \
            and os.access(argv0, os.X_OK):
        return [str(argv0.resolve())]
    found = shutil.which("socksifyd")
    if found:
        return [str(Path(found).resolve())]
    return [str(Path(sys.executable).resolve()), "-m", "socksify.service"]


def unit_path(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else \
        Path(env.get("HOME") or os.path.expanduser("~")) / ".config"
    return base / "systemd" / "user" / "socksifyd.service"


def _install_service(config: Path | None, print_only: bool) -> int:
    if sys.platform == "win32":
        print("socksifyd: install-service writes a systemd unit; on Windows, `socksify` "
              "starts the daemon when needed, or run `socksifyd start` at logon (a Task "
              "Scheduler task)", file=sys.stderr)
        return 2
    from . import render
    unit = render.unit_file(_socksifyd_command(),
                            str(config.resolve()) if config is not None else None)
    if print_only:
        sys.stdout.write(unit)
        return 0
    target = unit_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    target.write_text(unit)
    print(f"{'replaced' if existed else 'wrote'} {target}")
    print("now run:")
    print("  systemctl --user daemon-reload && systemctl --user enable --now socksifyd")
    paths = Paths.from_env()
    try:
        pid = client.daemon_pid(paths)
    except client.UnsafeDaemon:
        pid = None
    if pid is not None and not _under_systemd(pid):
        print(f"(socksifyd pid {pid} is running outside systemd: `socksifyd stop` it "
              "first, or the unit cannot start)")
    return 0


def _under_systemd(pid: int) -> bool:
    try:
        return "socksifyd.service" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


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
    for warning in policy.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{file}: ok ({len(policy.chains)} chain(s), {len(policy.rules)} rule(s), "
          f"default {policy.default}"
          f"{f', {len(policy.warnings)} warning(s)' if policy.warnings else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
