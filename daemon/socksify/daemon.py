"""socksifyd: the per-user daemon. It owns the control socket, the relay listeners,
the policy, shared hop health and the table of live connections; it starts, serves,
reloads on SIGHUP and stops gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import itertools
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from . import __version__, control, socktable, tcpcontrol
from .admission import BurstLog, Gate, Ticket
from .chains import (ChainSpec, Handed, HandoffImpossible, HopHealth, Selector,
                    Strategy, Tunnel, TunnelPool, hand_direct, hand_tunnel, open_direct, open_tunnel)
from .dns import Exhausted, FakeNames, StandIn, hosts_file_names, normalize
from .errors import ConfigError, PolicyBlocked, SocksifyError
from .fdpass import recv_with_fds
from .frontdoor import FrontDoor
from .generation import GenerationFile
from .paths import Paths, config_candidates
from .policy import Action, Policy

from .printable import printable
from .procinfo import AppInfo, ProcessTable, own_uid, peer_credentials
from .protocol import control as wire
from .proxies import Proxy
from .relay import Counters, relay, relay_sockets
from .sockstream import recv_exactly, within

log = logging.getLogger("socksify.daemon")

TOKEN_TTL = 10.0         # seconds a relayed tunnel waits for its program to attach
TOKEN_WAIT = 3.0         # seconds a relay connection may take to send its token
_ACCEPT_ERRORS = BurstLog(log)   # EMFILE on accept: one line per burst, not per retry
PEERNAME_WAIT = 2.0      # seconds a PEERNAME may wait for its relay to be attached
HANDOFF_TIMEOUT = 10.0   # for socksify --isolate to pass its relay listeners


class AlreadyRunning(RuntimeError):
    pass


@dataclass
class Session:
    id: bytes
    policy: Policy | None          # None: whatever the daemon's policy is right now
    writer: asyncio.StreamWriter   # the socksify command's control connection
    verbose: bool                  # send it one event line per connection
    owner: int                     # pid of the socksify command
    uid: int                       # its user: only that user's programs may use it
    selectors: dict[str, Selector] = field(default_factory=dict)
    isolated: bool = False         # socksify --isolate: the program has no way out but
    #                                the relay, so "direct" is carried by the daemon too


@dataclass
class Connection:
    id: str
    app: AppInfo
    dst: wire.IPAddress | None     # None: only a host name is known (front door)
    port: int
    started: float
    host: str | None = None        # the name behind a stand-in address, or asked for
    rule: str = ""                 # label of the rule that decided
    chain: str = ""                # chain name, for chain actions
    route: str = ""                # the hops actually used
    counters: Counters = field(default_factory=Counters)
    session: Session | None = None
    stand_in: StandIn | None = None  # the stand-in address it was made to, if any

    @property
    def target(self) -> str:
        """The destination as the program named it: the host name when there is one."""
        if self.host or self.dst is None:
            return f"{self.host}:{self.port}"
        return _endpoint(self.dst, self.port)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "app": self.app.name, "pid": self.app.pid,
                "user": self.app.user, "uid": self.app.uid,
                "target": _endpoint(self.dst, self.port) if self.dst else self.target,
                "host": self.host, "rule": self.rule, "chain": self.chain,
                "route": self.route, "up": self.counters.up,
                "down": self.counters.down,
                "age": round(time.monotonic() - self.started, 1)}


class Daemon:
    def __init__(self, paths: Paths, policy_path: Path | None = None,
                 grace: float = 5.0, socks_listen: tuple[str, int] | None = None) -> None:
        self.paths = paths
        self.socks_listen = socks_listen   # --socks: overrides [frontdoor] listen
        self.frontdoor: FrontDoor | None = None
        self.policy_path = policy_path
        self.grace = grace
        self.health = HopHealth()
        self.procs = ProcessTable()
        self.fake = FakeNames()
        self.hosts_names = hosts_file_names()
        self.connections_total = 0
        self.policy: Policy | None = None
        self.sessions: dict[bytes, Session] = {}
        self.pending: dict[bytes, tuple[Connection, Tunnel, asyncio.TimerHandle]] = {}
        self.live: dict[str, Connection] = {}
        # relay connections by the app side's address, for PEERNAME
        self.by_app_end: dict[tuple[wire.IPAddress, int], Connection] = {}
        self._selectors: dict[str, Selector] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.control_tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._stop = asyncio.Event()
        self._started = time.time()
        self._servers: list[asyncio.AbstractServer] = []
        self.relay_port4 = 0
        self.relay_port6 = 0
        self._relay_unix: socket.socket | None = None   # relay.sock (--isolate)
        self._handoffs: set[asyncio.Task[None]] = set()
        self._pid_fd: int | None = None
        self._control: socket.socket | None = None
        self._relays: list[_RelayListener] = []
        self._accepting: asyncio.Task[None] | None = None
        self.generation = GenerationFile(paths.generation_file)
        self.handed_off = 0           # connections carried by the kernel (handoff)
        self._attached = asyncio.Event()   # a relay connection was attached
        # caps on connections not yet proven (relay before its token, front door
        # before its request), sized from the open-file limit in run()
        self.gate = Gate(own_uid())
        self.burst = BurstLog(log)

    # ----- lifecycle -------------------------------------------------------------
    async def run(self) -> None:
        _raise_fd_limit()
        self.gate = Gate(own_uid())
        self._lock_pidfile()
        try:
            self.policy = self._load_policy()
            self._dns_ranges()
            await self._listen()
            tcp, key = await tcpcontrol.listen(self)  # Windows programs
            self._servers += tcp
            await self._frontdoor()
            self._signals()
            if tcp:   # named only once every listener is up (a failed start names none)
                tcpcontrol.publish(self.paths, tcp[0], key)
            log.info("socksifyd %s ready: pid %d, control %s, relay 127.0.0.1:%d%s, "
                     "policy %s", __version__, os.getpid(), self._control_where(),
                     self.relay_port4,
                     f" and [::1]:{self.relay_port6}" if self.relay_port6 else "",
                     self.policy.source if self.policy else "none (sessions only)")
            await self._stop.wait()
            await self._shutdown()
        finally:
            tcpcontrol.forget(self.paths)   # also after a failed start: no stale file
            self._release_pidfile()

    def stop(self) -> None:
        self._stop.set()

    def _signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads. Windows has neither SIGTERM nor SIGHUP
        for a detached process: Ctrl+C/Ctrl+Break stop a daemon run in a console, and
        `socksifyd stop`/`reload` ask over the control listener."""
        loop = asyncio.get_running_loop()
        if sys.platform != "win32":
            loop.add_signal_handler(signal.SIGTERM, self._stop.set)
            loop.add_signal_handler(signal.SIGINT, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self._reload_from_signal)
            return
        for name in ("SIGINT", "SIGBREAK"):
            signal.signal(getattr(signal, name),
                          lambda *_: loop.call_soon_threadsafe(self._stop.set))

    def _control_where(self) -> str:
        if sys.platform == "win32":
            return str(tcpcontrol.file_path(self.paths))
        return str(self.paths.socket)

    async def _listen(self) -> None:
        self.paths.ensure_dirs()
        if sys.platform != "win32":   # Windows: the TCP control listener only
            self._listen_unix()
        self.generation.publish()
        relay4 = _RelayListener.bind(socket.AF_INET, "127.0.0.1", self._relay_accepted)
        self._relays.append(relay4)
        self.relay_port4 = relay4.port
        try:
            relay6 = _RelayListener.bind(socket.AF_INET6, "::1", self._relay_accepted)
        except OSError:
            log.info("no IPv6 loopback: IPv6 sockets relay through ::ffff:127.0.0.1")
        else:
            self._relays.append(relay6)
            self.relay_port6 = relay6.port

    def _listen_unix(self) -> None:
        """The Unix control socket (shims, command line tools) and relay.sock."""
        try:
            self.paths.socket.unlink()  # stale: the pidfile lock says nobody owns it
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.paths.socket))
        listener.listen(512)
        listener.setblocking(False)
        self._control = listener
        self._accepting = asyncio.ensure_future(self._accept_control(listener))
        self._listen_relay_unix()
        self._socket_permissions()

    async def _accept_control(self, listener: socket.socket) -> None:
        """Accept control connections; each is served by control.serve, which reads
        the first bytes with any descriptor attached (HANDOFF). On root's shared
        socket, connections of uids it does not serve (answered with a refusal once
        their request is read) wait under the admission caps, so they cannot use up
        the descriptors its users need."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:     # EMFILE and friends: let the others finish
                _ACCEPT_ERRORS.warn("control", f"control socket accept failed: {exc}")
                await asyncio.sleep(0.1)
                continue
            try:
                uid = peer_credentials(conn)[1]
            except OSError:
                conn.close()
                continue
            if self.allows(uid):
                asyncio.ensure_future(control.serve(self, conn))
            else:
                ticket = self.gate.admit(uid)
                if ticket is None:
                    self.burst.warn(("control-cap", uid), f"control: closed connections "
                                    f"from uid {uid}, which this daemon does not serve: "
                                    f"too many waiting ({self.gate.total} waiting)")
                    conn.close()
                else:
                    asyncio.ensure_future(self._serve_refused(conn, ticket))
            await asyncio.sleep(0)     # a steady flood must not starve the others

    async def _serve_refused(self, conn: socket.socket, ticket: Ticket) -> None:
        try:
            await control.serve(self, conn)
        finally:
            ticket.release()

    def _listen_relay_unix(self) -> None:
        """relay.sock beside the control socket, for `socksify --isolate`: the
        program's network namespace cannot reach the loopback listeners above, so
        socksify binds the same relay ports inside it and hands the listening sockets
        over here; they are served like our own (_relay_accept) until socksify closes
        this connection."""
        path = self.paths.relay_socket
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(64)
        sock.setblocking(False)
        self._relay_unix = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._relay_unix_ready)

    def _relay_unix_ready(self) -> None:
        assert self._relay_unix is not None
        while True:
            try:
                conn, _ = self._relay_unix.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("relay socket accept failed: %s", exc)
                return
            task = asyncio.ensure_future(self._relay_listeners(conn))
            self._handoffs.add(task)
            task.add_done_callback(self._handoffs.discard)

    async def _relay_listeners(self, conn: socket.socket) -> None:
        """Serve the listening TCP sockets a socksify --isolate of an allowed uid
        passed on conn, until conn ends."""
        loop = asyncio.get_running_loop()
        servers: list[_RelayListener] = []
        try:
            conn.setblocking(False)
            pid, uid = peer_credentials(conn)
            if not self.allows(uid):
                log.warning("relay socket: refused uid %d (pid %d)", uid, pid)
                return
            listeners = _sockets((await recv_with_fds(conn, 16, 4, HANDOFF_TIMEOUT))[1])
            try:
                for s in listeners:
                    if s.family not in (socket.AF_INET, socket.AF_INET6) or \
                            s.type != socket.SOCK_STREAM or \
                            not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                        log.warning("relay socket: pid %d passed something else than a "
                                    "listening TCP socket; refused", pid)
                        return
                for s in listeners:
                    # connections there come from the isolated program's own
                    # network namespace: they count as the uid that passed it
                    servers.append(_RelayListener(s, functools.partial(
                        self._relay_accepted, owner=uid)))
            finally:
                if len(servers) < len(listeners):
                    for s in listeners:
                        s.close()
            if not servers:
                return
            log.info("relay listeners of isolated pid %d: %s", pid, ", ".join(
                _endpoint(ipaddress.ip_address(s.getsockname()[0]), s.getsockname()[1])
                for s in listeners))
            await loop.sock_sendall(conn, b"L")
            while await loop.sock_recv(conn, 64):
                pass   # socksify says nothing more; EOF: its command has ended
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            log.debug("relay socket: %r", exc)
        finally:
            for server in servers:
                server.close()
            conn.close()

    async def _shutdown(self) -> None:
        log.info("stopping: %d live connection(s), up to %.0fs to finish",
                 len(self.live), self.grace)
        for server in self._servers:
            server.close()
        for listener in self._relays:
            listener.close()
        self._relays.clear()
        self.generation.withdraw()
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        if self._control is not None:
            self._control.close()
            self._control = None
        for selector in self._all_selectors():
            if selector.pool is not None:
                selector.pool.close()
        if self._relay_unix is not None:
            asyncio.get_running_loop().remove_reader(self._relay_unix.fileno())
            self._relay_unix.close()
            self._relay_unix = None
        for task in list(self._handoffs):
            task.cancel()
        if self.frontdoor is not None:
            self.frontdoor.close()
        for _conn, tunnel, timer in self.pending.values():
            timer.cancel()
            tunnel.close()
        self.pending.clear()
        if self._tasks:
            _, still = await asyncio.wait(set(self._tasks), timeout=self.grace)
            for task in still:
                task.cancel()
            if still:
                log.warning("cancelled %d connection(s) still open after %.0fs",
                            len(still), self.grace)
                await asyncio.gather(*still, return_exceptions=True)
        for session in list(self.sessions.values()):
            session.writer.close()  # its handler sees EOF and ends the session
        if self.control_tasks:
            await asyncio.wait(set(self.control_tasks), timeout=1.0)
        for path in (self.paths.socket, self.paths.relay_socket):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        tcpcontrol.forget(self.paths)
        log.info("stopped")

    async def _frontdoor(self) -> None:
        """(Re)open the SOCKS front door where --socks or the policy says; close it
        when neither does."""
        policy = self.policy
        where = self.socks_listen or (policy.frontdoor if policy else None)
        users = dict(policy.frontdoor_users) if policy else {}
        door = self.frontdoor
        if door is not None and where == (door.host, door.requested_port) \
                and users == door.users:
            return
        if door is not None:
            door.close()
            self.frontdoor = None
        if where is not None:
            door = FrontDoor(self, where[0], where[1], users)
            await door.start()
            self.frontdoor = door

    def _dns_ranges(self) -> None:
        """Stand-in addresses come from the daemon policy's [dns] ranges; a change of
        ranges starts a new table, a change of max_names or min_age applies to the
        table in place."""
        if self.policy is None:
            return
        p = self.policy
        if (str(self.fake.nets[4]), str(self.fake.nets[6])) != (p.dns_range4,
                                                                p.dns_range6):
            self.fake = FakeNames(p.dns_range4, p.dns_range6, p.dns_max_names,
                                  p.dns_min_age)
        else:
            self.fake.configure(p.dns_max_names, p.dns_min_age)

    def _socket_permissions(self) -> None:
        """0700 directory and 0600 socket: only this user reaches the daemon. A root
        daemon whose policy lists allow_users opens both to everyone, and then the
        peer-uid check in allows() is the gate."""
        shared = os.getuid() == 0 and self.policy is not None and \
            bool(self.policy.allow_users)
        os.chmod(self.paths.socket, 0o666 if shared else 0o600)
        if self._relay_unix is not None:
            os.chmod(self.paths.relay_socket, 0o666 if shared else 0o600)
        os.chmod(self.paths.socket.parent, 0o711 if shared else 0o700)

    def allows(self, uid: int) -> bool:
        """May a process of this uid use the daemon? Its own user always; others only
        for a root daemon whose policy names them in [daemon] allow_users."""
        if uid == own_uid():
            return True
        if own_uid() != 0 or self.policy is None or sys.platform == "win32":
            return False   # (Windows: own_uid() is 0 for the daemon's user alone)
        allowed = self.policy.allow_users
        if uid in allowed:
            return True
        try:
            import pwd
            return pwd.getpwuid(uid).pw_name in allowed
        except KeyError:
            return False

    def _lock_pidfile(self) -> None:
        """Hold an exclusive lock on the pidfile for the daemon's life: a second daemon
        for the same runtime dir fails here, and a stale file from a crash is reused."""
        self.paths.ensure_dirs()
        # ensure_dirs checked the directory is ours alone; O_NOFOLLOW all the same,
        # so a symlink left there can never make the daemon truncate another file
        fd = os.open(self.paths.pidfile, os.O_RDWR | os.O_CREAT
                     | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NOINHERIT", 0), 0o600)
        try:
            _lock(fd)
        except OSError:
            owner = printable(os.read(fd, 32).decode(errors="replace").strip() or "?")
            os.close(fd)
            raise AlreadyRunning(f"socksifyd is already running (pid {owner}, "
                                 f"pidfile {self.paths.pidfile})") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._pid_fd = fd

    def _release_pidfile(self) -> None:
        if self._pid_fd is None:
            return
        try:
            ours = self.paths.pidfile.read_text().strip() == str(os.getpid())
        except OSError:
            ours = False
        if sys.platform == "win32":   # an open file cannot be removed there
            os.close(self._pid_fd)
            self._pid_fd = None
        if ours:
            try:
                self.paths.pidfile.unlink()
            except OSError:
                pass
        if self._pid_fd is not None:
            os.close(self._pid_fd)
            self._pid_fd = None

    # ----- policy ----------------------------------------------------------------
    def _load_policy(self) -> Policy | None:
        if self.policy_path is not None:
            return Policy.load(self.policy_path)
        env_path = os.environ.get("SOCKSIFY_CONFIG")
        if env_path:
            return Policy.load(Path(env_path))
        for candidate in config_candidates():
            if candidate.is_file():
                return Policy.load(candidate)
        return None

    def reload(self) -> str:
        """Re-read the policy; new connections follow it, live ones go on. A broken
        file raises ConfigError (logged here, whoever asked) and the old policy
        stays."""
        try:
            policy = self._load_policy()
        except ConfigError as exc:
            log.error("reload failed, keeping the old policy: %s", exc)
            raise
        self.policy = policy
        self._close_pools(self._selectors.values())
        self._selectors.clear()
        if self._control is not None:
            self.generation.publish()     # every shim's cached DIRECT answer is void
        self._dns_ranges()
        self.hosts_names = hosts_file_names()
        if self._servers:
            self._socket_permissions()
        source = policy.source if policy else "none"
        log.info("policy reloaded from %s (%d rules)", source,
                 len(policy.rules) if policy else 0)
        for warning in policy.warnings if policy else ():
            log.warning("%s", warning)
        return source

    def _reload_from_signal(self) -> None:
        try:
            self.reload()
        except ConfigError:
            return
        asyncio.ensure_future(self.reopen_frontdoor())

    async def reopen_frontdoor(self) -> None:
        try:
            await self._frontdoor()
        except OSError as exc:
            log.error("cannot open the SOCKS front door: %s", exc)

    # ----- sessions (one per `socksify` command) -----------------------------------
    def open_session(self, msg: dict[str, Any], writer: asyncio.StreamWriter,
                     owner: int, uid: int) -> Session:
        policy: Policy | None
        if msg.get("via"):
            hops = tuple(Proxy.parse(str(u)) for u in msg["via"])
            strategy = Strategy(msg.get("strategy") or "strict")
            timeout = float(msg.get("timeout") or 5.0)
            try:
                spec = ChainSpec("via", hops, strategy, None, timeout, timeout,
                                 str(msg.get("dns") or "remote"),
                                 str(msg.get("data_path") or "handoff"),
                                 int(msg.get("prebuilt") or 0))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if spec.prebuilt and strategy is not Strategy.STRICT:
                raise ConfigError("--prebuilt needs a fixed route: --strategy strict")
            policy = Policy.single_chain(spec)
        else:
            if msg.get("config") and uid != own_uid():
                # A root daemon serving other users must not read files for them.
                raise ConfigError("only the daemon's own user may name a policy file; "
                                  "use --via, or the daemon's policy")
            policy = Policy.load(Path(str(msg["config"]))) if msg.get("config") \
                else self.policy
            if policy is None:
                raise ConfigError(
                    "no chain: pass --via socks4://HOST:PORT, or -c FILE, or write a "
                    "policy file", hint="looked for " + ", ".join(
                        str(c) for c in config_candidates()))
            if msg.get("chain"):
                name = str(msg["chain"])
                if name not in policy.chains:
                    raise ConfigError(f"no chain {name!r} in {policy.source}", hint=(
                        f"chains defined: {', '.join(sorted(policy.chains)) or 'none'}"))
                policy = Policy.single_chain(policy.chains[name],
                                             f"chain {name} of {policy.source}")
        own = None if policy is self.policy else policy  # follow reloads
        session = Session(self._session_id(msg.get("session")), own, writer,
                          bool(msg.get("verbose")), owner, uid,
                          isolated=bool(msg.get("isolate")))
        self.sessions[session.id] = session
        log.info("session %s opened by pid %d: %s", session.id.hex(), owner,
                 policy.source)
        return session

    def _session_id(self, wanted: Any) -> bytes:
        """A new session's id: the one a socksify command asks for when it re-attaches
        after a daemon restart (so its running programs keep working), if it is well
        formed and free; else a fresh random one."""
        if isinstance(wanted, str) and len(wanted) == 2 * wire.SESSION_SIZE:
            try:
                sid = bytes.fromhex(wanted)
            except ValueError:
                sid = b""
            if sid and sid != bytes(wire.SESSION_SIZE) and sid not in self.sessions:
                return sid
        return secrets.token_bytes(wire.SESSION_SIZE)

    def session_source(self, session: Session) -> str:
        policy = session.policy or self.policy
        return policy.source if policy else "none"

    def close_session(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self._close_pools(session.selectors.values())
        log.info("session %s closed", session.id.hex())

    # ----- connections -----------------------------------------------------------
    def _policy_for(self, session_id: bytes,
                    uid: int) -> tuple[Session | None, Policy | None, str]:
        """The session and policy a request from uid falls under, or why none."""
        session = None
        if session_id != bytes(wire.SESSION_SIZE):
            session = self.sessions.get(session_id)
            if session is None or session.uid != uid:
                return None, None, "unknown session (its socksify command has ended)"
        policy = session.policy if session and session.policy else self.policy
        if policy is None:
            return session, None, ("no policy: this daemon has no policy file and the "
                                   "program was not started by socksify")
        return session, policy, ""

    def resolve(self, request: wire.ResolveRequest, pid: int, uid: int) -> bytes:
        """RESOLVE: may the program look this name up itself, or does it get a
        stand-in address so that the last hop resolves it?"""
        app = self.procs.identify(pid, uid)
        name = normalize(request.name)
        session, policy, why = self._policy_for(request.session, uid)
        if policy is None:
            log.info("%s: lookup of %s refused: %s", app, name, why)
            return wire.Reply.fail(errno.EACCES).dumps()
        if name in self.hosts_names:
            return wire.Reply(wire.Verdict.DIRECT).dumps()
        decision = policy.decide_name(app, name)
        if decision.verdict == "local":
            log.debug("%s: lookup of %s resolves locally [%s]", app, name, decision.rule)
            return wire.Reply(wire.Verdict.DIRECT).dumps()
        if decision.verdict == "block":
            text = f"{app} lookup of {name} refused: {decision.why}"
            log.warning("%s [%s]", text, decision.rule)
            self._notify(session, {"event": "lookup", "ok": False, "text": text})
            return wire.Reply.fail(errno.EACCES).dumps()
        try:
            addr = self.fake.address_for(name, 6 if request.family == 6 else 4, uid)
        except Exhausted as exc:
            text = f"{app} lookup of {name} refused: {exc}"
            log.warning("%s", text)
            self._notify(session, {"event": "lookup", "ok": False, "text": text})
            return wire.Reply.fail(errno.ETIMEDOUT).dumps()   # EAI_AGAIN: try later
        log.debug("%s: lookup of %s -> stand-in %s [%s]", app, name, addr, decision.rule)
        return wire.PeerReply(addr, 0).dumps()

    def name_of(self, request: wire.ConnectRequest, pid: int, uid: int) -> bytes:
        """NAMEOF: what is this address called? A stand-in address this daemon handed
        out is the name it stands for; a loopback address, or one the policy sends
        direct on every port, may be looked up locally (DIRECT); anything else (proxied
        or blocked) must not be, since the reverse query would name the destination to
        the local resolver (FAIL: the program gets the numeric form)."""
        addr = request.addr
        if self.fake.is_fake(addr):
            name = self.fake.name_for(addr, uid)
            if name is not None:
                return wire.NameReply(name).dumps()
            log.debug("reverse lookup of %s refused: a stand-in address this daemon "
                      "never handed out to uid %d", addr, uid)
            return wire.Reply(wire.Verdict.FAIL).dumps()
        if addr.is_loopback:
            return wire.Reply(wire.Verdict.DIRECT).dumps()
        app = self.procs.identify(pid, uid)
        _, policy, why = self._policy_for(request.session, uid)
        if policy is None:
            log.debug("%s: reverse lookup of %s refused: %s", app, addr, why)
            return wire.Reply(wire.Verdict.FAIL).dumps()
        decision = policy.decide_address(app, addr)
        if decision.action.kind == "direct":
            log.debug("%s: reverse lookup of %s resolves locally [%s]", app, addr,
                      decision.rule)
            return wire.Reply(wire.Verdict.DIRECT).dumps()
        log.debug("%s: reverse lookup of %s refused: %s [%s]", app, addr,
                  decision.action, decision.rule)
        return wire.Reply(wire.Verdict.FAIL).dumps()

    async def connect(self, request: wire.ConnectRequest, pid: int, uid: int,
                      app_sock: socket.socket | None = None
                      ) -> tuple[wire.Reply, socket.socket | None]:
        """A shim's CONNECT or HANDOFF: decide how the connection leaves and, for a
        chain, build it now. With the program's socket (HANDOFF, `app_sock`), the
        chain is built on it (READY) or a pre-built tunnel is finished and returned to
        be put in its place (SWAP, the socket to send back); else, or when the chain
        says relay, the program attaches to the relay with the token (RELAY)."""
        conn = self.new_connection(self.procs.identify(pid, uid), request.addr,
                                   request.port)
        session, policy, why = self._policy_for(request.session, uid)
        conn.session = session
        if policy is None:
            return self._refuse(conn, errno.EACCES, why), None
        if self.fake.is_fake(request.addr):
            conn.stand_in = self.fake.use(request.addr, uid)
            if conn.stand_in is None:
                return self._refuse(conn, errno.EHOSTUNREACH, "a stand-in address this "
                                    "daemon never handed out to this user (was it "
                                    "restarted?)"), None
            conn.host = conn.stand_in.name
        if request.socktype is wire.SockType.DGRAM:
            decision = policy.decide(conn.app, request.addr, request.port, conn.host)
            conn.rule = decision.rule
            if decision.udp_direct and conn.host is None:
                self._event(conn, "UDP direct", ok=True)
                return self._direct(), None
            return self._refuse(conn, errno.EACCES, f"UDP refused ({decision.action}: "
                                "a SOCKS chain carries TCP only; udp = \"direct\" in "
                                "a rule lets it out)"), None
        # an isolated program cannot connect directly: the daemon does it for it; and
        # its sockets live in its own network namespace, so only the relay reaches it
        isolated = session is not None and session.isolated
        try:
            action = self._decide(conn, policy)
            if action.kind == "direct" and not isolated and conn.host is None:
                self._event(conn, "direct", ok=True)
                return self._direct(), None
            if app_sock is not None and not isolated and (
                    action.chain is None or action.chain.data_path == "handoff"):
                try:
                    handed = await self._hand_route(conn, action, app_sock)
                except HandoffImpossible as exc:
                    log.debug("[%s] no handoff (%s): relay", conn.id, exc)
                else:
                    self.handed_off += 1
                    if handed.swap is not None:
                        return wire.Reply(wire.Verdict.SWAP), handed.swap
                    return wire.Reply(wire.Verdict.READY), None
            tunnel = await self._open_route(conn, action)
        except SocksifyError as exc:
            return self._refuse(conn, exc.errno or errno.ECONNREFUSED, str(exc)), None
        token = secrets.token_bytes(wire.TOKEN_SIZE)
        timer = asyncio.get_running_loop().call_later(TOKEN_TTL, self._expire, token)
        self.pending[token] = (conn, tunnel, timer)
        if conn.stand_in is not None:    # held until the relayed connection ends
            self.fake.hold(conn.stand_in)
        return wire.Reply(wire.Verdict.RELAY, wire.Code.NONE, self.relay_port4,
                          self.relay_port6, token), None

    def _direct(self) -> wire.Reply:
        """DIRECT for a real address: the shim may cache it while the policy holds."""
        if self.generation.value:
            return wire.Reply.cached_direct(self.generation.value)
        return wire.Reply(wire.Verdict.DIRECT)

    def new_connection(self, app: AppInfo, addr: wire.IPAddress | None, port: int,
                       host: str | None = None) -> Connection:
        self.connections_total += 1
        return Connection(f"c{next(self._ids)}", app, addr, port, time.monotonic(),
                          host)

    async def open_route(self, conn: Connection, policy: Policy,
                         kernel_direct: bool) -> Tunnel | None:
        """Apply the policy to conn and open what it says: a tunnel through a chain,
        or a direct connection. None means "direct, and the caller can connect by
        itself" (only when kernel_direct and the real address is known). Raises a
        SocksifyError (PolicyBlocked for a block) and logs the outcome either way."""
        action = self._decide(conn, policy)
        if action.kind == "direct" and kernel_direct and conn.host is None:
            self._event(conn, "direct", ok=True)
            return None
        return await self._open_route(conn, action)

    def _decide(self, conn: Connection, policy: Policy) -> Action:
        decision = policy.decide(conn.app, conn.dst, conn.port, conn.host)
        conn.rule = decision.rule
        if decision.action.kind == "block":
            raise PolicyBlocked("blocked")
        if decision.action.chain is not None:
            conn.chain = decision.action.chain.name
        return decision.action

    def _selector(self, conn: Connection, chain: ChainSpec) -> Selector:
        # a session with its own chain (--via, -c, --chain) has its own selectors (and
        # pools); one that follows the daemon's policy shares the daemon's
        own = conn.session is not None and conn.session.policy is not None
        selectors = conn.session.selectors if own and conn.session else self._selectors
        selector = selectors.get(chain.name)
        if selector is None:
            selector = selectors[chain.name] = Selector(chain, self.health)
            if chain.prebuilt and chain.strategy is Strategy.STRICT:
                selector.pool = TunnelPool(chain, self.health)
        return selector

    async def _open_route(self, conn: Connection, action: Action) -> Tunnel:
        target = conn.host or str(conn.dst)
        if action.chain is None:
            tunnel = await open_direct(target, conn.port)
        else:
            tunnel = await open_tunnel(self._selector(conn, action.chain), target,
                                       conn.port, conn.id, action.dns)
        self._connected(conn, tunnel.route, tunnel.skipped, tunnel.setup_seconds,
                        " (pre-built)" if tunnel.prebuilt else "")
        return tunnel

    async def _hand_route(self, conn: Connection, action: Action,
                          app_sock: socket.socket) -> Handed:
        target = conn.host or str(conn.dst)
        if action.chain is None:
            handed = await hand_direct(app_sock, target, conn.port)
        else:
            selector = self._selector(conn, action.chain)
            pool = selector.pool
            handed = await hand_tunnel(
                selector, target, conn.port, app_sock, conn.id, action.dns,
                swappable=pool is not None and _swappable(app_sock, pool))
        self._connected(conn, handed.route, handed.skipped, handed.setup_seconds,
                        ", handed off" + (" (pre-built)" if handed.swap else ""))
        return handed

    def _connected(self, conn: Connection, route: tuple[Proxy, ...],
                   skipped: tuple[Proxy, ...], seconds: float, how: str) -> None:
        conn.route = " > ".join(str(h) for h in route) or "direct"
        note = f" (skipped {', '.join(map(str, skipped))})" if skipped else ""
        self._event(conn, f"connected in {seconds * 1000:.0f} ms{how}{note}", ok=True)

    def _all_selectors(self) -> list[Selector]:
        return [*self._selectors.values(),
                *(sel for session in self.sessions.values()
                  for sel in session.selectors.values())]

    @staticmethod
    def _close_pools(selectors: Any) -> None:
        for selector in selectors:
            if selector.pool is not None:
                selector.pool.close()

    def refused(self, conn: Connection, exc: SocksifyError) -> None:
        """Log and report a connection that open_route refused."""
        self._event(conn, f"{os.strerror(exc.errno or errno.ECONNREFUSED)}: {exc}",
                    ok=False)

    async def peername(self, request: wire.ConnectRequest, uid: int) -> bytes:
        """PEERNAME: the destination of uid's relayed connection whose app end is
        request's address, so getpeername() reports what the program asked for;
        another user's connection is answered as an unknown one (FAIL). A
        program may ask before its relay connection is accepted here (it sent the
        token and went on): while tokens are pending, wait for it a little."""
        key = (request.addr, request.port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PEERNAME_WAIT
        while key not in self.by_app_end and self.pending and loop.time() < deadline:
            self._attached.clear()
            try:
                await asyncio.wait_for(self._attached.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        conn = self.by_app_end.get(key)
        if conn is None or conn.dst is None or conn.app.uid != uid:
            return wire.Reply(wire.Verdict.FAIL).dumps()
        return wire.PeerReply(conn.dst, conn.port).dumps()

    def _refuse(self, conn: Connection, err: int, why: str) -> wire.Reply:
        self._event(conn, f"{os.strerror(err)}: {why}", ok=False)
        return wire.Reply.fail(err)

    def _expire(self, token: bytes) -> None:
        entry = self.pending.pop(token, None)
        if entry:
            conn, tunnel, _ = entry
            log.warning("[%s] the app never attached to its tunnel; closed", conn.id)
            tunnel.close()
            if conn.stand_in is not None:
                self.fake.release(conn.stand_in)

    def peer_uid(self, sock: socket.socket) -> int | None:
        """The uid owning the other end of a loopback TCP connection we accepted, from
        the kernel's socket table; None if it is not there (another network
        namespace, already gone). Windows has no such table here: the owner's."""
        if not socktable.supported():
            return own_uid()
        try:
            peer, ours = sock.getpeername(), sock.getsockname()
            return socktable.peer_uid((peer[0], peer[1]), (ours[0], ours[1]))
        except (OSError, ValueError, IndexError):
            return None

    def _relay_accepted(self, sock: socket.socket, owner: int | None = None) -> None:
        """A new connection to a relay listener, decided before the next is accepted
        (so a flood never holds more than the caps allow). Tokens go to the programs
        of allowed uids only: another uid's connection is closed at once; the others
        wait for their token under the gate's caps."""
        uid = owner if owner is not None else self.peer_uid(sock)
        if uid is not None and not self.allows(uid):
            self.burst.warn(("relay-foreign", uid), f"relay: closed connections from "
                            f"uid {uid}, which may not use this daemon")
            sock.close()
            return
        ticket = self.gate.admit(uid)
        if ticket is None:
            self.burst.warn(("relay-cap", uid), f"relay: closed connections from uid "
                            f"{'?' if uid is None else uid}: too many waiting for their "
                            f"token ({self.gate.total} waiting)")
            sock.close()
            return
        asyncio.ensure_future(self._relay_conn(sock, ticket))

    async def _relay_conn(self, sock: socket.socket, ticket: Ticket) -> None:
        """An admitted relay connection: exactly 16 token bytes within TOKEN_WAIT,
        then, for a known unexpired token, its tunnel's bytes."""
        try:
            token = await within(recv_exactly(sock, wire.TOKEN_SIZE), TOKEN_WAIT)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            sock.close()
            return
        finally:
            ticket.release()
        entry = self.pending.pop(token, None)
        if entry is None:
            log.warning("relay connection from %s with an unknown token; closed",
                        _peer_of(sock))
            sock.close()
            return
        conn, tunnel, timer = entry
        timer.cancel()
        await self.serve_relay(conn, tunnel, app_sock=sock)

    async def serve_relay(self, conn: Connection, tunnel: Tunnel,
                          app_sock: socket.socket | None = None,
                          app_streams: tuple[asyncio.StreamReader,
                                             asyncio.StreamWriter] | None = None) -> None:
        """Carry conn's bytes between the program and its tunnel, as a live connection
        (the connections table, PEERNAME, graceful stop): splice(2) between two
        sockets, or the stream relay for a program's asyncio streams (the front
        door's clients)."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.live[conn.id] = conn
        app_end = _app_end(_peer_of(app_sock) if app_sock is not None else
                           app_streams[1].get_extra_info("peername")
                           if app_streams is not None else None)
        if app_end is not None:
            self.by_app_end[app_end] = conn
            self._attached.set()
        try:
            if app_sock is not None:
                app_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await relay_sockets(app_sock, tunnel.sock, conn.counters, conn.id)
            elif app_streams is not None:
                sock = app_streams[1].get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                far_reader, far_writer = await tunnel.streams()
                await relay(*app_streams, far_reader, far_writer, conn.counters,
                            conn.id)
        finally:
            tunnel.close()
            if conn.stand_in is not None:
                self.fake.release(conn.stand_in)
            self.live.pop(conn.id, None)
            if app_end is not None:
                self.by_app_end.pop(app_end, None)
            self._tasks.discard(task)
            log.info("[%s] %s closed after %.1fs: %d bytes up, %d down", conn.id,
                     conn.app, time.monotonic() - conn.started, conn.counters.up,
                     conn.counters.down)

    def _event(self, conn: Connection, result: str, ok: bool) -> None:
        """One line per connection decision: app, target, rule, chain and route, result
        and how long it took."""
        via = f" via {conn.route}" if conn.route else ""
        rule = f" [{conn.rule}{', chain ' + conn.chain if conn.chain else ''}]" \
            if conn.rule else ""
        took = (time.monotonic() - conn.started) * 1000
        text = f"{conn.app} -> {conn.target}{via}: {result}"
        log.log(logging.INFO if ok else logging.WARNING, "[%s] %s%s (%.1f ms)",
                conn.id, text, rule, took)
        self._notify(conn.session, {"event": "connection", "id": conn.id, "ok": ok,
                                    "text": text})

    def _notify(self, session: Session | None, event: dict[str, Any]) -> None:
        """Tell a socksify command about one of its connections: failures always (it
        prints them unless -q), successes when it asked for -v."""
        if session is None or session.writer.is_closing():
            return
        if event.get("ok") and not session.verbose:
            return
        session.writer.write(json.dumps(event).encode() + b"\n")

    def sees_all(self, uid: int | None) -> bool:
        """Does a command of this uid see every user's sessions and connections? The
        daemon's own user and root do; any other user sees only their own."""
        return uid is None or uid in (own_uid(), 0)

    def status(self, uid: int | None = None) -> dict[str, Any]:
        """The daemon's state as uid may see it: another user than the daemon's own
        (or root) gets counts, sessions' chains and down hops of their own only."""
        if not self.sees_all(uid):
            return self._status_of(uid)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self._started, 1),
            "socket": self._control_where(),
            "policy": self.policy.source if self.policy else None,
            "rules": len(self.policy.rules) if self.policy else 0,
            "sessions": len(self.sessions),
            "live": len(self.live),
            "pending": len(self.pending),
            "connections_total": self.connections_total,
            "handed_off": self.handed_off,
            "hops_down": self.health.snapshot(),
            "chains": self._chains_status(),
            "frontdoor": f"{self.frontdoor.host}:{self.frontdoor.port}"
            if self.frontdoor else None,
            "relay": {"port4": self.relay_port4, "port6": self.relay_port6,
                      "socket": str(self.paths.relay_socket)
                      if self._relay_unix is not None else None},
        }

    def _status_of(self, uid: int | None) -> dict[str, Any]:
        specs = [*(self.policy.chains.values() if self.policy else ()),
                 *(c for s in self.sessions.values() if s.uid == uid and s.policy
                   for c in s.policy.chains.values())]
        hops = {f"{hop.host}:{hop.port}" for spec in specs for hop in spec.hops}
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self._started, 1),
            "socket": self._control_where(),
            "policy": self.policy.source if self.policy else None,
            "rules": len(self.policy.rules) if self.policy else 0,
            "sessions": sum(s.uid == uid for s in self.sessions.values()),
            "live": sum(c.app.uid == uid for c in self.live.values()),
            "pending": sum(c.app.uid == uid for c, _, _ in self.pending.values()),
            "connections_total": None,
            "handed_off": None,
            "hops_down": {h: t for h, t in self.health.snapshot().items()
                          if h in hops},
            "chains": self._chains_status(uid),
            "frontdoor": f"{self.frontdoor.host}:{self.frontdoor.port}"
            if self.frontdoor else None,
            "relay": {"port4": self.relay_port4, "port6": self.relay_port6,
                      "socket": str(self.paths.relay_socket)
                      if self._relay_unix is not None else None},
        }

    def _chains_status(self, uid: int | None = None) -> list[dict[str, Any]]:
        chains: list[tuple[ChainSpec, str, Selector | None]] = []
        if self.policy is not None:
            chains += [(c, "policy", self._selectors.get(c.name))
                       for c in self.policy.chains.values()]
        for session in self.sessions.values():
            if not self.sees_all(uid) and session.uid != uid:
                continue
            if session.policy is not None:
                chains += [(c, "session", session.selectors.get(c.name))
                           for c in session.policy.chains.values()]
        out = []
        for spec, origin, selector in chains:
            hops = []
            for hop in spec.hops:
                retry = self.health.retry_in(hop)
                hops.append({"url": str(hop), "state": "down" if retry else "up",
                             "retry_in": retry})
            pool = selector.pool if selector is not None else None
            # the Windows DLL has no handoff: every connection is relayed there
            data_path = "relay" if sys.platform == "win32" else spec.data_path
            out.append({"name": spec.name, "strategy": spec.strategy.value,
                        "origin": origin, "hops": hops, "data_path": data_path,
                        "prebuilt": pool.describe() if pool is not None else None})
        return out

    def connections(self, uid: int | None = None) -> list[dict[str, Any]]:
        """The live connections uid may see: all for the daemon's own user and root,
        else that user's own."""
        return [conn.describe() for conn in self.live.values()
                if self.sees_all(uid) or conn.app.uid == uid]


