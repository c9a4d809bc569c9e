#!/usr/bin/env python3
"""A tiny HTTP/1.1 keep-alive server that answers every request after a fixed delay and counts the answers.

bench/run.sh uses it as the accuracy target: cicada's request count must equal the count this server prints, and
cicada's latencies must match the delay. `GET /anything?ms=N` waits N ms (default --delay-ms) with
`asyncio.sleep`, then answers `200 ok`. The server prints `delay server listening on http://127.0.0.1:PORT` once
bound. On SIGUSR1 it prints one JSON line and starts counting afresh; on SIGTERM or SIGINT it prints the line and
exits. The line is `{"answered": N, "received": M, "server_ms": {...}}`
where `server_ms` holds the median, p99, mean, min and max of the time the server itself spent on each request
(from the request head read to the response written). That is the "true" latency a client should report, give or
take the loopback round trip: `asyncio.sleep` overshoots the nominal delay by up to a millisecond or two (the event
loop's timeout granularity), so comparing a client with the nominal delay alone would blame it for the server.

Usage: python3 delay_server.py [--port 0] [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import sys
from urllib.parse import parse_qs, urlsplit

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


class Counter:
    """Requests received (head fully read) and answered (response written and drained)."""

    def __init__(self) -> None:
        self.received = 0
        self.answered = 0
        self.service_ns: list[int] = []


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: Counter, delay: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            started = time.perf_counter_ns()
            counter.received += 1
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            wait = delay
            if len(parts) >= 2:
                query = parse_qs(urlsplit(parts[1]).query)
                if "ms" in query:
                    try:
                        wait = float(query["ms"][0]) / 1000.0
                    except ValueError:
                        pass
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(wait)
            writer.write(RESPONSE)
            await writer.drain()
            counter.answered += 1
            counter.service_ns.append(time.perf_counter_ns() - started)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


def report(counter: Counter) -> None:
    """Print the counts and the server-side time summary as one JSON line."""
    line = {"answered": counter.answered, "received": counter.received, "server_ms": summary(counter)}
    print(json.dumps(line), flush=True)


def summary(counter: Counter) -> dict[str, float]:
    """Median, p99, mean, min and max of the server-side time per request, in ms."""
    samples = sorted(counter.service_ns)
    if not samples:
        return {}

    def quantile(q: float) -> float:
        return samples[min(len(samples) - 1, max(0, int(q * len(samples) + 0.5) - 1))] / 1e6

    return {
        "median": quantile(0.5),
        "p99": quantile(0.99),
        "mean": sum(samples) / len(samples) / 1e6,
        "min": samples[0] / 1e6,
        "max": samples[-1] / 1e6,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    counter = Counter()
    delay = args.delay_ms / 1000.0
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, counter, delay), "127.0.0.1", args.port, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    print(f"delay server listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def snapshot() -> None:
        report(counter)
        counter.received = counter.answered = 0
        counter.service_ns.clear()

    loop.add_signal_handler(signal.SIGUSR1, snapshot)
    await stop.wait()
    server.close()
    report(counter)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
