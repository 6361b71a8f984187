"""The QR camera adapter: implements :class:`controller.ports.QrReader`.

Owns two threads per ``run``:

- **capture**: opens the frame source, reads frames as fast as it delivers
  them and puts them in a small bounded buffer that drops the *oldest* frame
  when full, so the decoder always works on a recent picture. A failed open or
  read (camera unplugged, source raised) closes the source and reopens it
  with capped exponential backoff; the loss is logged once, the recovery once.
- **decode**: takes the newest frame at most ``decode_hz`` times a second and
  runs the (blocking, C) decoder on it. Results reach the event loop only via
  ``loop.call_soon_threadsafe``.

On the loop, each text is deduplicated: it is published when it has not been
seen in the last ``dedup_s`` seconds. The window slides with every sighting,
so a code held in front of the camera is one scan however long it is held
(a repeat would be rejected as a replayed token anyway); it is published
again once it has been out of sight for ``dedup_s``.

``run`` returns only when cancelled; it then stops and joins both threads.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from controller.ports import ConnectionLost, ScannedCode
from drivers.camera.decoders import DEFAULT_DECODER, Decoder, Image, make_decoder

log = logging.getLogger(__name__)

Sink = Callable[[ScannedCode], None]


@runtime_checkable
class FrameSource(Protocol):
    """Where frames come from: a camera, a simulator, a file.

    ``open`` and ``read`` may block (they run on the capture thread) and raise
    on failure (preferably :class:`ConnectionLost`); ``read`` returns one frame,
    grayscale or BGR uint8, waiting for it at the source's own pace.
    """

    def open(self) -> None: ...

    def read(self) -> Image: ...

    def close(self) -> None: ...


class CallableSource:
    """Adapts a plain ``() -> frame`` callable; it raises to signal failure."""

    def __init__(self, read: Callable[[], Image]) -> None:
        self._read = read

    def open(self) -> None:
        pass

    def read(self) -> Image:
        return self._read()

    def close(self) -> None:
        pass


class OpenCvSource:
    """A V4L2 / USB camera through ``cv2.VideoCapture`` (device index or path)."""

    def __init__(self, device: int | str = 0, *, width: int = 640, height: int = 480) -> None:
        self.device = device
        self.width = width
        self.height = height
        self._cap: object | None = None

    def open(self) -> None:
        import cv2

        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise ConnectionLost(f"cannot open camera {self.device!r}")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        # Keep the driver's own queue short: we want the newest frame, not a backlog.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def read(self) -> Image:
        cap = self._cap
        if cap is None:
            raise ConnectionLost("camera not open")
        ok, frame = cap.read()  # type: ignore[attr-defined]
        if not ok or frame is None:
            raise ConnectionLost(f"camera {self.device!r} returned no frame")
        return frame  # type: ignore[no-any-return]

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()  # type: ignore[attr-defined]


@dataclass(slots=True)
class CameraStats:
    """Counters for diagnostics. Written by the reader's threads; read as a snapshot."""

    frames: int = 0
    dropped: int = 0
    decoded: int = 0
    published: int = 0
    suppressed: int = 0
    reconnects: int = 0
    connected: bool = False
    last_error: str = ""


