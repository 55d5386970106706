#!/usr/bin/env python3
"""Memory per idle TLS passthrough session, measured the same way for pgproxy and HAProxy.

A stand-in backend answers 'S' to the SSLRequest and then holds the connection (PostgreSQL cannot
hold 5,000 sessions in this machine's memory). Clients send an SSLRequest and a real ClientHello
(with SNI) and idle. Prints the sum of RSS growth of the given processes divided by the session
count, in bytes.

  idle_sessions.py serve PORT                     the stand-in backend (runs until killed)
  idle_sessions.py measure PROXY_PORT N SNI PID...
"""
import asyncio, os, resource, ssl, struct, sys, time

SSLREQ = struct.pack("!II", 8, 80877103)


def client_hello(sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


async def serve(port):
    async def handle(reader, writer):
        try:
            await reader.readexactly(8)
            writer.write(b"S")
            await writer.drain()
            while await reader.read(65536):
                pass
        except Exception:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=8192)
    async with server:
        await server.serve_forever()


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


def children(pids):
    out = list(pids)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return out


async def measure(port, n, sni, pids):
    hello = client_hello(sni)
    procs = children(pids)
    before = rss_bytes(procs)
    conns = []
    sem = asyncio.Semaphore(200)

    async def one():
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(SSLREQ)
            await writer.drain()
            assert await reader.readexactly(1) == b"S"
            writer.write(hello)
            await writer.drain()
            conns.append(writer)

    await asyncio.gather(*(one() for _ in range(n)))
    await asyncio.sleep(2)  # let the proxy settle (buffers released after the first bytes)
    after = rss_bytes(procs)
    for w in conns:
        w.close()
    print((after - before) // n)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        asyncio.run(measure(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                            [int(p) for p in sys.argv[5:]]))


if __name__ == "__main__":
    main()
