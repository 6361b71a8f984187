"""What ``edge-station sim`` can do to a running ``simulate``: the control socket's wider ops.

Beyond the node ops of ``esp32_node/control.py`` (which it passes on), a
simulation answers: ``estop`` (press / release the emergency-stop button, a
mock GPIO pin read by the real GPIO driver), ``meter`` (a meter fault: silent,
exception code, garbage, zeros, slow answers; ``none`` clears), ``grid`` (a
step of the building's load), ``pv`` (a step of the PV production), ``camera``
(the simulated camera shows a code), ``disk`` (fill / free the journal's small
disk) and ``status``. Each reply carries ``said``: what was done, in a sentence.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulators import disk
from simulators.esp32_node import control
from simulators.esp32_node.control import ControlError, NodeGroup
from simulators.meter.server import Fault

if TYPE_CHECKING:
    from controller.core.station import Station
    from simulators.camera.camera import SimulatedCamera
    from simulators.site import SimSite

STATION_OPS = ("estop", "meter", "grid", "pv", "camera", "disk", "status")


@dataclass
class EstopPin:
    """The emergency-stop input on gpiozero's mock pin factory (``[gpio] pin_factory = "mock"``)."""

    pin: int | str
    active_high: bool = False
    pressed: bool = False

    def set(self, pressed: bool) -> None:
        from drivers.gpio.io import pin_factory

        p = pin_factory("mock").pin(self.pin)
        if pressed == self.active_high:
            p.drive_high()
        else:
            p.drive_low()
        self.pressed = pressed


