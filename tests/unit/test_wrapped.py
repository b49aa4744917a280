"""The datagram handoff's daemon side (core/wrapped.py, docs/wire.md "Datagram
handoff: WRAP") without root or a shim: a Router with a Carrier and Wrapped answers a
WRAP (a datagram CONNECT with the program's UDP socket) with the relay and the opaque
prefixes; the test's own socket then talks to the hop's relay directly, as the shim
will, through the few-line SOCKS5 hop of test_carrier.py. The daemon holds its copy of
the program's socket (the port stays bound) until the flow has ended: on UNWRAP (the
program closes it), when the asking process exits, and when the hop drops the
association (one ERROR envelope from the carrier); only after hop 1 closed the
control connection is the port free."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from test_carrier import PID, SESSION, UID, UdpHop, make

from socksify import sockdiag
from socksify.chains.udp import handoff_prefixes
from socksify.core.router import Router
from socksify.core.wrapped import Wrapped
from socksify.listeners.carrier import Carrier
from socksify.policy import Policy
from socksify.protocol import control as wire
from socksify.protocol.datagram import Envelope, Kind, WrapReply
from socksify.protocol.socks5udp import wrap, wrap_layers


def test_prefixes_one_hop_and_three() -> None:
    one = handoff_prefixes([("10.0.1.2", 1)], "192.0.2.7", 53)
    assert one is not None
    send, reply, mask = one
    assert send == reply == wrap("192.0.2.7", 53, b"") and mask == b"\xff" * 10
    relays = [("10.0.1.2", 1), ("10.0.2.2", 40000), ("2001:db8::2", 40001)]
    three = handoff_prefixes(relays, "198.51.100.7", 7)
    assert three is not None
    send, reply, mask = three
    assert send == wrap_layers(relays[1:], "198.51.100.7", 7, b"")
    w = WrapReply(ipaddress.ip_address("10.0.1.2"), 1, 1, bytes(8), send, reply, mask)
    # a hop naming the next relay by another address still matches; another port not
    seen = wrap_layers([("10.9.9.9", 40000), ("2001:db8::9", 40001)], "198.51.100.7",
                       7, b"pong")
    assert w.reply_payload(seen) == b"pong"
    assert w.reply_payload(wrap_layers([("10.0.2.2", 40002), relays[2]],
                                       "198.51.100.7", 7, b"x")) is None
    # a relay known by name, a destination that is a name: no handoff (CARRY)
    assert handoff_prefixes([("h1", 1), ("relay.example", 2)], "192.0.2.7", 53) is None
    assert handoff_prefixes([("10.0.1.2", 1)], "far.test", 53) is None


class KillableHop(UdpHop):
    """The hop of test_carrier.py, whose control connections the test can drop."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await super().handle(reader, writer)


def setup(hop_port: int) -> tuple[Router, Carrier, Wrapped, list[Any]]:
    r, carrier, owners = make(hop_port)
    alive: list[Any] = [None]       # None: the real socket table

    def inodes() -> set[tuple[int, int]]:
        return sockdiag.udp_ports_inodes() if alive[0] is None else alive[0]
    wrapped = Wrapped(r, carrier.grant, carrier.send_to_program, inodes)
    r.wrap = wrapped.wrap
    return r, carrier, wrapped, [alive]


@dataclass
class Rig:
    """A daemon's datagram side (Router, Carrier, Wrapped) on a scripted hop, and what
    the test opens beside it: all closed when the test ends."""

    hop: KillableHop
    r: Router
    carrier: Carrier
    wrapped: Wrapped
    box: list[Any]         # box[0][0]: the socket table's answer (None: the real one)
    port4: int             # the carrier's IPv4 port
    hop_port: int
    closing: list[Any] = field(default_factory=list)

    def program(self, bind: str = "127.0.0.1", blocking: bool = True,
                reuse: bool = False) -> socket.socket:
        """A program's bound UDP socket."""
        prog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.closing.append(prog)
        if reuse:
            prog.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        prog.bind((bind, 0))
        prog.setblocking(blocking)
        return prog

    async def serve(self, hop: KillableHop) -> int:
        """Another scripted hop; its port."""
        server = await asyncio.start_server(hop.handle, "127.0.0.1", 0)
        self.closing.append(server)
        return int(server.sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def rig(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                               Awaitable[None]] | None = None,
              hop: KillableHop | None = None) -> AsyncIterator[Rig]:
    """A Rig on `hop` (a new KillableHop if None), its control connections served by
    `handle` (the hop's own if None)."""
    hop = hop or KillableHop()
    server = await asyncio.start_server(handle or hop.handle, "127.0.0.1", 0)
    hop_port = server.sockets[0].getsockname()[1]
    r, carrier, wrapped, box = setup(hop_port)
    it = Rig(hop, r, carrier, wrapped, box, 0, hop_port)
    try:
        it.port4, _ = await carrier.start()
        yield it
    finally:
        wrapped.close()
        carrier.close()
        server.close()
        for thing in it.closing:
            thing.close()


