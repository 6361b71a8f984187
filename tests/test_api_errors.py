"""Dates outside 1970–2100 are a clear 422; the OpenAPI schema documents every error status."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from tests.test_api_rig import api_client, running_station, setup_owner

OUT_OF_RANGE = [
    ("/api/v1/stats/monthly?until=0001-01-01T00:04:00Z", "end"),
    ("/api/v1/stats/monthly?until=9999-12-31T23:59:59", "end"),
    ("/api/v1/sessions?since=0001-01-01", "start"),
    ("/api/v1/sessions?since=0001-01-01T00:00:00Z", "start"),
    ("/api/v1/sessions?until=9999-12-31T23:59:59%2B14:00", "end"),
    ("/api/v1/sessions?since=1969-12-31T12:00:00", "start"),
    ("/api/v1/sessions?since=2101-01-01", "start"),
    ("/api/v1/sessions.csv?since=0001-01-01", "start"),
    ("/api/v1/sessions.csv?until=0001-01-02T00:00:00-12:00", "end"),
]

ERROR_STATUSES = {"400", "401", "403", "404", "409", "413", "422", "429"}


@pytest.mark.parametrize(("url", "which"), OUT_OF_RANGE)
async def test_dates_outside_1970_to_2100_are_a_clear_422(
    tmp_path: Path, url: str, which: str
) -> None:
    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station)
        await setup_owner(client)
        r = await client.get(url)
        assert r.status_code == 422, (url, r.status_code, r.text[:300])
        body = r.json()
        assert body["error"] == "date_out_of_range"
        assert body["message"] == f"The {which} date must lie between 1970 and 2100.", body


async def test_dates_at_the_edges_of_the_range_work(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station)
        await setup_owner(client)
        for url in (
            "/api/v1/sessions?since=1970-01-01T00:00:00Z&until=2100-12-31T23:59:59Z",
            "/api/v1/stats/monthly?until=1970-01-02T00:00:00Z&months=120",
            "/api/v1/stats/monthly?until=2100-12-31T00:00:00&months=3",
        ):
            r = await client.get(url)
            assert r.status_code == 200, (url, r.text[:300])
        r = await client.get("/api/v1/sessions.csv?since=1970-01-01&until=2100-12-31")
        assert r.status_code == 200
        assert next(csv.reader(io.StringIO(r.text)))[0] == "session_id"
        r = await client.post(
            "/api/v1/bookings",
            json={"bay_id": "locker1", "token": "5678", "start_at": 4_200_000_000.0},
        )
        assert r.status_code == 422, r.text  # a booking in 2103
        r = await client.post(
            "/api/v1/bookings",
            json={"bay_id": "locker1", "token": "5678", "start_at": time.time() + 3600},
        )
        assert r.status_code == 201, r.text


async def test_every_error_status_is_in_the_openapi_schema(tmp_path: Path) -> None:
    async with running_station(tmp_path) as rig:
        client = await api_client(rig.station)
        schema = (await client.get("/api/v1/openapi.json")).json()
        missing = {}
        for path, ops in schema["paths"].items():
            for method, op in ops.items():
                gap = ERROR_STATUSES - set(op["responses"])
                if gap:
                    missing[f"{method.upper()} {path}"] = sorted(gap)
                for status in ERROR_STATUSES & set(op["responses"]):
                    ref = op["responses"][status]["content"]["application/json"]["schema"]
                    assert ref == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
        assert not missing, missing
        assert len(schema["paths"]) >= 20