def _sockets(fds: list[int]) -> list[socket.socket]:
    """Socket objects for received descriptors; all closed if one is not a socket."""
    out: list[socket.socket] = []
    try:
        for fd in fds:
            out.append(socket.socket(fileno=fd))
    except OSError:
        for s in out:
            s.close()
        for fd in fds[len(out):]:
            os.close(fd)
        raise
    return out


# Windows locks are mandatory: lock one byte far past the pid, which others still read
_WINDOWS_LOCK_OFFSET = 1 << 20


def _lock(fd: int) -> None:
    """An exclusive lock for the process's life, or OSError if another holds it."""
    if sys.platform == "win32":
        import msvcrt
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return
    import fcntl
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


FD_LIMIT_WANTED = 65536


def _raise_fd_limit() -> None:
    """Each relayed connection holds two descriptors in the daemon; the usual soft
    limit of 1024 would cap it near 500 connections. Raise the soft limit towards the
    hard one (the daemon's children, if any, inherit it too). Windows has no such
    limit."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_LIMIT_WANTED if hard == resource.RLIM_INFINITY else min(hard,
                                                                       FD_LIMIT_WANTED)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            log.info("raised the open-file limit from %d to %d", soft, want)
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)


class _RelayListener:
    """A listening TCP socket whose connections are handed, raw, to `accepted` (the
    relay: it reads exactly the token, so nothing the program sent is buffered here),
    one at a time: `accepted` decides on each before the next is accepted."""

    def __init__(self, sock: socket.socket,
                 accepted: Callable[[socket.socket], None]) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self._accepted = accepted
        self._task = asyncio.ensure_future(self._accept())

    @classmethod
    def bind(cls, family: int, host: str,
             accepted: Callable[[socket.socket], None]) -> _RelayListener:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((host, 0))
            sock.listen(512)
        except OSError:
            sock.close()
            raise
        return cls(sock, accepted)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:     # EMFILE and friends: let the others finish
                _ACCEPT_ERRORS.warn("relay", f"relay accept failed: {exc}")
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            self._accepted(conn)
            await asyncio.sleep(0)     # a steady flood must not starve the others

    def close(self) -> None:
        self._task.cancel()
        self.sock.close()


def _peer_of(sock: socket.socket) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return None


def _swappable(app_sock: socket.socket, pool: TunnelPool) -> bool:
    """May a pre-built tunnel's socket replace the program's? Only one of the same
    family that the program has not bound to an address or port of its choosing."""
    if pool.family is not None and app_sock.family != pool.family:
        return False
    try:
        local = app_sock.getsockname()
    except OSError:
        return False
    return local[1] == 0 and ipaddress.ip_address(local[0]).is_unspecified


def _app_end(peer: Any) -> tuple[wire.IPAddress, int] | None:
    """(address, port) of a relay connection's app end, from asyncio's peername."""
    try:
        return ipaddress.ip_address(peer[0]), int(peer[1])
    except (TypeError, ValueError, IndexError):
        return None


def _endpoint(addr: wire.IPAddress, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"

