"""Opens N keep-alive HTTP/1.1 connections to a server, sends one GET on each,
reads the whole response, and keeps every socket open (for bench/memory.sh).

    python3 bench/hold_conns.py HOST PORT PATH N [PARALLEL [DEADLINE]]

PARALLEL (default 200) connections are being opened at any moment, so the
server's listen backlog never overflows. When all N are done, or DEADLINE
seconds (default 60) have passed (the unanswered ones count as failed), it
prints one line, `READY ok=K failed=F seconds=S [first error]`, then holds the sockets
until it is killed. Standard library only.
"""

import asyncio
import sys
import time


async def one(host, port, path, results, sockets):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)[1]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                raise RuntimeError("server answered Connection: close")
        if length:
            await asyncio.wait_for(reader.readexactly(length), 30)
        if status != "200":
            raise RuntimeError(f"status {status}")
        sockets.append(writer)
        results["ok"] += 1
    except Exception as e:  # noqa: BLE001 - every failure is counted and one is shown
        results["failed"] += 1
        results.setdefault("error", f"{type(e).__name__}: {e}")


async def main():
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    parallel = int(sys.argv[5]) if len(sys.argv) > 5 else 200
    deadline = float(sys.argv[6]) if len(sys.argv) > 6 else 60
    results = {"ok": 0, "failed": 0}
    sockets = []
    gate = asyncio.Semaphore(parallel)

    async def gated():
        async with gate:
            await one(host, port, path, results, sockets)

    t0 = time.monotonic()
    tasks = [asyncio.create_task(gated()) for _ in range(n)]
    _, pending = await asyncio.wait(tasks, timeout=deadline)
    for t in pending:
        t.cancel()
    if pending:
        results["failed"] += len(pending)
        results["error"] = f"{len(pending)} not answered within {deadline:g} s; first error: {results.get('error', 'none')}"
    secs = time.monotonic() - t0
    error = results.get("error", "")
    print(f"READY ok={results['ok']} failed={results['failed']} seconds={secs:.1f} {error}".rstrip(), flush=True)
    # Hold every socket until a signal ends the process (the kernel closes them).
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
