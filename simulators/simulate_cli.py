"""The ``simulate`` command line: its options, their checks, and the small-disk re-run.

Kept apart from ``demo.py`` so that building the ``edge-station`` parser (for
every command, ``sim`` included) imports none of the station.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from simulators import disk

MAX_BAYS = 32
DESCRIPTION = """Run the whole station on simulated hardware, through the real adapters.

Nodes run on pseudo-terminals behind the real serial driver (or through a
private mosquitto behind the real MQTT driver); the grid meter (and a PV meter)
are Modbus TCP servers behind the real Modbus driver; a development CSMS sits
behind the real OCPP client (or the one --csms-url names); the emergency stop
is a mock GPIO pin read by the real GPIO driver. `edge-station sim --dir DATA`
talks to the running simulation (faults, cars, scenarios).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="run the station on simulated hardware",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bays", type=int, default=4, help="number of bays (1..32)")
    p.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="UI and API port (default 8080, or the config's)",
    )
    p.add_argument("--http-host", default=None, help="UI and API address (default 127.0.0.1)")
    p.add_argument("--data-dir", type=Path, default=None, help="default: data/sim-<http port>")
    p.add_argument("--kind", choices=["mixed", "evse", "locker"], default="mixed")
    p.add_argument("--no-demo-drivers", action="store_true", help="leave the bays empty")
    p.add_argument(
        "--ocpp-wallboxes",
        type=int,
        default=0,
        metavar="N",
        help="add N simulated OCPP 1.6J wallboxes as extra bays (0..16)",
    )
    csms = p.add_mutually_exclusive_group()
    csms.add_argument(
        "--csms-url",
        metavar="URL",
        help="connect to this OCPP 1.6J central system (ws://host:port/path) instead of the "
        "built-in one; the station's id is appended as OCPP requires",
    )
    csms.add_argument("--no-csms", action="store_true", help="run without any central system")
    p.add_argument(
        "--auth",
        choices=["free", "tokens"],
        default=None,
        help="free: every token charges (the default); tokens: only the --tokens list (and "
        "whatever the CSMS accepts)",
    )
    p.add_argument(
        "--tokens", default="", metavar="A,B", help="the local token list for --auth tokens"
    )
    p.add_argument(
        "--pv-kw",
        type=float,
        default=0.0,
        metavar="KW",
        help="a PV meter with a daily sun curve of this peak, so Solar mode works",
    )
    p.add_argument(
        "--transport",
        choices=["serial", "mqtt"],
        default=None,
        help="how the nodes talk: serial (pseudo-terminals, the default) or mqtt (a private "
        "mosquitto on a free port)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="start from a real station.toml and simulate only the hardware it names",
    )
    p.add_argument(
        "--small-disk",
        type=int,
        default=0,
        metavar="MB",
        help="put the journal on a disk of its own of MB megabytes (a tmpfs in a private mount "
        "namespace), so `sim disk full` can fill it",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="how much faster the meters' day runs than the clock (default 20)",
    )
    p.add_argument(
        "--start-hour", type=float, default=None, help="the meters' time of day at the start"
    )
    p.set_defaults(func=cmd_simulate)


def problems(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    if not 1 <= args.bays <= MAX_BAYS:
        out.append(f"--bays must be between 1 and {MAX_BAYS}, not {args.bays}.")
    if args.csms_url is not None and not str(args.csms_url).startswith(("ws://", "wss://")):
        out.append(f"--csms-url must start with ws:// or wss://, not {args.csms_url!r}.")
    tokens = [t for t in str(args.tokens).split(",") if t.strip()]
    if args.auth == "tokens" and not tokens:
        out.append("--auth tokens needs --tokens A,B (the tokens that may charge).")
    if tokens and args.auth != "tokens":
        out.append("--tokens only counts with --auth tokens.")
    if not 0 <= args.pv_kw <= 1000:
        out.append(f"--pv-kw must be between 0 and 1000 kW, not {args.pv_kw:g}.")
    if args.small_disk and not 4 <= args.small_disk <= 4096:
        out.append(f"--small-disk must be between 4 and 4096 MB, not {args.small_disk}.")
    if not 0 <= args.speed <= 10_000:
        out.append(f"--speed must be between 0 and 10000, not {args.speed:g}.")
    if args.start_hour is not None and not 0 <= args.start_hour < 24:
        out.append(f"--start-hour must be from 0 to 24, not {args.start_hour:g}.")
    if args.config is not None and not args.config.is_file():
        out.append(f"--config {args.config}: no such file.")
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    errors = problems(args)
    if errors:
        for e in errors:
            print(e)
        return 2
    if args.http_port is None and args.config is None:
        args.http_port = 8080
    name = args.http_port or "config"
    args.data_dir = (args.data_dir or Path("data") / f"sim-{name}").resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    (args.data_dir / "camera").mkdir(exist_ok=True)
    if args.small_disk and not disk.inside_small_disk():
        try:
            disk.run_on_small_disk(disk.this_command(), args.data_dir / "journal", args.small_disk)
        except disk.DiskError as err:
            print(err)
            return 1
    from simulators.demo import run_simulation

    return run_simulation(args)
