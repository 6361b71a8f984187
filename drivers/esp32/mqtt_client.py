"""One way to open a broker connection from the ``[mqtt]`` section.

The node hub, the retained-state service, the setpoint listener and the site lease
clients all reach the same broker with the same account and TLS settings; only the
client id (one per service, so none knocks another off) and a few options differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aiomqtt

from drivers.esp32.mqtt_config import MqttConfig


def cancels() -> int:
    """How many cancels the current task has been asked (0 outside a task)."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def keep_cancel(before: int) -> None:
    """Re-raise a cancel that an awaited call swallowed (``before``: :func:`cancels` before it).

    On Python 3.11, ``asyncio.wait_for`` (inside aiomqtt's publish) returns the result when
    its future completes just as the task is cancelled, and the cancel is lost: the
    station's stop then waits for ever on a task that goes on. Cancel must cancel. Only a
    cancel asked *during* the call counts: 3.11's TaskGroup leaves its parent's count
    raised after a child's failure, with no cancel pending.
    """
    if cancels() > before:
        raise asyncio.CancelledError


class Client(aiomqtt.Client):
    """aiomqtt's client whose publish never swallows a cancel (see :func:`keep_cancel`)."""

    async def publish(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        before = cancels()
        await super().publish(*args, **kwargs)
        keep_cancel(before)


def client_for(c: MqttConfig, client_id: str, **extra: Any) -> aiomqtt.Client:
    """An ``aiomqtt.Client`` for the ``[mqtt]`` broker; ``extra`` passes options
    (``will``, ``clean_session``, ``protocol``, ``timeout``) through."""
    tls = None
    if c.tls is not None:
        tls = aiomqtt.TLSParameters(
            ca_certs=str(c.tls.ca_file) if c.tls.ca_file else None,
            certfile=str(c.tls.cert_file) if c.tls.cert_file else None,
            keyfile=str(c.tls.key_file) if c.tls.key_file else None,
        )
    return Client(
        c.host,
        c.port,
        username=c.username,
        password=c.secret(),
        identifier=client_id,
        keepalive=c.keepalive_s,
        tls_params=tls,
        tls_insecure=c.tls.insecure if c.tls is not None else None,
        **extra,
    )


def no_delay(client: aiomqtt.Client) -> None:
    """Send each frame at once (TCP_NODELAY): a command and its ACK are small writes, and
    Nagle's algorithm against the broker's delayed ACKs held each round trip ~90 ms on
    loopback (paho does not set it; see tests/bench/bench_firmware.py)."""
    sock = client._client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
