"""``edge-station simulate`` in its own process, and ``edge-station sim ...`` against it.

Each ``sim`` command is a real process too (as a developer types it); what it
did is checked through the station's own outputs: the kiosk state, ``/healthz``,
the log and the journal. Another process's state can only be polled, so
``until`` polls with a deadline (never a bare sleep).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.support.procs import EDGE_STATION, Proc, free_port, kiosk_call

T = TypeVar("T")


@dataclass
class SimResult:
    rc: int
    out: str


@dataclass
class SimStation:
    data: Path
    port: int
    proc: Proc
    extra: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sim(self, *args: str, timeout: float = 120.0) -> SimResult:
        """``edge-station sim --dir DATA ARGS...`` as a developer runs it."""
        done = subprocess.run(
            [EDGE_STATION, "sim", "--dir", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return SimResult(done.returncode, (done.stdout + done.stderr).strip())

    def ok(self, *args: str) -> str:
        r = self.sim(*args)
        assert r.rc == 0, f"sim {' '.join(args)} failed ({r.rc}): {r.out}"
        return r.out

    def state(self) -> dict[str, Any]:
        return kiosk_call("GET", f"{self.base}/api/v1/kiosk/state")[1]

    def bay(self, bay_id: str) -> dict[str, Any]:
        for b in self.state().get("bays", []):
            if b["id"] == bay_id:
                return dict(b)
        return {}

    def health(self) -> dict[str, Any]:
        return kiosk_call("GET", f"{self.base}/healthz")[1]

    def until(self, pred: Callable[[], T], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                tail = "\n".join(self.proc.log.raw[-25:])
                raise AssertionError(f"{what} not seen within {timeout} s; last lines:\n{tail}")
            time.sleep(0.2)  # another process's state: polled

    def journal(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        con = sqlite3.connect(f"file:{self.data / 'journal.sqlite3'}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        try:
            rows = [dict(r) for r in con.execute(sql, params)]
        finally:
            con.close()
        for r in rows:
            for key in ("data", "detail"):
                if isinstance(r.get(key), str):
                    r[key] = json.loads(r[key])
        return rows

    def stop(self) -> int:
        return self.proc.terminate(30)


def start_simulation(data: Path, args: Sequence[str], *, ready_s: float = 90.0) -> SimStation:
    """Start ``simulate`` (its own free HTTP port) and wait until every bay's node is online."""
    port = free_port()
    proc = Proc(
        [EDGE_STATION, "simulate", "--http-port", str(port), "--data-dir", str(data), *args]
    )
    st = SimStation(data, port, proc, list(args))
    try:
        st.until(
            lambda: (bays := st.state().get("bays")) and all(b["node_online"] for b in bays),
            ready_s,
            "every bay online",
        )
    except BaseException:
        proc.kill()
        raise
    return st