def run(main: Callable[[], Awaitable[None]], timeout: float = 20) -> None:
    asyncio.run(asyncio.wait_for(main(), timeout))


async def ask_wrap(r: Router, addr: str, port: int, sock: socket.socket | None
                   ) -> wire.Reply | WrapReply:
    req = wire.ConnectRequest(ipaddress.ip_address(addr), port, wire.SockType.DGRAM,
                              SESSION, wire.Op.WRAP)
    reply, _ = await r.connect(req, PID, UID, sock)
    return reply


def test_wrap_hands_the_socket_the_relay_and_the_daemon_sees_nothing() -> None:
    async def main() -> None:
        async with rig() as it:
            r, wrapped = it.r, it.wrapped
            echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            it.closing.append(echo)
            echo.bind(("127.0.0.1", 0))
            echo.setblocking(False)
            loop = asyncio.get_running_loop()
            prog = it.program(blocking=False)
            dest = echo.getsockname()
            reply = await ask_wrap(r, dest[0], dest[1], prog)
            assert isinstance(reply, WrapReply), reply
            assert WrapReply.loads(reply.dumps()) == reply
            assert it.hop.relay is not None
            assert (str(reply.relay), reply.relay_port) == it.hop.relay.getsockname()
            assert reply.generation == 0x1234 and reply.carrier_port4 == it.port4
            relay = (str(reply.relay), reply.relay_port)
            prog.sendto(reply.send_prefix + b"hello", relay)
            data, src = await asyncio.wait_for(loop.sock_recvfrom(echo, 100), 5)
            assert data == b"hello"
            echo.sendto(b"back", src)
            got, frm = await asyncio.wait_for(loop.sock_recvfrom(prog, 100), 5)
            assert frm == relay and reply.reply_payload(got) == b"back"
            # one flow for the socket, shared by a second destination; no datagram
            # crossed the carrier
            other = await ask_wrap(r, dest[0], dest[1] + 1, prog)
            assert isinstance(other, WrapReply) and other.relay_port == reply.relay_port
            assert other.send_prefix != reply.send_prefix
            assert len(wrapped.flows) == 1 and not it.carrier.flows
            (flow,) = wrapped.flows.values()
            assert flow.record.path == "handoff"
            row = flow.record.describe()
            assert row["kind"] == "udp" and row["up"] is None and row["down"] is None
            assert r.table.live[flow.record.id] is flow.record
            # the program closes its socket: the daemon's copy keeps the port bound
            port = prog.getsockname()[1]
            prog.close()
            assert bind_fails(port)
            assert wrapped.flows and not flow.held._closed  # type: ignore[attr-defined]
    run(main)


def bind_fails(port: int) -> bool:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        other.bind(("127.0.0.1", port))
    except OSError as exc:
        assert exc.errno == errno.EADDRINUSE
        return True
    finally:
        other.close()
    return False


def test_a_stopping_daemon_waits_for_hop_1_before_freeing_the_port() -> None:
    async def main() -> None:
        async with rig() as it:
            prog = it.program()
            port = prog.getsockname()[1]
            assert isinstance(await ask_wrap(it.r, "203.0.113.9", 53, prog), WrapReply)
            prog.close()
            it.wrapped.close()
            assert not it.wrapped.flows and bind_fails(port)
            await asyncio.wait_for(it.wrapped.drain(), 10)
            assert not it.wrapped._releasing and not bind_fails(port)
    run(main)


async def released(wrapped: Wrapped) -> None:
    """Until every ended flow has let its port go (bounded by the caller)."""
    while wrapped._releasing:
        await asyncio.sleep(0.01)


