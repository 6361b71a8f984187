"""A publish that swallows a cancel does not keep a service running (drivers/esp32/mqtt_client.py).

On Python 3.11 aiomqtt's publish (through ``asyncio.wait_for``) can return normally when
its acknowledgement arrives just as the task is cancelled: the cancel is lost, and the
station's stop waited for ever on a state service that went on publishing.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import pytest

from drivers.esp32.mqtt_client import Client


async def test_a_publish_that_swallows_a_cancel_still_cancels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered = asyncio.Event()

    async def swallowing(self: aiomqtt.Client, *args: object, **kwargs: object) -> None:
        if entered.is_set():
            await asyncio.sleep(10)  # a later publish: cancels as it should
            return
        entered.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return  # what wait_for does when its future completes as the cancel comes

    monkeypatch.setattr(aiomqtt.Client, "publish", swallowing)
    client = Client("127.0.0.1", 1)  # never connected: publish is the fake above
    went_on: list[str] = []

    async def service() -> None:
        while True:
            await client.publish("edge/x/state", b"{}")
            went_on.append("published")

    task = asyncio.create_task(service())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert went_on == []


async def test_a_publish_goes_on_when_nothing_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []

    async def fine(self: aiomqtt.Client, topic: str, *args: object, **kwargs: object) -> None:
        sent.append(topic)

    monkeypatch.setattr(aiomqtt.Client, "publish", fine)
    client = Client("127.0.0.1", 1)
    await client.publish("a")
    await client.publish("b")
    assert sent == ["a", "b"]


async def test_a_cancel_count_raised_before_the_publish_is_no_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task's cancel count can stay raised with no cancel pending (3.11's TaskGroup left it
    so in the camera service after a child failed): only a cancel asked during the publish
    counts, or the service would stop itself at its next publish."""
    sent: list[str] = []

    async def fine(self: aiomqtt.Client, topic: str, *args: object, **kwargs: object) -> None:
        sent.append(topic)

    monkeypatch.setattr(aiomqtt.Client, "publish", fine)
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(1)  # taken, never uncancelled: the count stays at 1
    assert task.cancelling() == 1
    client = Client("127.0.0.1", 1)
    await client.publish("after")
    assert sent == ["after"]
    task.uncancel()
