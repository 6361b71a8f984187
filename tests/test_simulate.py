"""``edge-station simulate`` as a newcomer runs it: two side by side, a session end to end, clean stop."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tests.support.procs import Proc, free_port, kiosk_call

EDGE_STATION = str(Path(sys.executable).with_name("edge-station"))


def _until(pred: Any, timeout: float, what: str, proc: Proc) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)  # polling another process over HTTP: there is no event to await
    raise AssertionError(f"{what} not seen within {timeout} s:\n" + "\n".join(proc.log.raw[-20:]))


def test_two_simulations_side_by_side_run_a_session(tmp_path: Path) -> None:
    sims = []
    for name in ("a", "b"):
        port = free_port()
        proc = Proc(
            [
                EDGE_STATION,
                "simulate",
                "--bays",
                "2",
                "--http-port",
                str(port),
                "--data-dir",
                str(tmp_path / name),
            ]
        )
        sims.append((proc, f"http://127.0.0.1:{port}"))
    try:
        for proc, base in sims:
            _until(
                lambda b=base: kiosk_call("GET", f"{b}/healthz")[0] == 200, 60, "healthz 200", proc
            )
        proc, base = sims[0]
        _until(
            lambda: all(
                x["node_online"]
                for x in kiosk_call("GET", f"{base}/api/v1/kiosk/state")[1].get("bays", [{}])
            ),
            30,
            "bays online",
            proc,
        )
        code, out = kiosk_call(
            "POST", f"{base}/api/v1/kiosk/bays/bay1/token", {"token": "NEWCOMER-1"}
        )
        assert code == 200 and out["code"] == "started", out

        def charging() -> bool:
            bays = kiosk_call("GET", f"{base}/api/v1/kiosk/state")[1].get("bays", [])
            return any(x["id"] == "bay1" and x["status"] == "Charging" for x in bays)

        _until(charging, 30, "bay1 charging", proc)
        # The development CSMS received the transaction through the real OCPP client.
        proc.log.wait_for(lambda ln: "StartTransaction" in str(ln.get("event", "")), 30)
        code, stop = kiosk_call(
            "POST",
            f"{base}/api/v1/kiosk/bays/bay1/stop",
            {"session_id": out["session_id"], "key": out["key"]},
        )
        assert code == 200 and stop["code"] == "stopped", stop
        # The other simulation is independent of this one.
        other = kiosk_call("GET", f"{sims[1][1]}/api/v1/kiosk/state")[1]
        assert all(x["session"] is None for x in other["bays"])
    finally:
        codes = [p.terminate(30) for p, _ in sims]
    assert codes == [0, 0]
