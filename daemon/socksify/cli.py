"""socksify: run a program so that its TCP connections leave through SOCKS proxies."""

from __future__ import annotations

import os
import sys

# typing is not imported at run time (it costs `socksify CMD` its start-up): Any is
# for the type checker only, which reads any `if TYPE_CHECKING:` block. Nor is signal,
# which builds its enums: _signal, its built-in part, has the same functions and
# numbers (the type checker knows them as signal's).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    import signal as _signal
    from types import FrameType
    from typing import Any, NoReturn
else:
    import _signal

from . import __version__, controlconn, programs, quickargs
from .cmdsession import Session, SessionRefused
from .paths import Paths, absolute_str

# What `socksify CMD` imports is its start-up time (docs/performance.md, "Start-up"):
# no asyncio (the chains package), no psutil, no rich, no argparse on a usual run, and
# no pathlib, socket, json, threading, signal, re or enum: the interpreter's built-in
# modules where it can. tests/unit/test_cli_imports.py holds the list.

USAGE = ("socksify [-c FILE] [--via URL]... [--strategy S] [--prebuilt N] "
         "[--isolate|--no-isolate] [--isolate-streams MODE] [-q|-v] [--] "
         "COMMAND [ARGS...] | --shell")
DESCRIPTION = """\
Run COMMAND so that each TCP connection it (and its children) makes leaves through a
chain of SOCKS proxies. Connections to loopback go direct; nothing else ever does
unless the policy says so. If no daemon is running, one is started."""
EPILOG = """\
examples:
  socksify --via socks5://10.0.0.5:1080 curl https://example.org/
  socksify --via socks4://10.0.0.5:1080 --via socks4a://10.1.0.7:1080 git fetch
  socksify -c ~/anon.toml -v python3 client.py
  source <(socksify completion bash)     # or zsh: shell completion

Hops are asked in order: hop 1 connects to hop 2, hop 2 to hop 3, the last to the
target. Hop URLs: socks4://[USER@]HOST:PORT, socks4a://[USER@]HOST:PORT,
socks5://[USER[:PASSWORD]@]HOST:PORT, http://[USER:PASSWORD@]HOST:PORT (HTTP
CONNECT), https://… and socks5+tls://… (the same over TLS to the proxy). Host names
are resolved by the last hop, which must then carry names: not plain SOCKS4 (or choose
--dns local).
Without --via or -c the daemon's policy file applies (socksifyd --help).
A program the shim cannot load into (static, Go, setuid) runs in its own network
namespace instead (the isolation path; --isolate forces it for any program): its TCP
connections are redirected there to the daemon, which carries them through the same
policy and chains; port 53 is answered inside; everything else is refused.
`socksify completion bash|zsh` prints a completion script (`socksify -- completion`
runs a program named completion). Manual: man socksify, socksifyd, socksify.toml.
The exit status is COMMAND's own; 2 for a usage error, 127 if COMMAND is not found,
126 if it cannot be run or socksify cannot protect it (a static, Go or setuid program
with --no-isolate, or isolation where the kernel or a missing tool does not allow it).
"""


