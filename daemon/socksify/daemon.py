"""socksifyd: the per-user daemon process. It holds the pidfile, starts the listeners
(listeners/) around one router (core/router.py), reloads the policy on SIGHUP and
stops gracefully on SIGTERM/SIGINT; and it reports its state (status). Deciding and
opening connections is the router's job, not this module's."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__, controlfile, sockdiag
from .chains.earlydata import EARLY_DATA, STEPWISE
from .core.records import UdpFlow
from .core.router import Router
from .core.sessions import close_pools
from .core.status import chains_status
from .core.wrapped import Wrapped
from .errors import ConfigError
from .generation import GenerationFile
from .isolation.served import Served
from .listeners import tcpcontrol
from .listeners.admission import BurstLog, Gate
from .listeners.carrier import Carrier, udp_owner
from .listeners.control import Control
from .listeners.frontdoor import FrontDoor
from .listeners.lane import Lane
from .listeners.relay import Relays
from .paths import Paths, config_candidates
from .policy import Policy
from .printable import printable
from .procinfo import own_uid

log = logging.getLogger("socksify.daemon")


class AlreadyRunning(RuntimeError):
    pass


class Daemon:
    """The process: what it listens on and for how long. It is the listeners' Admin
    (listeners/commands.py): stop, reload, reopen_frontdoor, status."""

    def __init__(self, paths: Paths, policy_path: Path | None = None,
                 grace: float = 5.0, socks_listen: tuple[str, int] | None = None) -> None:
        self.paths = paths
        self.socks_listen = socks_listen   # --socks: overrides [frontdoor] listen
        self.policy_path = policy_path
        self.grace = grace
        self.generation = GenerationFile(paths.generation_file)
        self.router = Router(self.generation)
        # caps on connections not yet proven (relay before its token, front door
        # before its request), sized from the open-file limit in run()
        self.gate = Gate(own_uid())
        self.burst = BurstLog(log)
        self.control = Control(self.router, self, self.gate, self.burst)
        self.relays = Relays(self.router.table, self.router.allows, self.gate,
                             self.burst, lambda handed: Served(self.router, handed))
        self.frontdoor: FrontDoor | None = None
        self.carrier = Carrier(self.router, udp_owner)
        self.wrapped = Wrapped(self.router, self.carrier.grant,
                               self.carrier.send_to_program, sockdiag.udp_ports_inodes)
        self._servers: list[asyncio.AbstractServer] = []
        self._stop = asyncio.Event()
        self._started = time.time()
        self._pid_fd: int | None = None

    # ----- lifecycle -------------------------------------------------------------
    async def run(self) -> None:
        _raise_fd_limit()
        self.gate = self.control.gate = self.relays.gate = Gate(own_uid())
        self._lock_pidfile()
        try:
            self.router.set_policy(self._load_policy())
            self._listen()
            await self._carrier()
            tcp, key = await tcpcontrol.listen(self.router, self, self.control.tasks)
            self._servers += tcp   # Windows programs
            await self._frontdoor()
            self._signals()
            if tcp:   # named only once every listener is up (a failed start names none)
                controlfile.publish(self.paths, tcp[0].sockets[0].getsockname()[1], key)
            policy = self.router.policy
            log.info("socksifyd %s ready: pid %d, control %s, relay 127.0.0.1:%d%s, "
                     "policy %s", __version__, os.getpid(), self._control_where(),
                     self.relays.port4,
                     f" and [::1]:{self.relays.port6}" if self.relays.port6 else "",
                     policy.source if policy else "none (sessions only)")
            watcher = asyncio.ensure_future(self.router.handed.run())
            await self._stop.wait()
            watcher.cancel()
            await self._shutdown()
        finally:
            controlfile.forget(self.paths)   # also after a failed start: no stale file
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
            return str(controlfile.file_path(self.paths))
        return str(self.paths.socket)

    def _listen(self) -> None:
        self.paths.ensure_dirs()
        if sys.platform != "win32":   # Windows: the TCP control listener only
            # the Unix control socket (shims, command line tools) and relay.sock
            self.control.listen(self.paths.socket)
            self.relays.listen_unix(self.paths.relay_socket)
            self._socket_permissions()
            self._lane()
        self.generation.publish()
        self.relays.listen_loopback()
        self.router.relay_ports = (self.relays.port4, self.relays.port6)

    def _lane(self) -> None:
        """The compiled connect path (listeners/lane.py), where it can run."""
        lane = Lane.start(asyncio.get_running_loop(), self.router)
        if lane is None:
            return
        self.control.lane = lane
        self.router.lane_offer = lane.offer
        self.router.sessions.tunnel_store = lane.tunnels
        self.router.lane_forget = self.router.sessions.ended = lane.forget_all

    async def _carrier(self) -> None:
        """The datagram port for carried UDP (listeners/carrier.py); without it, UDP
        under a udp = "chain" rule is refused as before."""
        if sys.platform == "win32":
            return
        try:
            port4, port6 = await self.carrier.start()
        except OSError as exc:
            log.warning("no carrier for UDP (%s): udp = \"chain\" refuses programs' "
                        "datagrams", exc)
            return
        self.router.carry = self.carrier.grant
        self.router.wrap = self.wrapped.wrap      # datagram handoff (core/wrapped.py)
        self.router.unwrap = self.wrapped.unwrap
        log.info("carrier for UDP on 127.0.0.1:%d%s", port4,
                 f" and [::1]:{port6}" if port6 else "")

    async def _shutdown(self) -> None:
        table = self.router.table
        log.info("stopping: %d live connection(s), up to %.0fs to finish",
                 len(table.live), self.grace)
        self.router.carry = self.router.wrap = self.router.unwrap = None
        self.wrapped.close()
        self.carrier.close()
        for server in self._servers:
            server.close()
        self.relays.close_loopback()
        self.generation.withdraw()
        self.control.close()
        close_pools(self.router.sessions.all_selectors())
        self.relays.close_unix()
        if self.frontdoor is not None:
            self.frontdoor.close()
        table.close_pending()
        await self.wrapped.drain(min(self.grace, 5.0))  # held UDP ports: hop 1 first
        await table.finish(self.grace)
        self.router.sessions.hang_up()
        self.router.handed.close_all()
        self.router.events.close()         # `socksifyd events` streams end
        if self.control.tasks:
            await asyncio.wait(set(self.control.tasks), timeout=1.0)
        for path in (self.paths.socket, self.paths.relay_socket):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        controlfile.forget(self.paths)
        log.info("stopped")

    async def _frontdoor(self) -> None:
        """(Re)open the SOCKS front door where --socks or the policy says; close it
        when neither does."""
        policy = self.router.policy
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
            door = FrontDoor(self.router, self.gate, self.burst, where[0], where[1],
                             users)
            await door.start()
            self.frontdoor = door

    async def reopen_frontdoor(self) -> None:
        try:
            await self._frontdoor()
        except OSError as exc:
            log.error("cannot open the SOCKS front door: %s", exc)

    def _socket_permissions(self) -> None:
        """0700 directory and 0600 socket: only this user reaches the daemon. A root
        daemon whose policy lists allow_users opens both to everyone, and then the
        peer-uid check in Router.allows() is the gate."""
        policy = self.router.policy
        shared = os.getuid() == 0 and policy is not None and bool(policy.allow_users)
        os.chmod(self.paths.socket, 0o666 if shared else 0o600)
        if self.relays.unix is not None:
            os.chmod(self.paths.relay_socket, 0o666 if shared else 0o600)
        os.chmod(self.paths.socket.parent, 0o711 if shared else 0o700)

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
        self.router.set_policy(policy)
        if self.control.sock is not None:
            self.generation.publish()     # every shim's cached DIRECT answer is void
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

    # ----- reporting -------------------------------------------------------------
    def status(self, uid: int | None = None) -> dict[str, Any]:
        """The daemon's state as uid may see it: another user than the daemon's own
        (or root) gets counts, sessions' chains and down hops of their own only."""
        router = self.router
        policy = router.policy
        sessions = router.sessions.open.values()
        table = router.table
        out: dict[str, Any] = {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self._started, 1),
            "socket": self._control_where(),
            "policy": policy.source if policy else None,
            "rules": len(policy.rules) if policy else 0,
        }
        if router.sees_all(uid):
            out.update({
                "sessions": len(sessions),
                "live": len(table.live),
                "handed_live": len(router.handed.live),
                "event_subscribers": len(router.events.subscribers),
                "udp_flows": sum(isinstance(c, UdpFlow) for c in table.live.values()),
                "pending": len(table.pending),
                "connections_total": router.connections_total,
                "handed_off": router.handed_off,
                "hops_down": router.health.snapshot(),
                # hops seen to mishandle pipelined requests: asked step by step
                "hops_stepwise": [h for h, s in EARLY_DATA.snapshot().items()
                                  if s == STEPWISE],
                "chains": chains_status(router)})
        else:
            specs = [*(policy.chains.values() if policy else ()),
                     *(c for s in sessions if s.uid == uid and s.policy
                       for c in s.policy.chains.values())]
            hops = {f"{hop.host}:{hop.port}" for spec in specs for hop in spec.hops}
            out.update({
                "sessions": sum(s.uid == uid for s in sessions),
                "live": sum(c.app.uid == uid for c in table.live.values()),
                "handed_live": sum(c.app.uid == uid
                                   for c in router.handed.connections()),
                "pending": sum(c.app.uid == uid for c, _, _ in table.pending.values()),
                "connections_total": None,
                "handed_off": None,
                "hops_down": {h: t for h, t in router.health.snapshot().items()
                              if h in hops},
                "hops_stepwise": [h for h, s in EARLY_DATA.snapshot().items()
                                  if s == STEPWISE and h in hops],
                "chains": chains_status(router, uid)})
        out["frontdoor"] = f"{self.frontdoor.host}:{self.frontdoor.port}" \
            if self.frontdoor else None
        if router.sees_all(uid):
            out["carrier"] = {**self.carrier.status(), **{
                "handoff_flows": len(self.wrapped.flows)}}
            lane = self.control.lane
            out["lane"] = lane.status() if lane is not None else None
        # udp: a rule of uid's policies carries UDP through a chain, so an isolated
        # namespace redirects its datagrams to the daemon (else its fence drops them)
        mine = [policy, *(s.policy for s in sessions if uid is None or s.uid == uid)]
        out["relay"] = {"port4": self.relays.port4, "port6": self.relays.port6,
                        "socket": str(self.paths.relay_socket)
                        if self.relays.unix is not None else None,
                        "udp": any(r.udp == "chain" for p in mine if p is not None
                                   for r in p.rules)}
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