@dataclass
class SimControl:
    """The handler behind ``simulate``'s control socket."""

    nodes: NodeGroup
    journal_dir: Path
    site: SimSite | None = None
    estop: EstopPin | None = None
    camera: SimulatedCamera | None = None
    station: Station | None = None
    info: dict[str, Any] = field(default_factory=dict)

    async def handle(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op not in STATION_OPS:
            return control.node_handler(self.nodes)(request)
        args: dict[str, Any] = request.get("args") or {}
        match op:
            case "estop":
                return self._estop(bool(args.get("pressed")))
            case "meter":
                return self._meter(args)
            case "grid":
                return self._grid(args.get("amps"))
            case "pv":
                return self._pv(args.get("kw"))
            case "camera":
                return self._camera(str(args.get("code", "")), args.get("bay"))
            case "disk":
                return await self._disk(str(args.get("action")))
        return self.status()

    # ------------------------------------------------------------------ ops

    def _estop(self, pressed: bool) -> dict[str, Any]:
        if self.estop is None:
            raise ControlError("This simulation has no emergency-stop button ([gpio] names none).")
        self.estop.set(pressed)
        said = (
            "Emergency stop pressed: every relay goes off and every session stops."
            if pressed
            else "Emergency stop released (the station stays stopped until an owner clears it)."
        )
        return {"said": said, "pressed": pressed}

    def _require_site(self) -> SimSite:
        if self.site is None or not self.site.meters:
            raise ControlError("This simulation has no simulated meters.")
        return self.site

    def _meter(self, args: dict[str, Any]) -> dict[str, Any]:
        site = self._require_site()
        name = str(args.get("name") or "grid")
        sim = site.meters.get(name)
        if sim is None:
            have = ", ".join(sorted(site.meters))
            raise ControlError(f"There is no meter {name!r} in this simulation (meters: {have}).")
        fault = str(args.get("fault", "none"))
        delay = float(args.get("delay_s", 0.0) or 0.0)
        if fault == "slow":
            if not 0 < delay <= 60:
                raise ControlError("A slow meter needs a delay between 0 and 60 seconds.")
            sim.set_fault(Fault.NONE)
            sim.answer_delay_s = delay
            return {"said": f"Meter {name} answers every request after {delay:g} s."}
        try:
            kind = Fault(fault)
        except ValueError:
            kinds = ", ".join([*(f.value for f in Fault), "slow"])
            raise ControlError(f"Unknown meter fault {fault!r} (one of: {kinds}).") from None
        code = args.get("code")
        if code is not None and not 1 <= int(code) <= 255:
            raise ControlError("A Modbus exception code is a number from 1 to 255.")
        sim.set_fault(kind, exception_code=None if code is None else int(code))
        sim.answer_delay_s = 0.0
        said = {
            Fault.NONE: f"Meter {name} answers normally again.",
            Fault.SILENT: f"Meter {name} no longer answers.",
            Fault.GARBAGE: f"Meter {name} answers garbage bytes.",
            Fault.EXCEPTION: f"Meter {name} answers Modbus exception code {sim.exception_code}.",
            Fault.ZEROS: f"Meter {name} answers all registers as zero.",
        }[kind]
        return {"said": said}

    def _grid(self, amps: Any) -> dict[str, Any]:
        site = self._require_site()
        if amps is None:
            site.set_building_load(None)
            return {"said": "The building's load follows its daily curve again."}
        values = [float(a) for a in (amps if isinstance(amps, list) else [amps] * 3)]
        if len(values) != 3 or not all(0 <= a <= 1000 for a in values):
            raise ControlError("The building's load is one or three currents from 0 to 1000 A.")
        site.set_building_load((values[0], values[1], values[2]))
        per = " / ".join(f"{a:g}" for a in values)
        return {"said": f"The building now draws {per} A on L1 / L2 / L3 (without the bays)."}

    def _pv(self, kw: Any) -> dict[str, Any]:
        site = self._require_site()
        if not site.has_pv():
            raise ControlError("This simulation has no PV: start simulate with --pv-kw KW.")
        if kw is None:
            site.set_pv(None)
            return {"said": f"The PV follows the sun again ({site.pv_kw:g} kW peak)."}
        value = float(kw)
        if not 0 <= value <= 1000:
            raise ControlError("The PV's power is from 0 to 1000 kW.")
        site.set_pv(value)
        return {"said": f"The PV now produces {value:g} kW."}

    def _camera(self, code: str, bay: Any) -> dict[str, Any]:
        if self.camera is None or self.station is None:
            raise ControlError("This simulation has no camera running yet.")
        if not code.strip():
            raise ControlError("Say which code the camera sees (the text of the QR code).")
        if bay is not None and str(bay) not in self.station.bays:
            have = ", ".join(sorted(self.station.bays))
            raise ControlError(f"There is no bay {bay!r} at this station (bays: {have}).")
        self.station.commands.focus_bay(None if bay is None else str(bay), seconds=5.0)
        self.camera.show(code.strip(), seconds=3.0)
        where = f"in front of {bay}" if bay is not None else "(the code names its bay)"
        return {"said": f"The camera shows the code {code.strip()!r} {where}."}

    async def _disk(self, action: str) -> dict[str, Any]:
        if action == "full":
            try:
                written = await asyncio.to_thread(disk.fill, self.journal_dir)
            except disk.DiskError as err:
                raise ControlError(str(err)) from None
            return {
                "said": f"The journal's disk is full ({written / 1e6:.1f} MB written).",
                "written": written,
            }
        if action == "free":
            freed = await asyncio.to_thread(disk.free, self.journal_dir)
            if not freed:
                return {"said": "The journal's disk was not filled: nothing to free."}
            return {"said": f"The journal's disk has {freed / 1e6:.1f} MB free again."}
        raise ControlError("Say 'full' or 'free'.")

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.info,
            "nodes": control.apply(self.nodes, {"op": "state"}),
            "disk_free_bytes": disk.free_bytes(self.journal_dir),
            "estop_pressed": None if self.estop is None else self.estop.pressed,
        }
        if self.site is not None:
            out["meters"] = {
                name: {"fault": m.fault.value, "answer_delay_s": m.answer_delay_s, "port": m.port}
                for name, m in self.site.meters.items()
            }
        return out
