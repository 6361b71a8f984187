"""``edge-station sim ...``: faults and scenarios for a running simulation, from the command line.

Talks JSON lines to the control socket of ``edge-station simulate`` (in
``DATA/sim/``) or ``edge-station sim-nodes`` (in its ``--dir``). Each command
prints what it did in a sentence; an error is a sentence too, with exit code 1
(2 for a command line that makes no sense).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from simulators.sim_actions import DEFAULT_DIR, SimCommandError, call, do

EXIT_FAILED = 1
EXIT_USAGE = 2


def _status(directory: Path) -> str:
    st = call(directory, "status")
    lines = []
    for name, n in sorted(st["nodes"].items()):
        amps = "/".join(f"{a:.1f}" for a in n["current_a"])
        lines.append(
            f"{name:8} {n['kind']:6} relay {'on ' if n['relay_on'] else 'off'} setpoint "
            f"{n['setpoint_a']:5.1f} A  drawing {amps} A  {n['energy_wh']:9.1f} Wh"
            + ("  (host silent)" if n["host_silent"] else "")
        )
    for name, m in sorted((st.get("meters") or {}).items()):
        slow = f", answers after {m['answer_delay_s']:g} s" if m["answer_delay_s"] else ""
        lines.append(f"meter {name}: {m['fault']}{slow} (Modbus TCP port {m['port']})")
    if st.get("estop_pressed") is not None:
        lines.append(f"emergency stop: {'pressed' if st['estop_pressed'] else 'released'}")
    if "disk_free_bytes" in st:
        lines.append(f"journal disk: {st['disk_free_bytes'] / 1e6:.1f} MB free")
    return "\n".join(lines)


def action_of(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as an action (the same shape as a scenario step)."""
    c = args.sim_command
    if c == "plug":
        return {
            "do": "plug",
            "bay": args.bay,
            "phases": args.phases,
            "max_a": args.max_a,
            "soc_pct": args.soc,
            "capacity_wh": None if args.capacity_kwh is None else args.capacity_kwh * 1000,
            "charger_a": args.charger_a,
        }
    if c == "unplug":
        return {"do": "unplug", "bay": args.bay}
    if c == "node":
        return {"do": args.what, "bay": args.bay}
    if c in ("door", "lock", "estop", "disk", "usb"):
        return {"do": f"{c}-{args.what}", "bay": getattr(args, "bay", None)}
    if c == "meter":
        return {
            "do": "meter",
            "fault": args.fault,
            "meter": args.meter,
            "code": args.code,
            "delay_s": args.delay,
        }
    if c == "grid":
        return {"do": "grid", "amps": args.amps}
    if c == "pv":
        return {"do": "pv", "kw": args.kw}
    if c == "camera":
        return {"do": "camera", "code": args.code, "bay": args.bay}
    raise SimCommandError(f"Unknown command {c!r}.")


def cmd_sim(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    try:
        if args.sim_command is None:
            args.sim_parser.print_help()
            return EXIT_USAGE
        if args.sim_command == "status":
            print(_status(directory))
        elif args.sim_command == "run-scenario":
            from simulators.scenario import ScenarioError, run_file

            try:
                return run_file(directory, args.file, speed=args.speed, out=sys.stdout)
            except ScenarioError as err:
                print(err)
                return EXIT_USAGE if err.usage else EXIT_FAILED
        else:
            print(do(directory, action_of(args)))
    except SimCommandError as err:
        print(err)
        return EXIT_FAILED
    return 0


# --------------------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sim",
        help="faults and scenarios for a running simulation (simulate or sim-nodes)",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dir",
        default=os.environ.get("EDGE_STATION_SIM_DIR", DEFAULT_DIR),
        help="the simulation's folder: simulate's --data-dir or sim-nodes' --dir "
        f"(default {DEFAULT_DIR}, or $EDGE_STATION_SIM_DIR)",
    )
    p.set_defaults(func=cmd_sim, sim_command=None, sim_parser=p)
    s = p.add_subparsers(dest="sim_command", metavar="COMMAND")

    s.add_parser("status", help="what every node, meter and input is doing")

    plug = s.add_parser("plug", help="plug an EV (or a locker's e-bike charger) in")
    plug.add_argument("bay")
    plug.add_argument("--phases", type=int, choices=[1, 3], help="the EV's phases (default 3)")
    plug.add_argument("--max-a", type=float, help="the most the EV draws per phase (default 16)")
    plug.add_argument("--soc", type=float, metavar="PCT", help="the battery's charge, 0..100 %%")
    plug.add_argument("--capacity-kwh", type=float, help="the battery's size (with --soc)")
    plug.add_argument("--charger-a", type=float, help="locker: the e-bike charger's current")

    unplug = s.add_parser("unplug", help="the car (or charger) leaves")
    unplug.add_argument("bay")

    node = s.add_parser("node", help="a node goes offline, comes back online or reboots")
    node.add_argument("what", choices=["offline", "online", "reboot"])
    node.add_argument("bay")

    door = s.add_parser("door", help="a locker's door: open, close, or force it open while locked")
    door.add_argument("what", choices=["open", "close", "force"])
    door.add_argument("bay")

    lock = s.add_parser("lock", help="a locker's lock jams (or moves again)")
    lock.add_argument("what", choices=["jam", "free"])
    lock.add_argument("bay")

    estop = s.add_parser("estop", help="press or release the emergency-stop button")
    estop.add_argument("what", choices=["press", "release"])

    meter = s.add_parser("meter", help="a meter fault (none clears it)")
    meter.add_argument("fault", choices=["none", "silent", "exception", "garbage", "zeros", "slow"])
    meter.add_argument("--meter", default="grid", help="which meter (default grid; pv)")
    meter.add_argument("--code", type=int, help="exception: the Modbus exception code (default 4)")
    meter.add_argument("--delay", type=float, metavar="S", help="slow: seconds before each answer")

    grid = s.add_parser("grid", help="a step of the building's load (without the bays)")
    grid.add_argument("amps", help="amps on every phase (12), per phase (10,8,6), or 'curve'")

    pv = s.add_parser("pv", help="a step of the PV production")
    pv.add_argument("kw", help="kW, or 'curve' (the sun's daily curve)")

    cam = s.add_parser("camera", help="the camera shows a QR code")
    cam.add_argument("code", help="the code's text (a token, or a signed token)")
    cam.add_argument("--bay", help="the bay whose camera sees it (default: the code names it)")

    d = s.add_parser("disk", help="fill the journal's disk (simulate --small-disk) or free it")
    d.add_argument("what", choices=["full", "free"])

    usb = s.add_parser("usb", help="pull the nodes' USB cable (serial) or plug it back")
    usb.add_argument("what", choices=["unplug", "replug"])

    sc = s.add_parser("run-scenario", help="run a TOML scenario file (simulators/scenarios/)")
    sc.add_argument("file", type=Path)
    sc.add_argument("--speed", type=float, default=1.0, help="run the timeline this much faster")
