"""``python -m simulators.csms --port 9000``: a development central system on this machine.

``--control`` (used by :class:`simulators.csms.process.CsmsProcess`): print ``READY <url>`` once
listening, answer ``stats`` lines on stdin with one JSON line on stdout, stop at end of stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import sys

from simulators.csms.server import CsmsSim


def stats(sim: CsmsSim) -> dict[str, object]:
    """What the simulator received so far, for a parent process."""
    return {
        "received": dict(collections.Counter(r.action for r in sim.received)),
        "transactions": len(sim.transactions),
        "connects": sim.connects,
    }


async def _controlled(sim: CsmsSim) -> None:
    """Serve until stdin closes; ``stats`` on stdin prints :func:`stats` as one JSON line."""
    await sim.start()
    try:
        print(f"READY {sim.url}", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"stats":
                print(json.dumps(stats(sim)), flush=True)
    finally:
        await sim.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m simulators.csms", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--accept", default="", help="comma-separated idTags to accept (default: all)")
    p.add_argument(
        "--heartbeat", type=int, default=300, help="heartbeat interval given at boot (s)"
    )
    p.add_argument(
        "--password",
        action="append",
        default=[],
        metavar="CP_ID=PASSWORD",
        help="require Basic auth (security profile 1); repeatable",
    )
    p.add_argument("--quiet", action="store_true", help="log warnings only, not every message")
    p.add_argument(
        "--answer-delay-ms",
        type=float,
        default=0.0,
        help="answer every call this much later (emulates the network round trip)",
    )
    p.add_argument(
        "--control", action="store_true", help="driven by a parent process over stdin/stdout"
    )
    args = p.parse_args()
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        stream=sys.stderr,
    )
    accept = {t for t in args.accept.split(",") if t} or None
    passwords = dict(x.split("=", 1) for x in args.password) or None
    sim = CsmsSim(
        args.host,
        args.port,
        accept_tags=accept,
        heartbeat_interval=args.heartbeat,
        passwords=passwords,
        log_messages=not args.quiet,
    )
    sim.answer_delay_s = args.answer_delay_ms / 1000
    try:
        asyncio.run(_controlled(sim) if args.control else sim.serve_forever())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
