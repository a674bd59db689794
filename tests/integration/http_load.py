"""A steady, open-loop HTTP load from its own process, for fault tests against a real server.

    python -m tests.integration.http_load --port 8000 --rate 100 --seconds 4 --body '{"rows": [...]}'

Request *i* is due at *i* / rate seconds, whether or not earlier ones were answered (a stalled
server can't slow the load down and hide its stall), each on its own connection. Prints one JSON
object: ``start`` (the wall-clock time of request 0's due time, ``time.time()`` seconds) and
``results``, ``[due_s, latency_s, status]`` per request, latency counted from the due time, status 0
for a request that failed without an HTTP answer (refused, reset, or over ``--timeout-s``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


async def _one(port: int, request: bytes, timeout_s: float) -> int:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout_s)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        status = int(head.split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await asyncio.wait_for(reader.readexactly(length), timeout_s)
        return status
    finally:
        writer.close()


async def run(port: int, body: bytes, rate: float, seconds: float, timeout_s: float) -> dict[str, object]:
    """The load; returns its start (epoch seconds) and ``[due_s, latency_s, status]`` per request."""
    request = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    results: list[list[float]] = []
    epoch, start = time.time(), time.perf_counter()

    async def timed(due: float) -> None:
        try:
            status = await _one(port, request, timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status = 0
        results.append([due, time.perf_counter() - start - due, status])

    tasks = []
    for i in range(int(rate * seconds)):
        due = i / rate
        await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
        tasks.append(asyncio.create_task(timed(due)))
    await asyncio.gather(*tasks)
    return {"start": epoch, "results": sorted(results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument("--body", required=True, help="the JSON body of every POST /v1/predict")
    args = parser.parse_args()
    results = asyncio.run(run(args.port, args.body.encode(), args.rate, args.seconds, args.timeout_s))
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
