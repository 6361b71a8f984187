"""What ``edge-station sim`` and scenario steps do to a running simulation, over its socket.

``call`` sends one JSON-lines request to the control socket of ``simulate``
(in ``DATA/sim/``) or ``sim-nodes`` (in its ``--dir``); ``do`` carries out one
action (a command line's or a scenario step's) and returns what it did, in a
sentence. Errors are :class:`SimCommandError` sentences.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

DEFAULT_DIR = "data/sim-8080"
SOCKET_NAME = "control.sock"  # esp32_node.control's; not imported, to keep this command light


class SimCommandError(Exception):
    """What went wrong, as a sentence for the developer."""


# --------------------------------------------------------------------------- the wire


def socket_path(directory: Path) -> Path:
    """``simulate`` serves in ``DATA/sim/``, ``sim-nodes`` in its ``--dir``: accept either."""
    for candidate in (directory / SOCKET_NAME, directory / "sim" / SOCKET_NAME):
        if candidate.exists():
            return candidate
    raise SimCommandError(
        f"No simulation is running in {directory} (no control socket there). Start one with "
        "`edge-station simulate` or `edge-station sim-nodes`, or name its folder with --dir."
    )


def call(
    directory: Path, op: str, node: str | None = None, timeout: float = 30.0, **args: Any
) -> Any:
    """One request; raises :class:`SimCommandError` with the simulation's own sentence."""
    path = socket_path(directory)
    body: dict[str, Any] = {"op": op, "args": args}
    if node is not None:
        body["node"] = node
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(body).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except (ConnectionRefusedError, FileNotFoundError):
        raise SimCommandError(
            f"The simulation in {directory} is not running any more (its control socket is stale)."
        ) from None
    except TimeoutError:
        raise SimCommandError(
            f"The simulation in {directory} did not answer within {timeout:g} s."
        ) from None
    if not buf:
        raise SimCommandError(
            f"The simulation in {directory} closed the connection without answering."
        )
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise SimCommandError(str(reply.get("error") or "The simulation refused the request."))
    return reply.get("result")


# --------------------------------------------------------------------------- commands


def _amps(text: str) -> list[float] | None:
    if text == "curve":
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise SimCommandError(
            f"{text!r} is not a current: give amps like 12 or 10,8,6, or 'curve'."
        ) from None
    if len(values) not in (1, 3):
        raise SimCommandError("Give one current for every phase, or three (L1,L2,L3).")
    return values * 3 if len(values) == 1 else values


def _kw(text: str) -> float | None:
    if text == "curve":
        return None
    try:
        return float(text)
    except ValueError:
        raise SimCommandError(f"{text!r} is not a power: give kW like 3.5, or 'curve'.") from None


def do(directory: Path, action: dict[str, Any]) -> str:
    """Carry out one action (a command line's or a scenario step's); returns the sentence."""
    what = str(action.get("do", ""))
    bay = action.get("bay")

    def need_bay() -> str:
        if not bay:
            raise SimCommandError(f"'{what}' needs a bay (for example bay1).")
        return str(bay)

    match what:
        case "plug":
            b = need_bay()
            args = {
                k: action[k]
                for k in ("phases", "max_a", "soc_pct", "capacity_wh", "charger_a")
                if action.get(k) is not None
            }
            st = call(directory, "plug_in", b, **args)
            if st.get("kind") == "locker":
                return f"{b}: an e-bike charger is plugged into the outlet ({args.get('charger_a', 1.5):g} A)."
            soc = f", battery at {args['soc_pct']:g} %" if "soc_pct" in args else ""
            return (
                f"{b}: an EV is plugged in ({args.get('phases', 3)} phase(s), up to "
                f"{args.get('max_a', 16.0):g} A{soc})."
            )
        case "unplug":
            b = need_bay()
            call(directory, "unplug", b)
            return f"{b}: unplugged; the car (or charger) has left."
        case "offline" | "online" | "reboot":
            b = need_bay()
            call(directory, what, b)
            return {
                "offline": f"{b}: the node is offline (it hears and answers nothing).",
                "online": f"{b}: the node is back online.",
                "reboot": f"{b}: the node rebooted (configuration and lease lost, counters kept).",
            }[what]
        case "door-open" | "door-close" | "door-force":
            b = need_bay()
            op = {"door-open": "open_door", "door-close": "close_door", "door-force": "force_door"}[
                what
            ]
            call(directory, op, b)
            return {
                "door-open": f"{b}: the door is open.",
                "door-close": f"{b}: the door is closed.",
                "door-force": f"{b}: the locked door was forced open.",
            }[what]
        case "lock-jam" | "lock-free":
            b = need_bay()
            call(directory, "jam_lock" if what == "lock-jam" else "free_lock", b)
            return (
                f"{b}: the lock is jammed." if what == "lock-jam" else f"{b}: the lock moves again."
            )
        case "usb-unplug" | "usb-replug":
            call(directory, "unplug_usb" if what == "usb-unplug" else "replug_usb")
            return (
                "The nodes' USB cable is pulled: the controller's port is gone."
                if what == "usb-unplug"
                else "The nodes' USB cable is back."
            )
        case "estop-press" | "estop-release":
            return str(call(directory, "estop", pressed=what == "estop-press")["said"])
        case "meter":
            fault = str(action.get("fault", "none"))
            args = {"name": action.get("meter") or "grid", "fault": fault}
            if action.get("code") is not None:
                args["code"] = int(action["code"])
            if action.get("delay_s") is not None:
                args["delay_s"] = float(action["delay_s"])
            return str(call(directory, "meter", **args)["said"])
        case "grid":
            amps = action.get("amps")
            value = _amps(str(amps)) if isinstance(amps, str) else amps
            if isinstance(value, (int, float)):
                value = [float(value)] * 3
            return str(call(directory, "grid", amps=value)["said"])
        case "pv":
            kw = action.get("kw")
            return str(call(directory, "pv", kw=_kw(kw) if isinstance(kw, str) else kw)["said"])
        case "camera":
            return str(call(directory, "camera", code=str(action.get("code", "")), bay=bay)["said"])
        case "disk-full" | "disk-free":
            return str(
                call(directory, "disk", timeout=120.0, action=what.removeprefix("disk-"))["said"]
            )
    raise SimCommandError(f"Unknown action {what!r}.")
