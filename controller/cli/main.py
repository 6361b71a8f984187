"""The ``edge-station`` command line.

``run``, ``check-config`` and ``journal`` live here; other parts add their
commands through the ``edge_station.commands`` entry points (``simulate`` from
the simulators, for instance), so this module imports no adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from controller import registry
from controller.core.config import (
    ConfigError,
    StationConfig,
    config_warnings,
    load_config,
    station_problems,
)
from controller.core.loadloop import load_manager_config
from controller.core.samples import journal_interval
from controller.load import check_safe_shares
from controller.ops import session_csv
from controller.ops.logs import setup_logging

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    setup_logging(args.log_level)
    result: int = args.func(args)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-station", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the station from a config file")
    run.add_argument("--config", type=Path, required=True)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="check a config file and explain what is wrong")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_config)

    j = sub.add_parser("journal", help="list sessions and events; export CSV")
    src = j.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path)
    src.add_argument("--data-dir", type=Path)
    jsub = j.add_subparsers(dest="what", required=True)
    js = jsub.add_parser("sessions")
    js.add_argument("--bay")
    js.add_argument("--state", choices=["open", "closed"])
    js.add_argument("--limit", type=int, default=50)
    js.add_argument("--csv", type=Path, help="write all matching sessions as CSV ('-' for stdout)")
    je = jsub.add_parser("events")
    je.add_argument("--session")
    je.add_argument("--limit", type=int, default=100)
    j.set_defaults(func=cmd_journal)

    try:
        from controller.cli.tokens import add_token_commands
    except ImportError:  # pragma: no cover - the tokens part is optional in a trimmed build
        pass
    else:
        add_token_commands(sub)

    from controller.cli import firmware as firmware_cli
    from controller.cli import status as status_cli
    from controller.ops import backup

    status_cli.add_commands(sub)  # status
    firmware_cli.add_commands(sub)  # firmware force
    backup.add_commands(sub)  # backup, restore

    for name in registry.names(registry.COMMANDS):
        registry.load(registry.COMMANDS, name)(sub)
    return p


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        problems = check(cfg)
    except ConfigError as err:
        _print_problems(err.source, err.problems)
        return EXIT_CONFIG
    if problems:
        _print_problems(str(args.config), problems)
        return EXIT_CONFIG
    from controller.assemble import run_station

    return asyncio.run(run_station(cfg))


# --------------------------------------------------------------------------- check-config


def check(cfg: StationConfig) -> list[str]:
    """Problems beyond the schema: bays and data_dir, the optional parts' sections and
    the safe-share proof."""
    problems: list[str] = station_problems(cfg)
    try:
        lcfg = load_manager_config(cfg)
    except ValidationError as err:
        problems += [
            f"{'.'.join(str(p) for p in e['loc']) or 'site'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        ]
        lcfg = None
    if lcfg is not None:
        problems += [f"safe shares: {p}" for p in check_safe_shares(lcfg.site, lcfg.bays)]
    for ext in registry.extensions():
        problems.extend(ext.check(cfg))
    return problems


def check_warnings(cfg: StationConfig) -> list[str]:
    """What the core sections and the optional parts (an extension's optional ``warnings``)
    find risky but allowed."""
    out: list[str] = config_warnings(cfg)
    for ext in registry.extensions():
        warn = getattr(ext, "warnings", None)
        if warn is not None:
            out.extend(warn(cfg))
    return out


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
        problems = check(cfg)
    except ConfigError as err:
        _print_problems(err.source, err.problems)
        return EXIT_CONFIG
    if problems:
        _print_problems(str(args.file), problems)
        return EXIT_CONFIG
    for w in check_warnings(cfg):
        print(f"{args.file}: warning: {w}", file=sys.stderr)
    print(f"{args.file}: OK ({len(cfg.bays)} bays on {len(cfg.buses)} buses)")
    print(f"{args.file}: {journal_interval(cfg).describe()}")
    return 0


def _print_problems(source: str, problems: list[str]) -> None:
    print(f"{source}: invalid configuration", file=sys.stderr)
    for pr in problems:
        print(f"  - {pr}", file=sys.stderr)


# --------------------------------------------------------------------------- journal


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def cmd_journal(args: argparse.Namespace) -> int:
    if args.config:
        try:
            data_dir = load_config(args.config).station.data_dir
        except ConfigError as err:
            _print_problems(err.source, err.problems)
            return EXIT_CONFIG
    else:
        data_dir = args.data_dir
    path = data_dir / "journal.sqlite3"
    if not path.exists():
        print(f"no journal at {path}", file=sys.stderr)
        return 1
    return asyncio.run(_journal(path, args))


async def _journal(path: Path, args: argparse.Namespace) -> int:
    from controller.core.journal import Journal

    journal = await Journal.open(path)
    try:
        if args.what == "sessions":
            limit = 1_000_000 if args.csv else args.limit
            rows = await journal.sessions(bay_id=args.bay, state=args.state, limit=limit)
            if args.csv:
                text = session_csv.text(reversed(rows))
                if str(args.csv) == "-":
                    sys.stdout.write(text)
                else:
                    args.csv.write_text(text, encoding="utf-8")
                    print(f"{len(rows)} sessions written to {args.csv}")
                return 0
            print(
                f"{'session':16} {'bay':8} {'state':6} {'started (UTC)':25} {'kWh':>8} {'cost':>8} reason"
            )
            for r in rows:
                print(
                    f"{r['id']:16} {r['bay_id']:8} {r['state']:6} {_iso(r['started_at']):25} "
                    f"{r['energy_wh'] / 1000:8.3f} {r['cost'] if r['cost'] is not None else '':>8} "
                    f"{r['stop_reason'] or ''}"
                )
        else:
            for e in await journal.events(session_id=args.session, limit=args.limit):
                print(
                    f"{e['id']:6} {_iso(e['at'])} {e['bay_id'] or '-':8} {e['kind']:18} {e['data']}"
                )
    finally:
        await journal.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