def test_unwrap_ends_the_flow_and_frees_the_port_after_hop_1_closed() -> None:
    """UNWRAP (the shim's close()): the flow ends at once (no table row), its control
    connection closes, and only once hop 1 has closed its end is the daemon's copy of
    the socket closed and the port free; until then nobody can bind it."""
    async def main() -> None:
        async with rig() as it:
            r, wrapped = it.r, it.wrapped
            prog = it.program(blocking=False)
            port = prog.getsockname()[1]
            assert isinstance(await ask_wrap(r, "203.0.113.9", 53, prog), WrapReply)
            (flow,) = wrapped.flows.values()
            # the daemon's copy shares the program's file: its blocking mode unchanged
            assert not os.get_blocking(prog.fileno())
            assert PID in wrapped.pids
            # another uid's UNWRAP of the same socket ends nothing, nor another
            # process's (a forked child closing its copy)
            assert wrapped.unwrap(prog, PID, UID + 1) == 0 and wrapped.flows
            assert wrapped.unwrap(prog, PID + 1, UID) == 0 and wrapped.flows
            assert wrapped.unwrap(prog, PID, UID) == 1
            prog.close()
            assert not wrapped.flows and flow.record.id not in r.table.live
            assert flow.assoc.closed and PID not in wrapped.pids
            assert bind_fails(port)          # hop 1 has not closed its end yet
            await asyncio.wait_for(released(wrapped), 10)
            assert flow.held._closed  # type: ignore[attr-defined]
            assert not bind_fails(port)
    run(main)


def test_a_hop_that_keeps_the_control_open_delays_the_release_boundedly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hop 1 that never closes the control connection: the port is let go after
    RELEASE_WAIT."""
    from socksify.core import wrapped as module
    monkeypatch.setattr(module, "RELEASE_WAIT", 0.3)

    async def main() -> None:
        hop = KillableHop()

        async def stubborn(reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
            await hop.handle(reader, writer)
            await asyncio.sleep(30)        # keeps its end open
        async with rig(stubborn, hop) as it:
            prog = it.program()
            port = prog.getsockname()[1]
            assert isinstance(await ask_wrap(it.r, "203.0.113.9", 53, prog), WrapReply)
            it.wrapped.unwrap(prog, PID, UID)
            prog.close()
            assert bind_fails(port)
            await asyncio.wait_for(released(it.wrapped), 10)
            assert not bind_fails(port)
    run(main)


def test_the_asking_process_exit_ends_its_flows() -> None:
    """The flows of a process that exits without closing its socket end (pidfd, or
    the /proc poll where there is none), and the port is let go."""
    async def main() -> None:
        async with rig() as it:
            r, wrapped = it.r, it.wrapped
            child = subprocess.Popen(["sleep", "30"])
            it.closing.append(_Reaped(child))
            prog = it.program()
            port = prog.getsockname()[1]
            req = wire.ConnectRequest(ipaddress.ip_address("203.0.113.9"), 53,
                                      wire.SockType.DGRAM, SESSION, wire.Op.WRAP)
            reply, _ = await r.connect(req, child.pid, UID, prog)
            assert isinstance(reply, WrapReply)
            prog.close()                     # (the program's copy: the child's)
            assert wrapped.flows and child.pid in wrapped.pids
            child.kill()
            await asyncio.to_thread(child.wait)
            for _ in range(500):
                if not wrapped.flows:
                    break
                await asyncio.sleep(0.01)
            assert not wrapped.flows and not r.table.live
            assert child.pid not in wrapped.pids
            await asyncio.wait_for(released(wrapped), 10)
            assert not bind_fails(port)
            # a pid that is gone already cannot be watched: carried, nothing opened
            reply, _ = await r.connect(req, child.pid, UID, it.program())
            assert isinstance(reply, wire.Reply) and not wrapped.flows
    run(main)


class _Reaped:
    """A child process, killed and waited for when closed."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child

    def close(self) -> None:
        self.child.kill()
        self.child.wait()


