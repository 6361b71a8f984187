"""``python -m simulators.csms --port 9000``: a development central system on this machine."""

from __future__ import annotations

import argparse
import asyncio
import logging

from simulators.csms.server import CsmsSim


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
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    accept = {t for t in args.accept.split(",") if t} or None
    passwords = dict(x.split("=", 1) for x in args.password) or None
    sim = CsmsSim(
        args.host,
        args.port,
        accept_tags=accept,
        heartbeat_interval=args.heartbeat,
        passwords=passwords,
    )
    try:
        asyncio.run(sim.serve_forever())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
