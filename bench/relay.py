#!/usr/bin/env python3
"""A TCP relay that makes a loopback server look far away.

    relay.py --to HOST:PORT [--listen PORT] [--delay-ms 10]
             [--tls-cert PEM --tls-key PEM]

Every byte is delivered --delay-ms later than it arrived, in both
directions (so the round trip is twice that), and the first bytes a client
sends on a new connection wait one more round trip, which stands for the
TCP handshake a real distant server costs (on loopback it costs nothing).
Bytes stay in order and are pipelined: a delay line, not a sleep per
chunk, so throughput is not capped.  Prints the bound port on stdout.

With --tls-cert and --tls-key the far side is also a TLS terminator in
this process (for `make demo`, which then needs no nginx): the delayed
bytes go to it, and it forwards the plaintext to --to, so the TLS
handshake crosses the simulated distance as it would for real.
"""

import argparse
import asyncio
import collections
import socket
import ssl
import sys


class Pipe:
    """Moves bytes from reader to writer, each delivered `delay` s later."""

    def __init__(self, loop, reader, writer, delay, first_extra):
        self.loop = loop
        self.reader = reader
        self.writer = writer
        self.delay = delay
        self.first_extra = first_extra
        self.queue = collections.deque()
        self.ready = asyncio.Event()

    async def pump_in(self):
        last_due = 0.0
        extra = self.first_extra
        try:
            while True:
                data = await self.reader.read(262144)
                now = self.loop.time()
                due = max(now + self.delay + extra, last_due)
                extra = 0.0
                last_due = due
                self.queue.append((due, data))
                self.ready.set()
                if not data:
                    return
        except (ConnectionError, OSError):
            self.queue.append((self.loop.time() + self.delay, b""))
            self.ready.set()

    async def pump_out(self):
        try:
            while True:
                while not self.queue:
                    self.ready.clear()
                    await self.ready.wait()
                due, data = self.queue.popleft()
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                    return
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass


async def handle(client_r, client_w, up_host, up_port, delay):
    loop = asyncio.get_running_loop()
    sock = client_w.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        up_r, up_w = await asyncio.open_connection(up_host, up_port)
    except OSError:
        client_w.close()
        return
    up_w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                             socket.TCP_NODELAY, 1)
    c2s = Pipe(loop, client_r, up_w, delay, 2 * delay)
    s2c = Pipe(loop, up_r, client_w, delay, 0.0)
    await asyncio.gather(c2s.pump_in(), c2s.pump_out(), s2c.pump_in(),
                         s2c.pump_out())
    for w in (client_w, up_w):
        w.close()


async def plain_pipe(reader, writer):
    try:
        while True:
            data = await reader.read(262144)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    try:
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError, RuntimeError):
        pass


async def terminate(client_r, client_w, up_host, up_port):
    """The TLS terminator: TLS from the relay, plaintext to the server."""
    try:
        up_r, up_w = await asyncio.open_connection(up_host, up_port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(plain_pipe(client_r, up_w),
                         plain_pipe(up_r, client_w))
    for w in (client_w, up_w):
        w.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--to", required=True)
    ap.add_argument("--listen", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    a = ap.parse_args()
    host, port = a.to.rsplit(":", 1)
    port = int(port)
    delay = a.delay_ms / 1000.0
    if a.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        tls = await asyncio.start_server(
            lambda r, w, h=host, p=port: terminate(r, w, h, p),
            "127.0.0.1", 0, ssl=ctx, backlog=1024)
        host, port = "127.0.0.1", tls.sockets[0].getsockname()[1]
    server = await asyncio.start_server(
        lambda r, w, h=host, p=port: handle(r, w, h, p, delay),
        "127.0.0.1", a.listen, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
