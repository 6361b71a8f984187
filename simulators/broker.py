"""A private mosquitto for ``simulate --transport mqtt``: a free loopback port, its own accounts.

The controller logs in as ``controller`` and every node as itself, each with a
generated password (``mosquitto_passwd``), as on a real site; the broker's
readiness is its own "running" log line. It lives in a folder of the
simulation's data dir and stops with the simulation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import structlog

log = structlog.get_logger(__name__)


class BrokerError(RuntimeError):
    """The broker cannot run here; the message says why in a sentence."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool(name: str, fallback: str) -> str:
    found = shutil.which(name) or fallback
    if not os.access(found, os.X_OK):
        raise BrokerError(
            f"{name} is not installed: install the Debian package mosquitto "
            "(./dev.sh simulate does) or use --transport serial."
        )
    return found


class PrivateBroker:
    """``async with PrivateBroker(folder, ["bay1", "bay2"]) as b: b.port, b.password("bay1")``."""

    def __init__(
        self, folder: Path, nodes: Iterable[str], *, controller: str = "controller"
    ) -> None:
        self.folder = folder
        self.host = "127.0.0.1"
        self.port = 0
        self.controller = controller
        self._passwords = {name: secrets.token_urlsafe(12) for name in [controller, *nodes]}
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    def password(self, user: str) -> str:
        return self._passwords[user]

    async def __aenter__(self) -> PrivateBroker:
        mosquitto = _tool("mosquitto", "/usr/sbin/mosquitto")
        passwd_tool = _tool("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
        self.folder.mkdir(parents=True, exist_ok=True)
        passwd = self.folder / "passwd"
        passwd.write_text("", encoding="utf-8")
        passwd.chmod(0o600)
        for user, pw in self._passwords.items():
            tool = await asyncio.create_subprocess_exec(
                passwd_tool, "-b", str(passwd), user, pw,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await tool.communicate()
            if tool.returncode != 0:
                raise BrokerError(f"mosquitto_passwd failed: {err.decode().strip()}")
        self.port = free_port()
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    # As root mosquitto would switch to its own user, who may not read the folder.
                    *(["user root"] if os.geteuid() == 0 else []),
                    "per_listener_settings false",
                    "allow_anonymous false",
                    f"password_file {passwd}",
                    f"listener {self.port} {self.host}",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        self._proc = await asyncio.create_subprocess_exec(
            mosquitto, "-c", str(conf),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        lines: list[str] = []
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(15):
                while True:
                    raw = await self._proc.stdout.readline()
                    if not raw:
                        raise BrokerError("mosquitto exited: " + " / ".join(lines[-5:]))
                    line = raw.decode(errors="replace").rstrip()
                    lines.append(line)
                    if " running" in line:
                        break
        except TimeoutError:
            await self._end()
            raise BrokerError(
                "mosquitto did not start within 15 s: " + " / ".join(lines[-5:])
            ) from None
        except BaseException:
            await self._end()
            raise
        self._pump = asyncio.create_task(self._drain(self._proc.stdout), name="sim-broker-log")
        log.info("simulate.broker", port=self.port)
        return self

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        """Keep reading the broker's log so its pipe never fills (until it closes)."""
        while await stream.readline():
            pass

    async def _end(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._end()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
