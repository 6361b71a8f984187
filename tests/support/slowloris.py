"""A bounded slow-client attack, run as its own process: ``python -m tests.support.slowloris``.

``--sockets N`` connections are kept open against ``--port`` for ``--seconds``
from ``--sources`` loopback source addresses (127.0.0.2, 127.0.0.3, ...: other
hosts as the station sees them). Half of them send nothing at all, half send
the start of a request head and then one more header line every two seconds,
never the blank line that ends it. A connection the server closes is opened
again after ``--retry-s``. At the end one JSON line tells what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass


@dataclass
class Stats:
    opened: int = 0
    connect_failed: int = 0
    closed_by_server: int = 0
    open_now: int = 0
    max_open: int = 0
    answered_503: int = 0
    answered_408: int = 0


async def _one(i: int, args: argparse.Namespace, stats: Stats, deadline: float) -> None:
    source = f"127.0.0.{2 + i % args.sources}"
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", args.port, local_addr=(source, 0)
            )
        except OSError:
            stats.connect_failed += 1
            await asyncio.sleep(args.retry_s)
            continue
        stats.opened += 1
        stats.open_now += 1
        stats.max_open = max(stats.max_open, stats.open_now)
        try:
            if i % 2:
                writer.write(b"GET /api/v1/kiosk/state HTTP/1.1\r\nHost: station\r\n")
            while time.monotonic() < deadline:
                try:
                    async with asyncio.timeout(min(2.0, max(0.01, deadline - time.monotonic()))):
                        data = await reader.read(4096)
                except TimeoutError:
                    if i % 2:
                        writer.write(b"X-Slow: 1\r\n")
                    continue
                if not data:
                    stats.closed_by_server += 1
                    break
                stats.answered_503 += data.startswith(b"HTTP/1.1 503")
                stats.answered_408 += data.startswith(b"HTTP/1.1 408")
        except OSError:
            stats.closed_by_server += 1
        finally:
            stats.open_now -= 1
            writer.transport.abort()
        await asyncio.sleep(args.retry_s)


async def _main(args: argparse.Namespace) -> Stats:
    stats = Stats()
    deadline = time.monotonic() + args.seconds
    async with asyncio.TaskGroup() as tg:
        for i in range(args.sockets):
            tg.create_task(_one(i, args, stats, deadline))
    return stats


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.support.slowloris")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sockets", type=int, default=1500)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--sources", type=int, default=50)
    p.add_argument("--retry-s", type=float, default=1.0)
    args = p.parse_args()
    print("ATTACKING", flush=True)
    stats = asyncio.run(_main(args))
    print(json.dumps(asdict(stats)), flush=True)


if __name__ == "__main__":
    main()
