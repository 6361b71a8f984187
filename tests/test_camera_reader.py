"""The QR camera reader with the simulated camera: dedup, dropping old frames, reconnect, shutdown.

No sleeps: tests wait for what the reader's threads report (decodes, open
attempts), relayed to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
import pytest

from controller.ports import ConnectionLost, QrReader, ScannedCode
from drivers.camera.decoders import Decoder, Image, make_decoder
from drivers.camera.reader import CallableSource, QrCameraReader
from simulators.camera import SimulatedCamera

WAIT_S = 10.0


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Counter:
    """A count bumped from any thread, awaitable from the loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.n = 0  # counted on the loop, in the order of the thread's other callbacks
        self._changed = asyncio.Event()

    def bump(self) -> None:  # any thread
        self.loop.call_soon_threadsafe(self._inc)

    def _inc(self) -> None:
        self.n += 1
        self._changed.set()

    async def reach(self, n: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while self.n < n:
                self._changed.clear()
                await self._changed.wait()


class WatchedDecoder:
    """The real decoder, counting calls and hits so a test can wait for the N-th."""

    def __init__(self, inner: Decoder) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = Counter()
        self.hits = Counter()
        self._hit_at_call: list[int] = []  # call number of each hit (decode thread)
        self._n_calls = 0

    def decode(self, image: Image) -> list[str]:
        texts = self.inner.decode(image)
        self._n_calls += 1
        if texts:
            self._hit_at_call.append(self._n_calls)
            self.hits.bump()
        self.calls.bump()
        return texts

    async def settled_after_hits(self, n: int) -> None:
        """Hit n has been decoded *and published*.

        The reader schedules a frame's publish before it decodes the next
        frame, so once the loop has seen the call after hit n, publish n ran.
        """
        await self.hits.reach(n)
        await self.calls.reach(self._hit_at_call[n - 1] + 1)


@asynccontextmanager
async def running(reader: QrCameraReader) -> AsyncIterator[asyncio.Queue[ScannedCode]]:
    got: asyncio.Queue[ScannedCode] = asyncio.Queue()
    task = asyncio.create_task(reader.run(got.put_nowait))
    try:
        yield got
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def next_code(got: asyncio.Queue[ScannedCode]) -> ScannedCode:
    async with asyncio.timeout(WAIT_S):
        return await got.get()


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("qr-")]


def test_reader_satisfies_port() -> None:
    reader: QrReader = QrCameraReader(SimulatedCamera())
    assert reader is not None


async def test_code_shown_is_published_once_within_window() -> None:
    cam, clock = SimulatedCamera(fps=200), FakeClock()
    dec = WatchedDecoder(make_decoder("zxing"))
    reader = QrCameraReader(
        cam, camera="front", decoder=dec, decode_hz=200, dedup_s=3.0, clock=clock
    )
    async with running(reader) as got:
        cam.show("ES1.first", 600)
        code = await next_code(got)
        assert (code.text, code.at, code.camera) == ("ES1.first", 1000.0, "front")
        await dec.settled_after_hits(dec.hits.n + 5)
        assert got.empty()
        # Held in front of the camera while time passes in steps shorter than
        # the window: still one scan, even after 5 s > dedup_s in total.
        for _ in range(5):
            clock.t += 1.0
            await dec.settled_after_hits(dec.hits.n + 1)
        assert got.empty()
        assert reader.stats().suppressed >= 10
        # Taken away for longer than the window and shown again: a second scan.
        cam.hide()
        await dec.calls.reach(dec.calls.n + 2)
        clock.t += 3.5
        cam.show("ES1.first", 600)
        again = await next_code(got)
        assert (again.text, again.at) == ("ES1.first", 1008.5)
        await dec.settled_after_hits(dec.hits.n + 3)
        assert got.empty()
    assert reader.stats().published == 2


async def test_different_codes_are_not_deduplicated_together() -> None:
    cam = SimulatedCamera(fps=200)
    reader = QrCameraReader(cam, decode_hz=200, dedup_s=60.0, clock=FakeClock())
    async with running(reader) as got:
        cam.show("CARD-A", 600)
        assert (await next_code(got)).text == "CARD-A"
        cam.show("CARD-B", 600)
        assert (await next_code(got)).text == "CARD-B"


async def test_old_frames_are_dropped_when_the_queue_is_full() -> None:
    loop = asyncio.get_running_loop()
    produced = 0
    enough = threading.Event()
    release = threading.Event()
    seen: asyncio.Queue[int] = asyncio.Queue()

    def source() -> Image:
        nonlocal produced
        produced += 1
        if produced >= 50:
            enough.set()
        frame = np.zeros((4, 4), dtype=np.uint8)
        frame.view(np.uint32)[0, 0] = produced  # the frame number in its first 4 bytes
        threading.Event().wait(0.0005)  # a sensor that is fast, not infinitely fast
        return frame

    class Blocking:
        name = "blocking"

        def decode(self, image: Image) -> list[str]:
            loop.call_soon_threadsafe(seen.put_nowait, int(image.view(np.uint32)[0, 0]))
            release.wait(WAIT_S)
            return []

    reader = QrCameraReader(source, decoder=Blocking(), decode_hz=1000, queue_size=3)
    async with running(reader):
        first = await asyncio.wait_for(seen.get(), WAIT_S)
        assert await asyncio.to_thread(enough.wait, WAIT_S)
        at_release = produced
        release.set()
        second = await asyncio.wait_for(seen.get(), WAIT_S)
    assert first < at_release - 10
    # The decoder skipped the backlog: it got one of the newest frames, not first + 1.
    assert second >= at_release - 3
    assert reader.stats().dropped >= at_release - first - 3


