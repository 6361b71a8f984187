"""The installer's checklist (Network → Limits → Tests → Connect → Report) and the
commissioning report built from it, as PDF and CSV.

Each step has a state (``passed``, ``failed``, ``todo`` or ``skipped``) and a
sentence saying why; the report adds the station's and bays' identity, the
nodes' firmware, the limits with the safe-share proof per circuit and phase,
every installer test with its measured result, the central system's
connection, the date and the installer. Nothing here drives an output: the
tests themselves run in :mod:`local_ui.installer`.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass, field
from typing import Any

from controller.core.loadloop import load_manager_config
from controller.core.station import Station
from controller.load import check_safe_shares
from controller.load.model import MAIN_ID, PHASES
from local_ui.installer import InstallerTests, TestRun
from local_ui.reports_pdf import Column, Document, local_time

STEPS = ("network", "limits", "tests", "connect", "report")
TITLES = {
    "network": "Network",
    "limits": "Limits",
    "tests": "Tests",
    "connect": "Connect",
    "report": "Report",
}


@dataclass
class Step:
    key: str
    state: str  # passed | failed | todo | skipped
    result: str  # a sentence
    details: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": TITLES[self.key],
            "state": self.state,
            "result": self.result,
            "details": self.details,
        }


@dataclass
class Checklist:
    station_id: str
    station_name: str
    created_at: float
    installer: str
    steps: list[Step]
    bays: list[dict[str, Any]]
    limits: list[tuple[str, str]]
    proof: list[dict[str, Any]]
    tests: list[dict[str, Any]]

    def view(self) -> dict[str, Any]:
        return {
            "station_id": self.station_id,
            "station_name": self.station_name,
            "created_at": self.created_at,
            "installer": self.installer,
            "ready": all(s.state in ("passed", "skipped") for s in self.steps),
            "steps": [s.view() for s in self.steps],
            "bays": self.bays,
            "limits": [{"what": k, "value": v} for k, v in self.limits],
            "proof": self.proof,
            "tests": self.tests,
        }


def _amps(v: tuple[float, ...] | list[float]) -> str:
    return " / ".join(f"{x:g}" for x in v) + " A"


def _network(station: Station) -> tuple[Step, list[dict[str, Any]]]:
    bays: list[dict[str, Any]] = []
    offline: list[str] = []
    for rt in station.bays.values():
        stats = rt.node.stats() if rt.node is not None else None
        online = bool(rt.state.node_online)
        if not online:
            offline.append(rt.cfg.id)
        bays.append(
            {
                "bay_id": rt.cfg.id,
                "connector": rt.cfg.connector,
                "kind": rt.cfg.kind,
                "node_id": rt.cfg.node_id,
                "firmware": rt.firmware or (stats.firmware if stats else "") or "unknown",
                "max_current_a": rt.cfg.max_current_a,
                "phases": rt.cfg.phases,
                "online": online,
            }
        )
    n = len(bays)
    if not bays:
        step = Step("network", "failed", "No bay is configured.")
    elif offline:
        step = Step(
            "network",
            "failed",
            f"{n - len(offline)} of {n} bay nodes answer; not answering: {', '.join(offline)}."
            " Check their cables or network and power.",
        )
    else:
        step = Step("network", "passed", f"All {n} bay nodes answer.")
    return step, bays


def _limits(station: Station) -> tuple[Step, list[tuple[str, str]], list[dict[str, Any]]]:
    lcfg = load_manager_config(station.cfg)
    if lcfg is None:
        step = Step(
            "limits",
            "failed",
            "No site limits are configured, so nothing keeps the chargers within the main"
            " breaker. Enter the main breaker's limit in the settings.",
        )
        return step, [("Load management", "off (no site limits)")], []
    site = lcfg.site
    limits = [
        ("Main breaker limit", _amps(site.main_limit_a)),
        ("Guaranteed headroom without a meter", _amps(site.main_guaranteed_headroom_a)),
        ("Reserve", _amps(site.main_reserve_a)),
        ("Supply phases", str(site.phases)),
        ("Grid meter timeout", f"{site.grid_meter_timeout_s:g} s"),
    ]
    for c in site.circuits:
        limits.append((f"Circuit {c.id} limit", _amps(c.limit_a)))
    for b in lcfg.bays:
        limits.append((f"Bay {b.id} safe share", f"{b.safe_current_a:g} A"))
    proof = _proof(lcfg.site, lcfg.bays)
    errors = check_safe_shares(lcfg.site, lcfg.bays)
    if errors:
        step = Step(
            "limits",
            "failed",
            "The bays' safe shares do not fit the guaranteed headroom: lower a bay's safe"
            " share or raise the guaranteed headroom where the proof shows a problem.",
        )
    else:
        step = Step(
            "limits",
            "passed",
            "The main limit is set and the safe shares fit the guaranteed headroom on every"
            " circuit and phase, so the site stays within its limits without the controller.",
        )
    step.details = proof
    return step, limits, proof


def _proof(site: Any, bays: Any) -> list[dict[str, Any]]:
    """Per circuit (and the main breaker) and phase: Σ safe shares against the headroom."""
    headroom = {MAIN_ID: site.main_guaranteed_headroom_a}
    headroom.update({c.id: c.guaranteed_headroom_a for c in site.circuits})
    sums = {node: [0.0, 0.0, 0.0] for node in headroom}
    for bay in bays:
        if bay.safe_current_a <= 0:
            continue
        try:
            path = site.path_to_main(bay.circuit_id)
        except KeyError:
            continue  # check_safe_shares reports it
        for node, _limit in path:
            for p in bay.loaded_phases():
                sums[node][p] += bay.safe_current_a
    rows = []
    for node, per_phase in sums.items():
        for p in range(site.phases):
            total, head = per_phase[p], headroom[node][p]
            rows.append(
                {
                    "where": "main breaker" if node == MAIN_ID else f"circuit {node}",
                    "phase": PHASES[p],
                    "safe_shares_a": round(total, 2),
                    "headroom_a": round(head, 2),
                    "fits": total <= head + 1e-9,
                }
            )
    return rows


def test_row(run: TestRun) -> dict[str, Any]:
    steps = []
    for s in run.steps:
        steps.append(
            {
                "step": s.get("step"),
                "commanded_a": s.get("commanded_a"),
                "measured_a": s.get("measured_a"),
                "ok": bool(s.get("ok")),
            }
        )
    measured = [s["measured_a"] for s in steps if s["measured_a"] is not None]
    return {
        "bay_id": run.bay_id,
        "action": run.action,
        "state": run.state,
        "message": run.message,
        "at": run.finished_at or run.started_at,
        "actor": run.actor,
        "steps": steps,
        "measured": ", ".join(
            f"{s['commanded_a']:g} A -> {s['measured_a']:.1f} A"
            for s in steps
            if s["commanded_a"] is not None and s["measured_a"] is not None
        )
        or ("no current measured" if run.action == "ramp" and not measured else ""),
    }


TEST_NAMES = {
    "ramp": "current ramp",
    "relay_on": "relay test",
    "relay_off": "relay off",
    "lock": "lock test",
    "unlock": "unlock test",
}


def test_name(action: str) -> str:
    return TEST_NAMES.get(action, action.replace("_", " "))


def _needed(kind: str) -> tuple[str, ...]:
    return ("unlock", "lock", "relay_on") if kind == "locker" else ("ramp",)


def _tests(station: Station, installer: InstallerTests) -> tuple[Step, list[dict[str, Any]]]:
    runs = [r for r in installer.recent() if r.state != "running"]
    rows = [test_row(r) for r in reversed(runs)]  # oldest first
    missing: list[str] = []
    failing: list[str] = []
    for rt in station.bays.values():
        for action in _needed(rt.cfg.kind):
            latest = next((r for r in runs if r.bay_id == rt.cfg.id and r.action == action), None)
            label = f"{test_name(action)} on {rt.cfg.id}"
            if latest is None:
                missing.append(label)
            elif latest.state != "passed":
                failing.append(label)
    if failing:
        step = Step(
            "tests",
            "failed",
            f"These tests failed last time: {', '.join(failing)}. See each test's result,"
            " fix the cause and run it again.",
        )
    elif missing:
        step = Step("tests", "todo", f"Still to run: {', '.join(missing)}.")
    else:
        step = Step("tests", "passed", "Every bay passed its tests with measured currents.")
    step.details = rows
    return step, rows


def _connect(station: Station) -> Step:
    up = station.upstream
    if up is None:
        return Step(
            "connect",
            "skipped",
            "No central system is configured: the station works on its own.",
        )
    if up.online:
        return Step("connect", "passed", "The station is connected to its central system.")
    return Step(
        "connect",
        "failed",
        "The station cannot reach its central system: check the address, the credentials"
        " and the internet connection.",
    )


def checklist(station: Station, installer: InstallerTests, who: str) -> Checklist:
    net, bays = _network(station)
    lim, limits, proof = _limits(station)
    tests, rows = _tests(station, installer)
    conn = _connect(station)
    steps = [net, lim, tests, conn]
    open_steps = [TITLES[s.key] for s in steps if s.state not in ("passed", "skipped")]
    if open_steps:
        report = Step(
            "report",
            "todo",
            f"Finish {', '.join(open_steps)} first; the report can be exported meanwhile as a"
            " record of where things stand.",
        )
    else:
        report = Step("report", "passed", "Every step passed: export the report for the owner.")
    return Checklist(
        station_id=station.cfg.station.id,
        station_name=station.cfg.station.name,
        created_at=station.clock.wall(),
        installer=who,
        steps=[*steps, report],
        bays=bays,
        limits=limits,
        proof=proof,
        tests=rows,
    )


STATE_WORDS = {"passed": "Passed", "failed": "Failed", "todo": "To do", "skipped": "Not used"}


def report_csv(c: Checklist) -> str:
    """The commissioning report as CSV: one row per fact, section first."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(("section", "item", "value", "result"))
    w.writerow(("station", "name", c.station_name, ""))
    w.writerow(("station", "id", c.station_id, ""))
    w.writerow(("station", "date", local_time(c.created_at, "%Y-%m-%d %H:%M"), ""))
    w.writerow(("station", "installer", c.installer, ""))
    for s in c.steps:
        w.writerow(("checklist", TITLES[s.key], s.result, STATE_WORDS[s.state]))
    for b in c.bays:
        w.writerow(
            (
                "bay",
                b["bay_id"],
                f"connector {b['connector']}, {b['kind']}, {b['phases']} phase(s),"
                f" max {b['max_current_a']:g} A, node {b['node_id']}, firmware {b['firmware']}",
                "online" if b["online"] else "offline",
            )
        )
    for k, v in c.limits:
        w.writerow(("limits", k, v, ""))
    for p in c.proof:
        w.writerow(
            (
                "safe share proof",
                f"{p['where']} {p['phase']}",
                f"{p['safe_shares_a']:g} A of {p['headroom_a']:g} A",
                "fits" if p["fits"] else "does not fit",
            )
        )
    for t in c.tests:
        w.writerow(
            (
                "test",
                f"{test_name(t['action'])} on {t['bay_id']}",
                t["measured"] or t["message"],
                STATE_WORDS.get(t["state"], t["state"]),
            )
        )
    return buf.getvalue()