def _parser() -> argparse.ArgumentParser:
    """The whole command line: help, version, errors, completion. (A run reads its
    command line with quickargs when it can: argparse is not imported then.)"""
    import argparse
    p = argparse.ArgumentParser(prog="socksify", usage=USAGE, description=DESCRIPTION,
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"socksify {__version__}")
    p.add_argument("--via", action="append", default=[], metavar="URL",
                   help="a hop of an ad-hoc chain; repeat in order (no config needed)")
    p.add_argument("--strategy", choices=quickargs.STRATEGIES, default="strict",
                   help="how --via hops are used: strict (all, in order; default), "
                   "dynamic (skip dead hops), random, round_robin")
    p.add_argument("--timeout", type=quickargs.seconds, default=5.0, metavar="SECONDS",
                   help="for --via: seconds to connect to hop 1 and for each hop's "
                   "reply (default 5)")
    p.add_argument("--dns", choices=["remote", "local", "block"], default="remote",
                   help="for --via: how host names are resolved: by the last hop "
                   "(remote, default; needs a socks4a:// or socks5:// last hop), here "
                   "before the chain (local: the lookup leaves this machine), or not "
                   "at all (block)")
    p.add_argument("--data-path", choices=["handoff", "relay"], default="handoff",
                   help="for --via: after the chain is built, the program's own socket "
                   "carries the bytes kernel to kernel (handoff, default), or the "
                   "daemon copies them (relay: byte counts in `socksifyd connections`)")
    p.add_argument("--prebuilt", type=int, default=0, metavar="N",
                   help="for --via with --strategy strict: keep N tunnels built up to "
                   "the last hop, so a connect costs one SOCKS exchange (default 0: "
                   "no idle connections to the proxies)")
    p.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                   help="for --via: send every hop's request at once, then check the "
                   "replies in order (default); --no-pipeline asks each hop once the "
                   "one before it has replied")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="policy file for this command (default: the daemon's policy)")
    p.add_argument("--chain", metavar="NAME",
                   help="send everything through the policy's chain NAME")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true",
                      help="print one line per connection: app, hops, target, result")
    loud.add_argument("-q", "--quiet", action="store_true",
                      help="print nothing but errors that stop socksify itself")
    p.add_argument("--allow-unprotected", action="store_true",
                   help="run COMMAND even if the shim cannot load into it (statically "
                   "linked, Go, setuid, another architecture), and let it start such "
                   "programs: their connections will NOT be socksified")
    p.add_argument("--proxy-loopback", action="store_true",
                   help="send connections to loopback addresses through the policy "
                   "too (normally they go direct): to try a chain of local proxies on "
                   "one machine")
    isolation = p.add_mutually_exclusive_group()
    isolation.add_argument(
        "--isolate", action="store_true",
        help="run COMMAND in its own network namespace whose only way out is the "
        "daemon (nft rules redirect its TCP there), even if the shim could load into "
        "it; the default for static, Go and setuid programs. Unprivileged where the "
        "kernel allows user namespaces; refuses (exit 126) where it does not")
    isolation.add_argument(
        "--no-isolate", action="store_true",
        help="never use the isolation path: refuse (exit 126) a program the shim "
        "cannot load into")
    p.add_argument("--shell", action="store_true",
                   help="start your shell ($SHELL) socksified, its prompt marked "
                   "\"(socksify) \"; `exit` returns to this one. (`eval \"$(socksify "
                   "env [OPTIONS])\"` and `eval \"$(socksify off)\"` turn the current "
                   "shell on and off)")
    p.add_argument("--isolate-streams", choices=list(quickargs.ISOLATE_MODES),
                   metavar="MODE",
                   help="for --via or --chain: give SOCKS5 hops a user name and "
                   "password derived per app, process or connection (none | app | "
                   "process | connection), so a Tor SOCKS port puts each on its own "
                   "circuit (not --isolate, which is about network namespaces)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]")
    return p


