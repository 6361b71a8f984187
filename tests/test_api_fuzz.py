"""Malformed and fuzzed requests: always a 4xx JSON answer, never a 5xx; schemathesis on the schema."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.test_api_rig import PASSWORD, api_client, running_station, setup_owner

MAX_EXAMPLES = int(os.environ.get("UI_FUZZ_EXAMPLES", "12"))
# Logging out or changing one's own password would end the fuzzer's login.
SKIP = {("POST", "/api/v1/auth/logout"), ("POST", "/api/v1/auth/password")}

MALFORMED: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/v1/bays/bay1/token", {"content": b"{not json"}),
    ("POST", "/api/v1/bays/bay1/token", {"content": b"\xff\xfe\x00garbage"}),
    ("POST", "/api/v1/bays/bay1/token", {"json": []}),
    ("POST", "/api/v1/bays/bay1/token", {"json": {"token": ""}}),
    ("POST", "/api/v1/bays/bay1/token", {"json": {"token": "x" * 10_000}}),
    ("POST", "/api/v1/bays/bay1/token", {"json": {"token": "12 34"}}),
    ("POST", "/api/v1/bays/bay1/token", {"json": {"token": "1234", "mode": "turbo"}}),
    ("POST", "/api/v1/bays/bay1/token", {"json": {"token": "1234", "extra": 1}}),
    (
        "POST",
        "/api/v1/bays/bay1/token",
        {
            "content": b"token=1234",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
        },
    ),
    ("POST", "/api/v1/bays/bay1/token", {"content": b"x" * 200_000}),
    ("POST", "/api/v1/bays/%00%ff/token", {"json": {"token": "1234"}}),
    ("GET", "/api/v1/sessions?limit=-1", {}),
    ("GET", "/api/v1/sessions?limit=abc", {}),
    ("GET", "/api/v1/sessions?since=yesterday", {}),
    ("GET", "/api/v1/sessions?offset=99999999999999999999999", {}),
    ("GET", "/api/v1/sessions?stop_reason=Nope", {}),
    ("GET", "/api/v1/sessions/" + "a" * 5000, {}),
    ("GET", "/api/v1/stats/monthly?months=0", {}),
    ("GET", "/api/v1/stats/monthly?until=0001-01-01T00:04:00Z", {}),
    ("GET", "/api/v1/stats/monthly?until=9999-12-31T23:59:59-14:00", {}),
    ("GET", "/api/v1/sessions?since=0001-01-01", {}),
    ("GET", "/api/v1/sessions.csv?since=0001-01-01", {}),
    ("GET", "/api/v1/sessions.csv?until=9999-12-31", {}),
    ("PATCH", "/api/v1/settings/tariff", {"json": {"per_kwh": "free"}}),
    ("PATCH", "/api/v1/settings/tariff", {"json": {"currency": "EURO"}}),
    ("PATCH", "/api/v1/settings/tariff", {"json": [1, 2]}),
    ("PATCH", "/api/v1/settings/kiosk", {"json": {"idle_timeout_s": 1e308}}),
    ("DELETE", "/api/v1/bays", {}),
    ("PUT", "/api/v1/sessions", {}),
    ("GET", "/api/v1/nope", {}),
    ("GET", "/api/v1/kiosk/sessions/x/receipt", {}),
    ("POST", "/api/v1/kiosk/bays/bay1/stop", {"json": {"session_id": "x"}}),
    ("POST", "/api/v1/holds", {"json": {"bay_id": "bay1", "token": "1", "duration_s": -5}}),
    ("POST", "/api/v1/diagnostics/bays/bay1/test", {"json": {"action": "explode"}}),
    ("POST", "/api/v1/auth/login", {"json": {"username": "", "password": ""}}),
]


async def test_malformed_requests_get_4xx_json(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station)
        await setup_owner(client)
        for method, url, kw in MALFORMED:
            r = await client.request(method, url, **kw)
            assert 400 <= r.status_code < 500, (method, url, r.status_code, r.text[:200])
            body = r.json()
            assert isinstance(body["error"], str) and isinstance(body["message"], str), body


async def test_random_bodies_never_5xx(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station)
        await setup_owner(client)
        loop = asyncio.get_running_loop()
        targets = ["/api/v1/bays/bay1/token", "/api/v1/holds", "/api/v1/kiosk/bays/locker1/token"]
        json_values = st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=20),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
            max_leaves=10,
        )

        @settings(max_examples=MAX_EXAMPLES * 3, deadline=None, database=None)
        @given(url=st.sampled_from(targets), body=json_values | st.binary(max_size=64))
        def check(url: str, body: Any) -> None:
            kw = {"content": body} if isinstance(body, bytes) else {"json": body}
            r = asyncio.run_coroutine_threadsafe(client.post(url, **kw), loop).result(10)
            assert 200 <= r.status_code < 500, r.text
            if r.status_code >= 400:
                assert "error" in r.json()

        await asyncio.to_thread(check)


async def owner_client(rig: Any) -> httpx.AsyncClient:
    """A browser that logged in as the owner through /auth/login with the CSRF pair."""
    first = await api_client(rig.station)
    await setup_owner(first)
    client = httpx.AsyncClient(transport=first._transport, base_url="http://station.test")
    await client.get("/api/v1/auth/csrf")  # sets the es_csrf cookie
    client.headers["X-CSRF-Token"] = client.cookies["es_csrf"]
    r = await client.post("/api/v1/auth/login", json={"username": "owner", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return client


async def run_schemathesis(tmp_path: Path, examples: int) -> dict[str, set[int]]:
    """Every operation of the schema, ``examples`` cases each, as the logged-in owner.

    Returns the statuses seen per operation; a 5xx or a response outside the
    schema fails the case.
    """
    async with running_station(tmp_path) as rig:
        client = await owner_client(rig)
        raw = (await client.get("/api/v1/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(raw)
        loop = asyncio.get_running_loop()
        seen: dict[str, set[int]] = {}
        checks = [
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]

        def send(case: Any) -> httpx.Response:
            kw = case.as_transport_kwargs(base_url="http://station.test")
            req: dict[str, Any] = {
                "method": kw["method"],
                "url": kw["url"],
                "params": kw.get("params"),
                # The login cookie and the CSRF header are the client's own.
                "headers": {
                    k: v
                    for k, v in (kw.get("headers") or {}).items()
                    if k.lower() not in ("cookie", "x-csrf-token")
                },
            }
            if "json" in kw:
                req["json"] = kw["json"]
            elif kw.get("data") is not None:
                req["content"] = kw["data"]
            r = asyncio.run_coroutine_threadsafe(client.request(**req), loop).result(10)
            seen.setdefault(f"{case.method.upper()} {case.path}", set()).add(r.status_code)
            return r

        def run_all() -> None:
            for result in schema.get_all_operations():
                op = result.ok()  # type: ignore[union-attr]
                if (op.method.upper(), op.path) in SKIP:
                    continue

                @settings(
                    max_examples=examples,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=op.as_strategy())
                def run(case: Any) -> None:
                    case.validate_response(send(case), checks=checks)

                run()

        await asyncio.to_thread(run_all)
        return seen


def _check_coverage(seen: dict[str, set[int]]) -> None:
    assert len(seen) >= 20
    assert not any(s >= 500 for statuses in seen.values() for s in statuses), seen
    # Logged in as the owner: owner-only reads answer, not 401.
    for op in ("GET /api/v1/users", "GET /api/v1/settings", "GET /api/v1/audit"):
        assert 200 in seen[op], (op, seen[op])


async def test_schemathesis_no_5xx_no_schema_violations(tmp_path: Path) -> None:
    _check_coverage(await run_schemathesis(tmp_path, MAX_EXAMPLES))


@pytest.mark.long
@pytest.mark.timeout(3600)
async def test_schemathesis_long_run(tmp_path: Path) -> None:
    _check_coverage(
        await run_schemathesis(tmp_path, int(os.environ.get("UI_FUZZ_LONG_EXAMPLES", "300")))
    )


@pytest.mark.parametrize(
    "path", ["/kiosk", "/login", "/setup", "/static/kiosk.js", "/api/v1/openapi.json"]
)
async def test_pages_answer(tmp_path: Path, path: str) -> None:
    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station)
        r = await client.get(path, follow_redirects=True)
        assert r.status_code == 200
