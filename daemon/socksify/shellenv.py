"""`socksify env [OPTIONS]` and `socksify off`: turn the current shell on and off, as
`. torsocks on|off` does:

    eval "$(socksify env --via socks5://127.0.0.1:9050)"    # on
    eval "$(socksify off)"                                   # off

`env` prints the exports a `socksify COMMAND` would give COMMAND (the same function
builds them: cli.program_env). The daemon session they name must outlive `socksify
env` itself, so a small keeper process holds it: it lives as long as the shell that
evaluated the exports (the parent of `socksify env`: `$(...)` execs a simple command
in bash, zsh and dash), or until `socksify off` stops it. After that the exports name
an ended session, which the daemon refuses: a program still carrying them fails
closed. `off` prints the unsets and takes the shim out of LD_PRELOAD.

The shell that evaluates the exports is not socksified itself (its own connections,
such as bash's /dev/tcp, are not carried), only the programs it starts; a program
started while on keeps the shim, and gives it to its children, after `off`. A shell
started by `socksify --shell` carries the shim itself: `off` refuses there.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from .paths import Paths

KEEP = "--keep-for"            # the keeper's own argv: socksify.cli env --keep-for PID
OUR_VARS = ("SOCKSIFY_SOCKET", "SOCKSIFY_SESSION", "SOCKSIFY_LOG", "SOCKSIFY_KEEPER",
            "SOCKSIFY_ALLOW_UNPROTECTED", "SOCKSIFY_PROXY_LOOPBACK")
ProgramEnv = Callable[[argparse.Namespace, Path, Paths, str], dict[str, str]]


def main(which: str, argv: list[str], parser: argparse.ArgumentParser,
         program_env: ProgramEnv, session_request: Callable[[argparse.Namespace],
                                                            dict[str, Any]],
         session_cls: Callable[..., Any]) -> int:
    """cli.main's `env` and `off` (cli hands in what it owns, so this module needs
    no import of it)."""
    if argv[:1] == [KEEP] and len(argv) == 2 and argv[1].isdigit():
        return _keep(int(argv[1]), session_cls)
    code = off(argv) if which == "off" else \
        _env(argv, parser, program_env, session_request)
    if code:
        print("false")      # so that `eval "$(socksify env|off)"` fails too
    return code


def _env(argv: list[str], parser: argparse.ArgumentParser, program_env: ProgramEnv,
         session_request: Callable[[argparse.Namespace], dict[str, Any]]) -> int:
    args = parser.parse_args(argv)
    if sys.platform == "win32":
        print("socksify env: needs LD_PRELOAD; not on Windows", file=sys.stderr)
        return 2
    if args.command or args.shell or args.isolate:
        parser.print_usage(sys.stderr)
        print("socksify env: takes the options of a chain only (no COMMAND, --shell "
              "or --isolate); `socksify -- env ...` runs env(1)", file=sys.stderr)
        return 2
    from . import client
    from .errors import ConfigError
    from .proxies import Proxy
    from .shimlib import library_path
    try:
        for url in args.via:
            Proxy.parse(url)
    except ConfigError as exc:
        print(f"socksify env: bad --via: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("SOCKSIFY_SESSION"):
        print('socksify env: this shell is socksified already; eval "$(socksify off)" '
              "first", file=sys.stderr)
        return 1
    paths = Paths.from_env()
    try:
        if not client.is_running(paths):
            client.start_daemon(paths)
    except (client.DaemonUnavailable, client.UnsafeDaemon) as exc:
        print(f"socksify env: {exc}", file=sys.stderr)
        return 1
    shell = os.getppid()
    keeper = subprocess.Popen(
        [sys.executable, "-m", "socksify.cli", "env", KEEP, str(shell)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True)   # not in the shell's job: ^C there does not end it
    assert keeper.stdin is not None and keeper.stdout is not None
    keeper.stdin.write(json.dumps(session_request(args)).encode())
    keeper.stdin.close()
    answer = keeper.stdout.readline().decode(errors="replace").split(" ", 1)
    keeper.stdout.close()
    if answer[0] != "ok":
        keeper.wait()
        print(f"socksify env: {answer[-1].strip() or 'the session keeper failed'}",
              file=sys.stderr)
        return 2
    env = program_env(args, library_path(), paths, answer[1].strip())
    env["SOCKSIFY_KEEPER"] = str(keeper.pid)
    print(exports(os.environ, env))
    return 0


def exports(before: Any, after: dict[str, str]) -> str:
    """The shell commands that turn environment `before` into `after`."""
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(after.items())
             if before.get(k) != v]
    gone = sorted(k for k in before if k not in after)
    if gone:
        lines.append("unset " + " ".join(gone))
    return "\n".join(lines)


def off(argv: list[str]) -> int:
    """Print what turns the shell off; stop its keeper (which ends the session)."""
    if argv:
        print("socksify off: takes no arguments; use it as: eval \"$(socksify off)\"",
              file=sys.stderr)
        return 2
    from .shimlib import library_path
    keeper = os.environ.get("SOCKSIFY_KEEPER", "")
    if os.environ.get("SOCKSIFY_SESSION") and not keeper:
        # the shell itself carries the shim, which gives it back to every child
        print("socksify off: this shell runs under socksify (--shell, or socksify "
              "COMMAND) and stays socksified; `exit` leaves it", file=sys.stderr)
        return 1
    if keeper.isdigit() and not _stop_keeper(int(keeper), os.getppid()):
        print(f"socksify off: the session keeper {keeper} is not this shell's; its "
              "session ends with the shell that turned socksify on", file=sys.stderr)
    shim = str(library_path())
    preload = [p for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split()
               if p != shim]
    after = {k: v for k, v in os.environ.items() if k not in (*OUR_VARS, "LD_PRELOAD")}
    if preload:
        after["LD_PRELOAD"] = " ".join(preload)
    text = exports(os.environ, after)
    if text:
        print(text)
    return 0


def _stop_keeper(pid: int, shell: int) -> bool:
    """SIGTERM the keeper `pid` if it is ours and was started for `shell`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return True                       # gone already: its session has ended
    if owner != os.getuid() or cmdline[-5:-1] != [b"socksify.cli", b"env", KEEP.encode(),
                                                 str(shell).encode()]:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass
    return True


def _keep(shell: int, session_cls: Callable[..., Any]) -> int:
    """The keeper: open the session the request on stdin asks for, answer "ok ID" (or
    "error WHY") on stdout, then hold it until `shell` ends or a signal comes."""
    request = json.loads(sys.stdin.read())
    try:
        session = session_cls(Paths.from_env(), request, True, reattach=True)
    except Exception as exc:   # reported to `socksify env`, which says it
        print(f"error {exc}", flush=True)
        return 1
    print(f"ok {session.id}", flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    session.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        _wait_for_exit(shell, stop)
    finally:
        session.close()
    return 0


def _wait_for_exit(pid: int, stop: threading.Event) -> None:
    """Return when process `pid` has ended or `stop` is set."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        fd = -1
    try:
        while not stop.is_set():
            if fd >= 0:
                if select.select([fd], [], [], 0.5)[0]:
                    return
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                except PermissionError:
                    pass
                stop.wait(0.5)
    finally:
        if fd >= 0:
            os.close(fd)
