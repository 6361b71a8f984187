"""Local API latency under 50 concurrent clients: httpx against a real uvicorn on loopback.

The station (real Station + Journal, self-driving fake nodes, 4 bays, 500 past
sessions) and uvicorn run in a child process, so the load generator does not
share their event loop. Mix per request: 60 % GET /api/v1/bays, 20 % GET
/api/v1/station, 20 % GET /api/v1/sessions?limit=20 (with the total count).

Run: ``.venv/bin/pytest -m bench tests/bench/bench_api.py``. Target: p99 < 1 s
at 50 clients (no think time: the queue, not the handler, makes the
latency; see ``single_client_*`` for one request at a time, target p99 < 50 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.bench.report import metric, percentile, write_report

CLIENTS = 50
REQUESTS_PER_CLIENT = 40
PASSWORD = "correct horse battery"
ROOT = str(Path(__file__).resolve().parents[2])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(port: int, data: Path) -> None:
    """Child process: a station with 4 bays and a session history, served until killed."""
    from controller.ops.logs import setup_logging
    from local_ui.server import create_app, serve_app
    from tests.test_api_rig import running_station

    setup_logging("WARNING")
    bays = [
        {"id": f"bay{i}", "connector": i, "kind": "evse", "bus": "bus1", "address": i}
        for i in range(1, 5)
    ]
    async with running_station(data, bays=bays) as rig:
        now = time.time()
        for i in range(500):
            await rig.journal.execute_write(
                "INSERT INTO sessions(id, bay_id, connector, token, auth_source, mode, state,"
                " started_at, stopped_at, meter_start_wh, meter_stop_wh, meter_wh, energy_wh,"
                " tariff, cost, currency, stop_reason) VALUES"
                " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    f"hist{i:04d}",
                    f"bay{i % 4 + 1}",
                    i % 4 + 1,
                    "1234",
                    "local",
                    "standard",
                    "closed",
                    now - 3600 * (i + 1),
                    now - 3600 * i - 600,
                    0,
                    5000,
                    5000,
                    5000,
                    "{}",
                    1.5,
                    "EUR",
                    "Local",
                ),
            )
        app = create_app(rig.station)
        await app.state.ui.ensure_ready()
        await app.state.ui.accounts.create_user("bench", PASSWORD, "owner")
        app.state.ui.accounts.setup_code = None
        print("READY", flush=True)
        await serve_app(app, "127.0.0.1", port)


async def _client(
    base: str, cookies: httpx.Cookies, n: int, out: list[float], errors: list[int], host: int
) -> None:
    paths = [
        "/api/v1/bays",
        "/api/v1/bays",
        "/api/v1/bays",
        "/api/v1/station",
        "/api/v1/sessions?limit=20",
    ]
    # Fifty owners' phones and laptops on the LAN: each its own address (127.0.0.N), as the
    # station's per-client connection cap expects of real clients.
    transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{host}")
    async with httpx.AsyncClient(base_url=base, cookies=cookies, transport=transport) as http:
        await http.get("/api/v1/auth/csrf")  # open the connection first (not measured)
        for i in range(n):
            t0 = time.perf_counter()
            r = await http.get(paths[i % len(paths)])
            out.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                errors.append(r.status_code)


@pytest.mark.bench
async def test_bench_api_50_clients(tmp_path: Path) -> None:
    # The suite runs loops in debug mode (to catch blocking calls); the load generator must not.
    asyncio.get_running_loop().set_debug(False)
    port = _free_port()
    code = f"import asyncio, pathlib, tests.bench.bench_api as b; asyncio.run(b._serve({port}, pathlib.Path({str(tmp_path)!r})))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while b"READY" not in await proc.stdout.readline():
                pass
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as http:
            async with asyncio.timeout(10):
                token = ""
                while not token:
                    with contextlib.suppress(httpx.TransportError):
                        token = (await http.get("/api/v1/auth/csrf")).json()["csrf_token"]
                        break
                    await asyncio.sleep(0.05)
            http.headers["X-CSRF-Token"] = token
            r = await http.post(
                "/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}
            )
            assert r.status_code == 200, r.text
            cookies = http.cookies
            # Warm-up (imports, first queries), not measured.
            for _ in range(20):
                await http.get("/api/v1/bays")
            single: list[float] = []
            for _ in range(200):
                t = time.perf_counter()
                await http.get("/api/v1/bays")
                single.append((time.perf_counter() - t) * 1000)
        latencies: list[float] = []
        errors: list[int] = []
        t0 = time.perf_counter()
        await asyncio.gather(
            *(
                _client(base, cookies, REQUESTS_PER_CLIENT, latencies, errors, 10 + k)
                for k in range(CLIENTS)
            )
        )
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        await proc.wait()
    assert not errors, errors[:5]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    write_report(
        "api_50_clients",
        {
            "single_client_p50_ms": metric(percentile(single, 50), "ms"),
            "single_client_p99_ms": metric(percentile(single, 99), "ms", target=50.0),
            "p50_ms": metric(p50, "ms"),
            "p99_ms": metric(p99, "ms", target=1000.0),
            "throughput_rps": metric(len(latencies) / wall, "req/s", better="higher"),
        },
        notes={
            "clients": CLIENTS,
            "requests": len(latencies),
            "mix": "60% /bays, 20% /station, 20% /sessions?limit=20 (500 sessions)",
            "server": "uvicorn in a child process, loopback, cookie login",
            "clients_addresses": "one loopback address per client (127.0.0.10...)",
            "connections": "each client opens its keep-alive connection before timing starts "
            "(50 simultaneous TCP connects add a one-off tail of ~0.7 s)",
        },
    )
    assert p99 < 1000
