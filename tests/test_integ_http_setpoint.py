"""External limits over HTTP: a real client against the station's own small server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from controller.core.config import parse_config
from controller.registry import load
from drivers.setpoint.extension import TRANSPORTS
from tests.support.integ import audit_rows, config, running_station

TOKEN = "hems-token-0123456789abcdef"


def external(tmp: Path) -> dict[str, object]:
    f = tmp / "hems.token"
    f.write_text(TOKEN + "\n", encoding="utf-8")
    return {"lease_s": 5, "http": {"host": "127.0.0.1", "port": 0, "token_file": str(f)}}


async def test_a_limit_posted_over_http_is_applied_and_bad_requests_change_nothing(
    tmp_path: Path,
) -> None:
    async with running_station(tmp_path, external=external(tmp_path)) as (st, hub):
        server = TRANSPORTS[st]["http"]
        await asyncio.wait_for(server.ready.wait(), 10)
        node = hub.nodes["b1"]
        auth = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            r = await c.post("/limit/site", json={"a": 12}, headers=auth)
            assert r.status_code == 200 and r.json() == {"ok": True, "limit_a": 12.0}
            await node.wait_output(lambda o: o[1] == 12.0, timeout=5)
            r = await c.post("/limit/site", json={"a": 7.25}, headers=auth)
            t0 = time.monotonic()
            await node.wait_output(lambda o: o[1] == 7.2, timeout=3)  # floored, never rounded up
            assert time.monotonic() - t0 < 1.0
            bad = [
                await c.post("/limit/site", json={"a": 3}),  # no token
                await c.post("/limit/site", json={"a": 3}, headers={"authorization": "Bearer x"}),
                await c.post("/limit/site", content=b"\x00garbage", headers=auth),
                await c.post("/limit/site", json={"a": 3, "b": 1}, headers=auth),
                await c.post("/limit/site", json={"a": 1e6}, headers=auth),
                await c.post("/limit/nobay", json={"a": 3}, headers=auth),
                await c.post("/limit/site", content=b"1" * 5000, headers=auth),
            ]
            assert [r.status_code for r in bad] == [401, 401, 422, 422, 422, 422, 422]
            assert "plausible" in bad[4].json()["message"]
            state = (await c.get("/limit", headers=auth)).json()
            assert state["site_a"] == 7.2 and state["site_source"] == "http"
            r = await c.post("/grid_operator", json={"active": True}, headers=auth)
            assert r.status_code == 200
            await node.wait_output(lambda o: o[1] == 6.0, timeout=3)
        assert node.outputs[-1][1] == 6.0
        kinds = [r["kind"] for r in await audit_rows(st, "external")]
        assert kinds.count("refused") == 2 and "grid_operator_on" in kinds


def test_check_config_names_what_is_wrong_with_the_external_section(tmp_path: Path) -> None:
    ext = load("edge_station.extensions", "setpoint")
    short = tmp_path / "short.token"
    short.write_text("abc", encoding="utf-8")
    cases = {
        "external.lease_s: Input should be greater than or equal to 5": {"lease_s": 1},
        "external.http.token_file: the token must be at least 16": {
            "http": {"token_file": str(short)}
        },
        "external.http.token_file: " + str(tmp_path / "none"): {
            "http": {"token_file": str(tmp_path / "none")}
        },
        "external.mqtt: needs the broker's [mqtt] section": {"mqtt": {}},
        "external.modbus.port": {"modbus": {"port": 70000}},
        "external.colour: Extra inputs are not permitted": {"colour": "red"},
    }
    for expected, section in cases.items():
        problems = ext.check(parse_config(config(tmp_path, 1, external=section)))
        assert any(p.startswith(expected) for p in problems), (expected, problems)
    no_site = config(tmp_path, 1, external={})
    del no_site["site"]
    assert ext.check(parse_config(no_site)) == [
        "external: external limits need load management; add a [site] section"
    ]
    assert ext.check(parse_config(config(tmp_path, 1))) == []  # absent: today's behaviour