def test_many_wrapped_sockets_leave_no_descriptor_behind() -> None:
    async def main() -> None:
        async with rig() as it:
            before = len(os.listdir("/proc/self/fd"))
            for _ in range(40):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as prog:
                    prog.bind(("127.0.0.1", 0))
                    reply = await ask_wrap(it.r, "203.0.113.9", 53, prog)
                    assert isinstance(reply, WrapReply)
                    assert it.wrapped.unwrap(prog, PID, UID) == 1
            await asyncio.wait_for(released(it.wrapped), 10)
            for writer in it.hop.writers:      # (the hop's own ends)
                writer.close()
            await asyncio.sleep(0.1)
            assert not it.wrapped.flows and len(it.wrapped.pids) == 0
            assert len(os.listdir("/proc/self/fd")) <= before
    run(main, 30)


def test_the_without_pidfd_poll_sees_an_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    from socksify.core import pidwatch
    monkeypatch.setattr(pidwatch, "POLL", 0.05)

    async def main() -> None:
        gone: list[int] = []
        watch = pidwatch.PidWatch(gone.append)
        watch.pidfds = False
        child = subprocess.Popen(["sleep", "30"])
        try:
            assert watch.watch(child.pid) and watch.watch(child.pid)
            assert len(watch) == 1 and not watch.watch(0)
            await asyncio.sleep(0.2)
            assert gone == []
            child.kill()
            await asyncio.to_thread(child.wait)
            for _ in range(200):
                if gone:
                    break
                await asyncio.sleep(0.02)
            assert gone == [child.pid] and len(watch) == 0
            assert not watch.watch(child.pid)      # gone: cannot be watched
        finally:
            child.kill()
            child.wait()
            watch.close()
    run(main)


def test_a_lost_association_sends_one_error_from_the_carrier() -> None:
    async def main() -> None:
        async with rig() as it:
            loop = asyncio.get_running_loop()
            # the wildcard: ERROR comes on loopback
            prog = it.program("0.0.0.0", blocking=False)
            reply = await ask_wrap(it.r, "203.0.113.9", 53, prog)
            assert isinstance(reply, WrapReply)
            for writer in it.hop.writers:
                writer.close()
            got, frm = await asyncio.wait_for(loop.sock_recvfrom(prog, 100), 10)
            assert frm == ("127.0.0.1", it.port4)
            err, payload = Envelope.loads(got)
            assert err.kind is Kind.ERROR and err.token == reply.token
            assert (str(err.addr), err.port) == ("203.0.113.9", 53)
            assert not it.wrapped.flows and not it.r.table.live
    run(main)


def test_wrap_falls_back_to_carry() -> None:
    """No socket, an unbound one, a stream socket, a stand-in, a socket the daemon
    cannot see, the relay data path: answered as CONNECT (CARRY), the daemon opens
    nothing."""
    async def main() -> None:
        async with rig() as it:
            r = it.r

            async def carried(sock: socket.socket | None,
                              addr: str = "203.0.113.9") -> None:
                reply = await ask_wrap(r, addr, 53, sock)
                assert isinstance(reply, wire.Reply)
                assert reply.verdict is wire.Verdict.CARRY
            unbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            it.closing += [unbound, stream]
            stream.bind(("127.0.0.1", 0))
            await carried(None)
            await carried(unbound)
            # (the control listener never passes a stream socket; the router, given
            # one, does not build on it)
            await carried(stream)
            # a stand-in destination: its replies' source is not known
            prog = it.program()
            app = r.procs.identify(PID, UID)
            stand_in = r.lookup(app, "far.test", SESSION, UID, 4).addr
            assert stand_in is not None
            await carried(prog, str(stand_in))
            # a socket the daemon's socket table does not show (another network
            # namespace): its flow could not be swept
            it.box[0][0] = set()
            await carried(prog)
            it.box[0][0] = None
            # the relay data path keeps the carrier
            r.set_policy(Policy.parse(
                f'[chains.c]\nhops = ["socks5://127.0.0.1:{it.hop_port}"]\n'
                'data_path = "relay"\n[[rules]]\naction = "chain:c"\n'
                'udp = "chain"\n', "p.toml"))
            await carried(prog)
            assert not it.wrapped.flows and not it.hop.writers
    run(main)


async def no_body(n: int) -> bytes:
    raise AssertionError("WRAP and UNWRAP have no body")