class _FrameBuffer:
    """Bounded, newest-wins hand-off between the capture and the decode thread."""

    def __init__(self, maxsize: int) -> None:
        self._frames: collections.deque[tuple[float, Image]] = collections.deque(maxlen=maxsize)
        self._cond = threading.Condition()
        self._closed = False

    def put(self, at: float, frame: Image) -> bool:
        """Add a frame; return True if an older one was dropped to make room."""
        with self._cond:
            dropped = len(self._frames) == self._frames.maxlen
            self._frames.append((at, frame))
            self._cond.notify()
            return dropped

    def take(self, timeout: float, *, newest: bool) -> tuple[float, Image, int] | None:
        """A frame and how many older ones were discarded with it; None on timeout / close.

        ``newest``: take the newest and discard the rest; else the oldest.
        """
        with self._cond:
            if not self._frames and not self._closed:
                self._cond.wait(timeout)
            if not self._frames or self._closed:
                return None
            if not newest:
                return (*self._frames.popleft(), 0)
            at, frame = self._frames.pop()
            skipped = len(self._frames)
            self._frames.clear()
            return at, frame, skipped

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class QrCameraReader:
    """A :class:`controller.ports.QrReader` over any :class:`FrameSource`.

    ``decoder`` is a name from :data:`drivers.camera.decoders.DECODER_NAMES` or
    a :class:`Decoder`. ``take_newest=False`` makes the decoder consume frames
    oldest-first (still bounded and dropping the oldest when full); the default
    always decodes the freshest frame.
    """

    def __init__(
        self,
        source: FrameSource | Callable[[], Image],
        *,
        camera: str = "camera",
        decoder: str | Decoder = DEFAULT_DECODER,
        decode_hz: float = 10.0,
        dedup_s: float = 3.0,
        queue_size: int = 2,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        join_timeout_s: float = 5.0,
        take_newest: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if decode_hz <= 0 or dedup_s < 0 or queue_size < 1:
            raise ValueError("decode_hz > 0, dedup_s >= 0 and queue_size >= 1 are required")
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("0 < backoff_initial_s <= backoff_max_s is required")
        self._source: FrameSource = (
            source if isinstance(source, FrameSource) else CallableSource(source)
        )
        self.camera = camera
        self._decoder = make_decoder(decoder) if isinstance(decoder, str) else decoder
        self._period_s = 1.0 / decode_hz
        self._dedup_s = dedup_s
        self._queue_size = queue_size
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._join_timeout_s = join_timeout_s
        self._take_newest = take_newest
        self._clock = clock
        self._stats = CameraStats()
        self._stats_lock = threading.Lock()
        self._last_seen: dict[str, float] = {}
        self._running = False

    @property
    def decoder_name(self) -> str:
        return self._decoder.name

    def stats(self) -> CameraStats:
        with self._stats_lock:
            s = self._stats
            return CameraStats(
                s.frames,
                s.dropped,
                s.decoded,
                s.published,
                s.suppressed,
                s.reconnects,
                s.connected,
                s.last_error,
            )

    async def run(self, sink: Sink) -> None:
        if self._running:
            raise RuntimeError(f"QR reader {self.camera!r} is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        buffer = _FrameBuffer(self._queue_size)
        delivered = threading.Event()  # set once run is over: late results are discarded

        def publish(text: str, at: float) -> None:  # on the loop thread
            if delivered.is_set():
                return
            self._publish(sink, text, at)

        threads = [
            threading.Thread(
                target=self._capture_loop,
                args=(stop, buffer),
                name=f"qr-capture-{self.camera}",
                daemon=True,
            ),
            threading.Thread(
                target=self._decode_loop,
                args=(stop, buffer, loop, publish),
                name=f"qr-decode-{self.camera}",
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        try:
            await loop.create_future()  # until cancelled
        finally:
            delivered.set()
            stop.set()
            buffer.close()
            await asyncio.shield(asyncio.to_thread(self._join, threads))
            self._running = False

    # ------------------------------------------------------------------ loop side

    def _publish(self, sink: Sink, text: str, at: float) -> None:
        last = self._last_seen.get(text)
        self._last_seen[text] = at
        if last is not None and at - last < self._dedup_s:
            self._count("suppressed")
            return
        if len(self._last_seen) > 64:
            horizon = at - self._dedup_s
            self._last_seen = {k: v for k, v in self._last_seen.items() if v >= horizon}
        self._count("published")
        sink(ScannedCode(text=text, at=at, camera=self.camera))

    # ------------------------------------------------------------------ threads

    def _join(self, threads: list[threading.Thread]) -> None:
        deadline = time.monotonic() + self._join_timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                # A driver stuck in a blocking read; the daemon thread cannot hold up exit.
                log.warning("camera %s: thread %s did not stop in time", self.camera, t.name)

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self._stats, name, getattr(self._stats, name) + n)

    def _capture_loop(self, stop: threading.Event, buffer: _FrameBuffer) -> None:
        backoff = self._backoff_initial_s
        failures = 0
        is_open = False
        while not stop.is_set():
            try:
                if not is_open:
                    self._source.open()
                    is_open = True
                frame = self._source.read()
            except Exception as exc:  # any source failure means: reopen later
                if is_open:
                    self._close_quietly()
                    is_open = False
                failures += 1
                with self._stats_lock:
                    self._stats.connected = False
                    self._stats.last_error = f"{type(exc).__name__}: {exc}"
                if failures == 1:
                    log.warning("camera %s lost (%s); reconnecting with backoff", self.camera, exc)
                else:
                    log.debug("camera %s: attempt %d failed: %s", self.camera, failures, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max_s)
                continue
            # Back only once a frame arrives: an open that succeeds and a read
            # that fails again is the same outage, not a new one.
            if failures:
                log.info("camera %s: back after %d failed attempt(s)", self.camera, failures)
            at = self._clock()
            dropped = buffer.put(at, frame)
            with self._stats_lock:
                self._stats.frames += 1
                self._stats.dropped += dropped
                self._stats.connected = True
                self._stats.reconnects += failures > 0
            failures, backoff = 0, self._backoff_initial_s
        if is_open:
            self._close_quietly()
        with self._stats_lock:
            self._stats.connected = False

    def _close_quietly(self) -> None:
        try:
            self._source.close()
        except Exception as exc:
            log.debug("camera %s: close failed: %s", self.camera, exc)

    def _decode_loop(
        self,
        stop: threading.Event,
        buffer: _FrameBuffer,
        loop: asyncio.AbstractEventLoop,
        publish: Callable[[str, float], None],
    ) -> None:
        next_at = time.monotonic()
        failed_once = False
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            item = buffer.take(0.5, newest=self._take_newest)
            if item is None:
                continue
            next_at = max(next_at + self._period_s, time.monotonic())
            at, frame, skipped = item
            if skipped:
                self._count("dropped", skipped)
            try:
                texts = self._decoder.decode(frame)
            except Exception:
                if not failed_once:
                    log.exception("camera %s: decoder %s failed", self.camera, self._decoder.name)
                    failed_once = True
                continue
            self._count("decoded")
            for text in texts:
                try:
                    loop.call_soon_threadsafe(publish, text, at)
                except RuntimeError:  # loop closed during shutdown
                    return
