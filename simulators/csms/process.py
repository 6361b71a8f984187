"""The development CSMS in a child process, for benchmarks.

In-process, the simulator shares the event loop (and so one core) with the
station it measures: every message's server-side work (parsing, schema
validation, the answer) queues behind the station's own. A child process puts
the two sides on their own loops and cores, as with a real central system;
round trips, and so the one-call-in-flight bound, are then measured through
that process too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class CsmsProcess:
    """``python -m simulators.csms --control`` as a child; can go down and come back on one port."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, answer_delay_ms: float = 0.0
    ) -> None:
        self.host = host
        self.port = port
        self.answer_delay_ms = answer_delay_ms
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ocpp"

    async def start(self) -> None:
        """Spawn the simulator and wait until it listens (port 0: learn the port it chose)."""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulators.csms",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--quiet",
            "--control",
            "--answer-delay-ms",
            str(self.answer_delay_ms),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await self._proc.stdout.readline()).decode().strip()
        if not line.startswith("READY "):
            await self.stop()
            raise RuntimeError(f"CSMS simulator did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1].split("/", 1)[0])

    async def stats(self) -> dict[str, Any]:
        """What it received: ``{"received": {action: n}, "transactions": n, "connects": n}``."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"stats\n")
        await proc.stdin.drain()
        async with asyncio.timeout(10):
            out: dict[str, Any] = json.loads(await proc.stdout.readline())
        return out

    async def stop(self) -> None:
        """Close its stdin (it shuts down cleanly); kill it if it does not."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def __aenter__(self) -> CsmsProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
