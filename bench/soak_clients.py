"""Hostile and careless clients for bench/soak.sh, all at once for a while:

  slowloris    request heads trickled a byte every 2 s (the header timeout's job)
  slow_upload  bodies trickled a byte every 5 s (the body timeout's job)
  slow_reader  a 10 MiB file read at 2 KiB/s, or not at all (the send timeout's)
  malformed    requests the server must refuse (bad framing, bad Host, junk)
  idle         keep-alive connections that send one request and then wait

  python3 bench/soak_clients.py HOST PORT SECONDS

None of them counts as a failed request: the soak's wrk load does. This
prints how many of each ran and what the server answered, so a run shows
that the hostile traffic really happened.
"""
import asyncio
import collections
import random
import sys
import time

HOST, PORT, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
DEADLINE = time.monotonic() + SECONDS
SEEN = collections.Counter()

MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: user@localhost\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"POST /app/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
    b"POST /app/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /app/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
    b"POST /app/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n",
    b"POST /app/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /hidden HTTP/1.1\r\n\r\n",
    b"POST /app/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /app/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 40000 + b"\r\n\r\n",
    b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
]


def alive():
    return time.monotonic() < DEADLINE


async def connect():
    return await asyncio.wait_for(asyncio.open_connection(HOST, PORT), 5)


def status_of(data):
    parts = data.split(b" ", 2)
    return parts[1].decode("ascii", "replace") if len(parts) > 1 and data.startswith(b"HTTP/") else "none"


async def read_some(reader, limit=65536, timeout=90):
    try:
        return await asyncio.wait_for(reader.read(limit), timeout)
    except (asyncio.TimeoutError, ConnectionError, OSError):
        return b""


async def close(writer):
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


async def trickle(name, head, byte_every, tail=b""):
    """Sends `head` at once and `tail` a byte at a time until the server
    answers or closes; counts what it answered."""
    while alive():
        try:
            reader, writer = await connect()
            writer.write(head)
            answer = asyncio.ensure_future(read_some(reader, timeout=SECONDS))
            for byte in tail:
                if answer.done() or not alive():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(byte_every)
            if not alive():
                answer.cancel()
                break
            SEEN[name + " " + status_of(await answer)] += 1
            await close(writer)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            SEEN[name + " closed"] += 1
            await asyncio.sleep(1)


def slowloris():
    return trickle("slowloris", b"GET /hello.txt HTTP/1.1\r\n", 2, b"Host: x\r\nX-Slow: " + b"a" * 200)


def slow_upload():
    head = b"POST /app/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    return trickle("slow_upload", head, 5, b"x" * 100000)


async def slow_reader(rate):
    while alive():
        try:
            reader, writer = await connect()
            writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            got = 0
            while alive():
                chunk = await read_some(reader, 2048, timeout=120)
                if not chunk:
                    break
                got += len(chunk)
                await asyncio.sleep(1 if rate else 600)
            SEEN[f"slow_reader({'2KiB/s' if rate else 'never'}) ended after {got // 1024} KiB"] += 1
            await close(writer)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            SEEN["slow_reader closed"] += 1
            await asyncio.sleep(1)


async def malformed():
    while alive():
        request = random.choice(MALFORMED)
        try:
            reader, writer = await connect()
            writer.write(request)
            await writer.drain()
            SEEN["malformed " + status_of(await read_some(reader, timeout=15))] += 1
            await close(writer)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            SEEN["malformed closed"] += 1
        await asyncio.sleep(0.2)


async def idle():
    while alive():
        try:
            reader, writer = await connect()
            writer.write(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            SEEN["idle " + status_of(await read_some(reader, timeout=15))] += 1
            # Then nothing, until the server's keep-alive timeout closes it.
            await read_some(reader, timeout=max(0.0, DEADLINE - time.monotonic()))
            await close(writer)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            SEEN["idle closed"] += 1
            await asyncio.sleep(1)


async def main():
    tasks = (
        [slowloris() for _ in range(10)]
        + [slow_upload() for _ in range(5)]
        + [slow_reader(True) for _ in range(3)]
        + [slow_reader(False) for _ in range(2)]
        + [malformed() for _ in range(4)]
        + [idle() for _ in range(20)]
    )
    await asyncio.gather(*tasks)
    for what, n in sorted(SEEN.items()):
        print(f"  {n:7d}  {what}")


asyncio.run(main())