_TEST_COLS = (
    Column("Bay", 22),
    Column("Test", 26),
    Column("When", 30),
    Column("Measured (commanded -> measured)", 62),
    Column("Result", 40),
)
_PROOF_COLS = (
    Column("Where", 50),
    Column("Phase", 15),
    Column("Safe shares", 30, "R"),
    Column("Guaranteed headroom", 40, "R"),
    Column("Result", 30),
)


async def report_pdf(c: Checklist) -> bytes:
    return await asyncio.to_thread(_report_doc, c)


def _report_doc(c: Checklist) -> bytes:
    doc = Document(c.station_name, "Commissioning report")
    doc.pairs(
        [
            ("Station", f"{c.station_name} ({c.station_id})"),
            ("Date", local_time(c.created_at, "%Y-%m-%d %H:%M")),
            ("Installer", c.installer),
            ("Ready for use", "Yes" if c.view()["ready"] else "Not yet"),
        ]
    )
    doc.heading("Checklist")
    doc.pairs([(f"{TITLES[s.key]}: {STATE_WORDS[s.state]}", s.result) for s in c.steps], 45)
    doc.heading("Bays")
    doc.rows_table(
        (
            Column("Bay", 25),
            Column("Connector", 20, "R"),
            Column("Kind", 18),
            Column("Phases", 15, "R"),
            Column("Max A", 15, "R"),
            Column("Firmware", 50),
            Column("Node", 20),
            Column("Online", 15),
        ),
        [
            [
                b["bay_id"],
                b["connector"],
                b["kind"],
                b["phases"],
                f"{b['max_current_a']:g}",
                b["firmware"],
                b["node_id"],
                "yes" if b["online"] else "no",
            ]
            for b in c.bays
        ],
    )
    doc.heading("Limits")
    doc.pairs(c.limits, 70)
    if c.proof:
        doc.heading("Safe-share proof")
        doc.paragraph(
            "When the controller or its meter fails, every node falls back to its safe"
            " share. The sum of the safe shares must fit the headroom guaranteed without a"
            " meter on every circuit and phase."
        )
        doc.rows_table(
            _PROOF_COLS,
            [
                [
                    p["where"],
                    p["phase"],
                    f"{p['safe_shares_a']:g} A",
                    f"{p['headroom_a']:g} A",
                    "fits" if p["fits"] else "does not fit",
                ]
                for p in c.proof
            ],
        )
    doc.heading("Tests")
    if c.tests:
        doc.rows_table(
            _TEST_COLS,
            [
                [
                    t["bay_id"],
                    test_name(t["action"]),
                    local_time(t["at"]),
                    t["measured"],
                    STATE_WORDS.get(t["state"], t["state"])
                    + (f": {t['message']}" if t["message"] else ""),
                ]
                for t in c.tests
            ],
        )
        doc.heading("Test results in full")
        for t in c.tests:
            said = ". ".join(x.rstrip(".") for x in (t["measured"], t["message"]) if x)
            when = local_time(t["at"])
            doc.paragraph(f"{when}, {test_name(t['action'])} on {t['bay_id']}: {said or 'done'}.")
    else:
        doc.paragraph("No installer test has been run since the station started.")
    doc.legend(
        (
            ("Passed", "The step's checks hold, with the values shown."),
            ("Failed", "A check does not hold: the sentence says what to fix."),
            ("To do", "Something in this step has not been done yet."),
            ("Not used", "The station is set up without this part."),
            ("Measured", "Current the bay measured at each commanded current of a ramp."),
        )
    )
    return bytes(doc.output())