def run() -> NoReturn:
    """The `socksify` command (pyproject's entry point): main(), then out without
    the interpreter's finalization, which tore down every imported module for
    nothing: 12% of the whole command's instructions (callgrind, docs/performance.md
    "Start-up"). What it wrote is flushed first; its only thread is a daemon thread,
    which finalization would not have waited for either. An exception (SystemExit
    from argparse included) leaves the usual way."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):     # a closed pipe or stream: as exit would
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["completion"]:     # `socksify -- completion` runs a program so named
        from . import completion
        return completion.main(argv[1:], _parser())
    if argv[:1] == ["import-proxychains"]:
        from . import proxychains
        return proxychains.main(argv[1:])
    if argv[:1] in (["env"], ["off"]):  # likewise `socksify -- env` runs env(1)
        from . import shellenv
        return shellenv.main(argv[0], argv[1:], _parser(), program_env,
                             _session_request, Session)
    args: Any = quickargs.parse(argv)
    if args is None:   # help, version, a usage error, anything unusual: argparse's
        args = _parser().parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.shell:
        if sys.platform == "win32":
            print("socksify: --shell needs LD_PRELOAD; not on Windows", file=sys.stderr)
            return 2
        if command:
            _parser().print_usage(sys.stderr)
            print("socksify: --shell starts your shell; it takes no COMMAND",
                  file=sys.stderr)
            return 2
        from . import shellmode
        command = [shellmode.user_shell()]
    if not command:
        _parser().print_usage(sys.stderr)
        print("socksify: missing COMMAND (e.g. socksify --via socks4://HOST:PORT "
              "curl URL)", file=sys.stderr)
        return 2
    if args.via and (args.config is not None or args.chain):
        _parser().print_usage(sys.stderr)
        print("socksify: --via gives a whole chain; it does not mix with -c or --chain",
              file=sys.stderr)
        return 2
    # A bad --via is a usage error (2), found before any daemon is started. A running
    # daemon checks the URLs itself, so they are parsed here (proxies.py: dataclasses,
    # inspect) only when it refuses the session or none answers; on Windows at once.
    if sys.platform == "win32" and args.via and (bad := _bad_via(args.via)):
        return _usage_error(f"bad --via: {bad}")
    if sys.platform == "win32":  # DLL injection instead of LD_PRELOAD
        from . import winlaunch
        return winlaunch.main(args, command, _session_request(args))
    from .shimpath import library_file
    shim = library_file()
    if not os.path.isfile(shim):
        print(f"socksify: the shim library {shim} is missing; reinstall socksify "
              "(pip install needs a C compiler)", file=sys.stderr)
        return 1
    if not args.allow_unprotected and not args.isolate:
        try:
            programs.check(command[0], shim)
        except programs.Unprotectable as exc:
            if args.no_isolate:
                print(f"socksify: refusing to run {command[0]}: {exc}.\n"
                      "socksify: pass --allow-unprotected to run it anyway, "
                      "unprotected.", file=sys.stderr)
                return 126
            args.isolate = True     # the isolation path carries it
            if args.verbose:
                print(f"socksify: {exc}: running it in an isolated network namespace "
                      "whose only way out is the daemon", file=sys.stderr)
    paths = Paths.from_env()
    try:
        session = _open_session(paths, args)
    except controlconn.DaemonUnavailable as exc:
        print(f"socksify: {exc}", file=sys.stderr)
        return 1
    except controlconn.UnsafeDaemon as exc:
        print(f"socksify: {exc}; not running {command[0]}", file=sys.stderr)
        return 1
    except BadVia as exc:
        return _usage_error(f"bad --via: {exc}")
    except SessionRefused as exc:
        if args.via and (bad := _bad_via(args.via)):
            return _usage_error(f"bad --via: {bad}")
        print(f"socksify: {exc}", file=sys.stderr)
        return 2
    bridge = None
    if args.isolate:  # before any thread: unshare(CLONE_NEWUSER) needs a single thread
        from .isolation import launch
        try:
            bridge = launch.isolate(paths, session.id)
        except launch.IsolationUnavailable as exc:
            print(f"socksify: cannot isolate {command[0]}, not running it: {exc}",
                  file=sys.stderr)
            session.close()
            return 126
        session.reattached = lambda: _hand_over_again(bridge, paths)
    env = program_env(args, shim, paths, session.id)
    if args.shell:
        from . import shellmode
        command, shell_env, cleanup = shellmode.shell_command(command[0])
        env.update(shell_env)
    session.start()
    try:
        return _run(command, env)
    finally:
        if args.shell:
            cleanup()
        if bridge is not None:   # first: its last connections need the session
            bridge.close()
        session.close()


def program_env(args: argparse.Namespace, shim: str | os.PathLike[str], paths: Paths,
                session_id: str) -> dict[str, str]:
    """The environment a socksified program runs in: this one, with the shim preloaded
    and told where the daemon and its session are."""
    env = dict(os.environ)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{os.fspath(shim)} {preload}".strip()
    env["SOCKSIFY_SOCKET"] = absolute_str(paths.socket_str)
    env["SOCKSIFY_SESSION"] = session_id
    env["SOCKSIFY_LOG"] = "0" if args.quiet else env.get("SOCKSIFY_LOG", "1")
    # The shim then lets children it cannot load into run too: unprotected with
    # --allow-unprotected; harmless in isolation, where they cannot get out.
    for name, wanted in (("SOCKSIFY_ALLOW_UNPROTECTED",
                          args.allow_unprotected or args.isolate),
                         ("SOCKSIFY_PROXY_LOOPBACK", args.proxy_loopback)):
        if wanted:
            env[name] = "1"
        else:
            env.pop(name, None)
    return env


class BadVia(ValueError):
    """A --via URL that does not parse (found before a daemon would be started)."""


def _bad_via(urls: list[str]) -> str | None:
    """Why the first bad --via URL is bad, or None."""
    from .errors import ConfigError
    from .proxies import Proxy
    try:
        for url in urls:
            Proxy.parse(url)
    except ConfigError as exc:
        return str(exc)
    return None


def _hand_over_again(bridge: Any, paths: Paths) -> str | None:
    """After a daemon restart: the isolated namespace's sockets to the new daemon
    (until then its connections were refused). None, or why it failed."""
    from .isolation import launch
    try:
        launch.hand_over(bridge, paths)
    except launch.IsolationUnavailable as exc:
        return str(exc)
    return None


def _usage_error(text: str) -> int:
    _parser().print_usage(sys.stderr)
    print(f"socksify: {text}", file=sys.stderr)
    return 2


def _open_session(paths: Paths, args: Any) -> Session:
    """The session, asked for straight away: one exchange with a running daemon (no
    status request first). Only when no daemon answers is one started."""
    request = _session_request(args)
    try:
        return Session(paths, request, args.quiet, reattach=True)
    except controlconn.DaemonUnavailable:
        pass
    if args.via and (bad := _bad_via(args.via)):
        raise BadVia(bad)
    from . import client      # (socket, json, subprocess: only to start a daemon)
    pid = client.start_daemon(paths)
    if args.verbose:
        print(f"socksify: started socksifyd (pid {pid}), log {paths.logfile}",
              file=sys.stderr)
    return Session(paths, request, args.quiet, reattach=True)


def _session_request(args: Any) -> dict[str, Any]:
    """The session request from the command line (quickargs' or argparse's values)."""
    return {
        "op": "session",
        "via": args.via,
        "strategy": args.strategy,
        "timeout": args.timeout,
        "dns": args.dns,
        "data_path": args.data_path,
        "prebuilt": args.prebuilt,
        "pipeline": args.pipeline,
        "config": None if args.config is None else absolute_str(args.config),
        "chain": args.chain,
        "verbose": bool(args.verbose),
        "quiet": bool(args.quiet),      # prints nothing: no event lines to send it
        "isolate": bool(args.isolate),
        "isolate_streams": args.isolate_streams,
    }


def _run(command: list[str], env: dict[str, str]) -> int:
    try:
        pid = _spawn(command, env)
    except FileNotFoundError:
        print(f"socksify: {command[0]}: command not found", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"socksify: {command[0]}: permission denied", file=sys.stderr)
        return 126

    def forward(signum: int, _frame: FrameType | None) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGINT):
        _signal.signal(sig, forward)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _spawn(command: list[str], env: dict[str, str]) -> int:
    """Start COMMAND as subprocess.Popen(command, env=env) would (no descriptor but
    0-2 inherited, SIGPIPE and SIGXFSZ back to their defaults), with posix_spawnp:
    importing subprocess was 6% of the whole command's instructions (callgrind,
    docs/performance.md "Start-up"). glibc's posix_spawn leaves its own two
    internal signals (32, 33) ignored in the child, as for every program it starts;
    glibc and musl programs set them up themselves."""
    # (Windows never comes here: winlaunch starts the program there, injected.)
    closes = []
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                closes.append((os.POSIX_SPAWN_CLOSE, fd))
        except OSError:                          # the listing's own descriptor
            pass
    return os.posix_spawnp(command[0], command, env, file_actions=closes,
                           setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))


if __name__ == "__main__":
    run()