async def test_camera_unplugged_reconnects_and_continues(caplog: pytest.LogCaptureFixture) -> None:
    cam = SimulatedCamera(fps=200)
    attempts = Counter()
    opened = Counter()

    class Watched:
        def open(self) -> None:
            attempts.bump()
            cam.open()
            opened.bump()

        def read(self) -> Image:
            return cam.read()

        def close(self) -> None:
            cam.close()

    reader = QrCameraReader(
        Watched(), camera="cam0", decode_hz=200, backoff_initial_s=0.01, backoff_max_s=0.02
    )
    caplog.set_level(logging.DEBUG, logger="drivers.camera.reader")
    async with running(reader) as got:
        cam.show("CARD-A", 600)
        assert (await next_code(got)).text == "CARD-A"
        cam.unplug()
        await attempts.reach(attempts.n + 4)  # several failed reopen attempts
        assert not reader.stats().connected
        assert "unplugged" in reader.stats().last_error
        cam.plug()
        await opened.reach(2)
        cam.show("CARD-B", 600)
        assert (await next_code(got)).text == "CARD-B"
    lost = [r for r in caplog.records if r.levelno == logging.WARNING and "lost" in r.message]
    back = [r for r in caplog.records if r.levelno == logging.INFO and "back after" in r.message]
    assert len(lost) == 1 and len(back) == 1
    assert reader.stats().reconnects == 1


async def test_source_that_raises_is_reopened() -> None:
    calls = 0

    def flaky() -> Image:
        nonlocal calls
        calls += 1
        if calls in (3, 4, 5):
            raise OSError("VIDIOC_DQBUF: No such device")
        cam_frame = SimulatedCamera(fps=1000)
        cam_frame.show("FLAKY-1", 600)
        threading.Event().wait(0.002)
        return cam_frame.frame()

    reader = QrCameraReader(CallableSource(flaky), decode_hz=500, backoff_initial_s=0.01, dedup_s=0)
    async with running(reader) as got:
        while calls <= 5 or reader.stats().reconnects == 0:
            assert (await next_code(got)).text == "FLAKY-1"
    assert reader.stats().reconnects == 1


async def test_cancel_joins_threads_and_closes_source() -> None:
    cam = SimulatedCamera(fps=200)
    closed = threading.Event()

    class Source:
        def open(self) -> None:
            cam.open()

        def read(self) -> Image:
            return cam.read()

        def close(self) -> None:
            closed.set()

    before = set(reader_threads())
    reader = QrCameraReader(Source(), camera="joined")
    async with running(reader) as got:
        cam.show("X-1", 600)
        await next_code(got)
        assert {t.name for t in reader_threads()} >= {"qr-capture-joined", "qr-decode-joined"}
    assert set(reader_threads()) == before
    assert closed.is_set()
    assert not reader.stats().connected


async def test_no_code_after_cancel_and_run_is_not_reentrant() -> None:
    cam = SimulatedCamera(fps=200)
    reader = QrCameraReader(cam)
    late: list[ScannedCode] = []
    task = asyncio.create_task(reader.run(late.append))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        await reader.run(late.append)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cam.show("AFTER", 600)
    assert late == []


async def test_decoder_failure_is_logged_once_and_decoding_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cam = SimulatedCamera(fps=200)
    real = make_decoder("zxing")
    failures = 0

    class Flaky:
        name = "flaky"

        def decode(self, image: Image) -> list[str]:
            nonlocal failures
            if failures < 3:
                failures += 1
                raise RuntimeError("boom")
            return real.decode(image)

    reader = QrCameraReader(cam, decoder=Flaky(), decode_hz=200)
    async with running(reader) as got:
        cam.show("AFTER-BOOM", 600)
        assert (await next_code(got)).text == "AFTER-BOOM"
    assert len([r for r in caplog.records if "failed" in r.message and r.exc_info]) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"decode_hz": 0},
        {"queue_size": 0},
        {"dedup_s": -1},
        {"backoff_initial_s": 2, "backoff_max_s": 1},
    ],
)
def test_bad_settings_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        QrCameraReader(SimulatedCamera(), **kwargs)  # type: ignore[arg-type]


def test_unplugged_simulator_raises_connection_lost() -> None:
    cam = SimulatedCamera()
    cam.unplug()
    with pytest.raises(ConnectionLost):
        cam.open()


_unused: Callable[..., object] = CallableSource  # re-exported adapter is part of the API
