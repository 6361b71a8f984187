"""The installer's checklist and commissioning report (PDF and CSV), from a running station
whose tests really ran (real Station, Journal, installer runner, self-driving fake nodes)."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from pathlib import Path
from typing import Any

import httpx
import pypdf

from controller.load import check_safe_shares
from controller.load.model import BayLoadConfig, SiteConfig
from controller.ports import NodeLink
from local_ui.reports_commissioning import _connect, _proof
from tests.test_api_load import BAYS, SITE, grid_meter
from tests.test_api_rig import add_user, api_client, running_station, setup_owner


async def _run(client: httpx.AsyncClient, bay: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(f"/api/v1/diagnostics/bays/{bay}/test", json=body)
    assert r.status_code in (200, 202), r.text
    run = r.json()
    async with asyncio.timeout(30):
        while run["state"] == "running":
            await asyncio.sleep(0.05)  # a background ramp has no event the client can await
            run = (await client.get(f"/api/v1/diagnostics/tests/{run['id']}")).json()
    return dict(run)


def _steps(c: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {s["key"]: (s["state"], s["result"]) for s in c["steps"]}


async def test_checklist_follows_the_tests_and_the_report_shows_measured_results(
    tmp_path: Path,
) -> None:
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig, grid_meter(rig):
        owner = await api_client(rig.station)
        await setup_owner(owner)
        ian = await add_user(owner, "ian", "installer")
        c = (await ian.get("/api/v1/installer/checklist")).json()
        steps = _steps(c)
        assert [s["title"] for s in c["steps"]] == [
            "Network",
            "Limits",
            "Tests",
            "Connect",
            "Report",
        ]
        assert steps["network"] == ("passed", "All 2 bay nodes answer.")
        assert steps["limits"][0] == "passed"
        assert steps["tests"] == (
            "todo",
            "Still to run: current ramp on bay1, unlock test on locker1, lock test on locker1,"
            " relay test on locker1.",
        )
        assert steps["connect"][0] == "skipped"
        assert steps["report"][0] == "todo" and not c["ready"]
        # The proof as the report shows it: main breaker, each phase, bay1's 6 A of 6 A.
        assert [
            (p["where"], p["phase"], p["safe_shares_a"], p["headroom_a"]) for p in c["proof"]
        ] == [("main breaker", ph, 6.0, 6.0) for ph in ("L1", "L2", "L3")]

        # A ramp with nothing drawing current fails, and the checklist says so.
        failed = await _run(ian, "bay1", {"action": "ramp", "hold_s": 0.1, "current_a": 10})
        assert failed["state"] == "failed"
        steps = _steps((await ian.get("/api/v1/installer/checklist")).json())
        assert steps["tests"][0] == "failed" and "current ramp on bay1" in steps["tests"][1]

        rig.hub.plug("bay1")  # a test load
        passed = await _run(ian, "bay1", {"action": "ramp", "hold_s": 0.1, "current_a": 10})
        assert passed["state"] == "passed", passed
        for action in ("unlock", "lock", "relay_on"):
            run = await _run(ian, "locker1", {"action": action, "hold_s": 0.2})
            assert run["state"] == "passed", run
        c = (await ian.get("/api/v1/installer/checklist")).json()
        assert _steps(c)["tests"][0] == "passed" and c["ready"], c["steps"]

        r = await ian.get("/api/v1/installer/report.pdf")
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        reader = pypdf.PdfReader(io.BytesIO(r.content))
        pages = len(reader.pages)
        text = "\n".join(p.extract_text() for p in reader.pages)
        assert pages >= 1 and f"Page {pages} of {pages}" in text
        for want in (
            "Test Station: Commissioning report",
            "Test Station (ui-test)",
            "ian",
            "Ready for use",
            "fake-1.2.3",  # the nodes' firmware
            "Main breaker limit",
            "32 / 32 / 32 A",
            "Safe-share proof",
            "Legend",
            # the failed ramp and the passed one, with what was measured
            "no current flowed",
            "6 A -> 6.0 A, 8 A -> 8.0 A, 10 A -> 10.0 A",
        ):
            assert want in text, want

        r = await ian.get("/api/v1/installer/report.csv")
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows[0] == ["section", "item", "value", "result"]
        by = {(row[0], row[1]): row for row in rows[1:]}
        assert by[("station", "installer")][2] == "ian"
        assert by[("checklist", "Tests")][3] == "Passed"
        assert by[("safe share proof", "main breaker L2")][2:] == ["6 A of 6 A", "fits"]
        tests = [row for row in rows if row[0] == "test" and row[1] == "current ramp on bay1"]
        assert [t[3] for t in tests] == ["Failed", "Passed"]
        assert tests[1][2] == "6 A -> 6.0 A, 8 A -> 8.0 A, 10 A -> 10.0 A"
        assert by[("bay", "bay1")][2].endswith("firmware fake-1.2.3")

        # A viewer may not export it; nobody logged out may.
        viewer = await add_user(owner, "vic", "viewer")
        assert (await viewer.get("/api/v1/installer/report.pdf")).status_code == 403
        anon = await api_client(rig.station)
        assert (await anon.get("/api/v1/installer/checklist")).status_code == 401


async def test_network_step_names_the_bays_that_do_not_answer(tmp_path: Path) -> None:
    async with running_station(tmp_path, site=SITE, bays=BAYS) as rig:
        owner = await api_client(rig.station)
        await setup_owner(owner)
        rig.hub.nodes.pop("locker1")  # it stops reporting, and its link is declared lost
        rig.hub.emit(NodeLink("locker1", time.monotonic(), online=False, reason="heartbeat lost"))
        await rig.until(lambda: not rig.station.bays["locker1"].state.node_online)
        steps = _steps((await owner.get("/api/v1/installer/checklist")).json())
        assert steps["network"][0] == "failed"
        assert steps["network"][1].startswith("1 of 2 bay nodes answer; not answering: locker1.")


async def test_no_site_limits_fail_the_limits_step(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        owner = await api_client(rig.station)
        await setup_owner(owner)
        steps = _steps((await owner.get("/api/v1/installer/checklist")).json())
        assert steps["limits"][0] == "failed" and "No site limits" in steps["limits"][1]


def test_the_proof_table_agrees_with_the_config_check() -> None:
    site = SiteConfig(
        main_limit_a=(32, 32, 32),
        main_guaranteed_headroom_a=(10, 10, 6),
    )
    bays = [
        BayLoadConfig(id="a", max_current_a=16, safe_current_a=6),
        BayLoadConfig(id="b", phases=1, phase="L1", max_current_a=16, safe_current_a=6),
    ]
    rows = _proof(site, bays)
    assert [(r["phase"], r["safe_shares_a"], r["fits"]) for r in rows] == [
        ("L1", 12.0, False),
        ("L2", 6.0, True),
        ("L3", 6.0, True),
    ]
    assert len(check_safe_shares(site, bays)) == sum(not r["fits"] for r in rows) == 1


def test_connect_step_reads_the_central_system_link() -> None:
    class Up:
        online = False

    class St:
        upstream: Any = None

    st = St()
    assert _connect(st).state == "skipped"  # type: ignore[arg-type]
    st.upstream = Up()
    step = _connect(st)  # type: ignore[arg-type]
    assert step.state == "failed" and "cannot reach its central system" in step.result
    st.upstream.online = True
    assert _connect(st).state == "passed"  # type: ignore[arg-type]