def test_the_control_listener_takes_the_socket_and_closes_its_copy() -> None:
    """answer() with op 6 and the descriptor: a WRAP reply, whose bytes a reader
    parses; the daemon's copy of the descriptor is closed before the reply."""
    from socksify.listeners.control import answer

    async def main() -> None:
        async with rig() as it:
            prog = it.program()
            req = wire.ConnectRequest(ipaddress.ip_address("203.0.113.9"), 53,
                                      wire.SockType.DGRAM, SESSION, wire.Op.WRAP)
            copy = os.dup(prog.fileno())
            fds = [copy]
            raw, swap, ok = await answer(it.r, req.dumps(), no_body, fds, PID, UID)
            assert ok and swap is None and fds == []
            reply = WrapReply.loads(raw)
            assert it.hop.relay is not None
            assert reply.relay_port == it.hop.relay.getsockname()[1]
            with pytest.raises(OSError):
                os.fstat(copy)
            # no descriptor: answered as CONNECT
            raw, _, ok = await answer(it.r, req.dumps(), no_body, [], PID, UID)
            assert ok and wire.Reply.loads(raw).verdict is wire.Verdict.CARRY
    run(main)


def test_the_control_listener_answers_unwrap_and_closes_its_copy() -> None:
    """answer() with op 7 and the socket: READY, the flow ended, the passed copy
    closed; without a descriptor the request is malformed."""
    from socksify.listeners.control import answer

    async def main() -> None:
        async with rig() as it:
            r, wrapped = it.r, it.wrapped
            r.unwrap = wrapped.unwrap
            prog = it.program()
            assert isinstance(await ask_wrap(r, "203.0.113.9", 53, prog), WrapReply)
            req = wire.ConnectRequest(ipaddress.ip_address("127.0.0.1"),
                                      prog.getsockname()[1], wire.SockType.DGRAM,
                                      SESSION, wire.Op.UNWRAP)
            raw, _, ok = await answer(r, req.dumps(), no_body, [], PID, UID)
            assert not ok and wire.Reply.loads(raw).verdict is wire.Verdict.FAIL
            assert wrapped.flows
            copy = os.dup(prog.fileno())
            fds = [copy]
            raw, swap, ok = await answer(r, req.dumps(), no_body, fds, PID, UID)
            assert ok and swap is None and fds == []
            assert wire.Reply.loads(raw).verdict is wire.Verdict.READY
            assert not wrapped.flows and not r.table.live
            with pytest.raises(OSError):
                os.fstat(copy)
    run(main)


def test_a_socket_with_so_reuseaddr_is_carried() -> None:
    """Another user's socket with SO_REUSEADDR could bind its port beside it: no
    handoff for it."""
    async def main() -> None:
        async with rig() as it:
            reply = await ask_wrap(it.r, "203.0.113.9", 53, it.program(reuse=True))
            assert isinstance(reply, wire.Reply)
            assert reply.verdict is wire.Verdict.CARRY and not it.wrapped.flows
    run(main)


def test_a_reload_that_changes_the_chain_builds_a_new_association() -> None:
    """The same socket asks again after a reload whose chain of that name has other
    hops: the old association ends, a new one goes through the new hop; a reload that
    keeps the chain keeps the association."""
    async def main() -> None:
        async with rig() as it:
            r, wrapped, old_hop, new_hop = it.r, it.wrapped, it.hop, KillableHop()
            new_port = await it.serve(new_hop)
            prog = it.program()

            def policy(port: int) -> Policy:
                return Policy.parse(f'[chains.c]\nhops = ["socks5://127.0.0.1:{port}"]\n'
                                    '[[rules]]\naction = "chain:c"\nudp = "chain"\n',
                                    "p.toml")
            first = await ask_wrap(r, "203.0.113.9", 53, prog)
            assert isinstance(first, WrapReply)
            (old,) = wrapped.flows.values()
            r.set_policy(policy(it.hop_port))
            again = await ask_wrap(r, "203.0.113.9", 53, prog)
            assert isinstance(again, WrapReply) and again.relay_port == first.relay_port
            assert list(wrapped.flows.values()) == [old] and len(old_hop.writers) == 1
            r.set_policy(policy(new_port))
            moved = await ask_wrap(r, "203.0.113.9", 53, prog)
            assert isinstance(moved, WrapReply)
            assert new_hop.relay is not None
            assert moved.relay_port == new_hop.relay.getsockname()[1]
            assert old.closed and old.assoc.closed
            assert len(wrapped.flows) == 1 and len(new_hop.writers) == 1
    run(main)
