#!/usr/bin/env python3
"""A TCP forwarder that makes one link look long: each listener forwards to one
destination and delays every chunk by D ms in each direction, in order, half-close
included (EOF is delayed like data). This kernel has no netem, so the WAN yardstick
(scripts/benchlib/wan.py) puts one of these on every link of the lab chain.

A user-space forwarder accepts the TCP handshake at once, so it also stands in for the
handshake's round trip: it connects onwards D ms after accepting (the SYN's way
there), and holds the first bytes from the connecting side until 3*D after the accept
(its connect would have returned after 2*D, and its bytes take D more). Bytes the far
side sends on accept arrive 2*D after the connect began, as over a real link.

What the forwarder cannot hide is a hop's own connect onwards: through forwarders it
returns at once, and a SOCKS hop replies to CONNECT once its connect is done. So for a
destination marked /socks4 (a SOCKS4 hop: the first bytes it sends are its CONNECT
reply) the hop's first bytes are held 2*D more, the round trip its connect to the next
link would have taken. With that, step-by-step and pipelined chains take the times a
chain of real links of delay D would give (docs/performance.md "WAN links").

    delay.py --delay-ms 10 --listen 10.0.0.2 HOST:PORT[/socks4]...

prints one JSON line, the listening ports in the order of the destinations, and runs
until killed."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys


LINKS: set[asyncio.Task[None]] = set()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay: float, not_before: float, first_extra: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def feed() -> None:
        extra = first_extra
        while True:
            try:
                data = await reader.read(65536)
            except OSError:
                data = b""
            queue.put_nowait((max(loop.time() + delay + extra, not_before), data))
            extra = 0.0
            if not data:
                return

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except OSError:
                return

    await asyncio.gather(feed(), deliver())


async def _link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                dest: tuple[str, int], delay: float, hop: bool) -> None:
    loop = asyncio.get_running_loop()
    accepted = loop.time()
    await asyncio.sleep(delay)                 # the SYN on its way
    try:
        up_r, up_w = await asyncio.open_connection(*dest)
    except OSError:
        writer.close()
        return
    for w in (writer, up_w):
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(_pipe(reader, up_w, delay, accepted + 3 * delay),
                             _pipe(up_r, writer, delay, 0.0, 2 * delay if hop else 0.0))
    finally:
        writer.close()
        up_w.close()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--listen", required=True, help="the address to listen on")
    ap.add_argument("dest", nargs="+", help="HOST:PORT for each link")
    args = ap.parse_args()
    delay = args.delay_ms / 1000
    ports = []
    servers = []
    for d in args.dest:
        addr, _, kind = d.partition("/")
        host, port = addr.rsplit(":", 1)
        dest = (host, int(port))

        def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                   dest: tuple[str, int] = dest, hop: bool = kind == "socks4") -> None:
            task = asyncio.get_running_loop().create_task(_link(r, w, dest, delay, hop))
            LINKS.add(task)                    # held here until done: asyncio keeps
            task.add_done_callback(LINKS.discard)   # only a weak reference
        srv = await asyncio.start_server(handle, args.listen, 0, backlog=1024)
        servers.append(srv)
        ports.append(srv.sockets[0].getsockname()[1])
    print(json.dumps(ports), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(0)
