"""A simulated camera: a :class:`drivers.camera.reader.FrameSource` with no hardware.

It shows an idle background (a grey gradient with sensor noise) and, on
request, a QR code generated with segno or an image file, placed in the
640×480 frame with optional scale, blur and noise. ``unplug()`` makes it fail
like a USB camera pulled out; ``plug()`` brings it back. Thread-safe: the
controller's capture thread reads while the demo or a test calls ``show``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.ports import ConnectionLost
from drivers.camera.decoders import Image


def render_qr(text: str, *, module_px: int = 4, border: int = 4, error: str = "m") -> Image:
    """A black-on-white QR code of ``text`` as a grayscale image (segno, no file I/O)."""
    import segno

    qr = segno.make_qr(text, error=error, boost_error=False)
    dark = np.array([list(row) for row in qr.matrix], dtype=np.uint8)
    dark = np.pad(dark, border, constant_values=0)
    img = np.where(dark > 0, 0, 255).astype(np.uint8)
    return np.kron(img, np.ones((module_px, module_px), dtype=np.uint8))


@dataclass(frozen=True, slots=True)
class Look:
    """How a shown picture is degraded: Gaussian blur sigma (px) and noise sigma (grey levels)."""

    blur_px: float = 0.0
    noise: float = 0.0


class SimulatedCamera:
    """Frames at ``fps`` from an idle background or whatever is being shown."""

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        seed: int = 0,
        color: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self.color = color
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._plugged = threading.Event()
        self._plugged.set()
        self._opened = False
        self._picture: Image | None = None
        self._look = Look()
        self._until = 0.0
        self._next_frame_at = 0.0
        self.frames_served = 0
        self.opens = 0
        gradient = np.linspace(90, 160, width, dtype=np.float32)
        self._idle = np.tile(gradient, (height, 1)).astype(np.uint8)

    # ------------------------------------------------------------------ control (any thread)

    def show(
        self,
        text: str,
        seconds: float = 5.0,
        *,
        module_px: int = 4,
        blur_px: float = 0.0,
        noise: float = 0.0,
        offset: tuple[int, int] = (0, 0),
    ) -> None:
        """Show a QR code of ``text`` for ``seconds``, centred (plus ``offset`` px)."""
        self.show_image(
            render_qr(text, module_px=module_px),
            seconds,
            blur_px=blur_px,
            noise=noise,
            offset=offset,
        )

    def show_image(
        self,
        image: Image | Path | str,
        seconds: float = 5.0,
        *,
        blur_px: float = 0.0,
        noise: float = 0.0,
        offset: tuple[int, int] = (0, 0),
    ) -> None:
        """Show an image (array or file) for ``seconds``; it is shrunk to fit the frame if needed."""
        import cv2

        if isinstance(image, str | Path):
            loaded = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
            if loaded is None:
                raise ValueError(f"cannot read image {image}")
            image = np.asarray(loaded, dtype=np.uint8)
        frame = self._compose(np.asarray(image, dtype=np.uint8), offset)
        if blur_px > 0:
            frame = np.asarray(cv2.GaussianBlur(frame, (0, 0), blur_px), dtype=np.uint8)
        with self._lock:
            self._picture = frame
            self._look = Look(blur_px=blur_px, noise=noise)
            self._until = self._clock() + seconds

    def hide(self) -> None:
        with self._lock:
            self._picture = None

    def unplug(self) -> None:
        """From now on ``open`` and ``read`` fail as if the USB cable were pulled."""
        self._plugged.clear()

    def plug(self) -> None:
        self._plugged.set()

    @property
    def showing(self) -> bool:
        with self._lock:
            return self._picture is not None and self._clock() < self._until

    # ------------------------------------------------------------------ FrameSource (capture thread)

    def open(self) -> None:
        if not self._plugged.is_set():
            raise ConnectionLost("simulated camera unplugged")
        self._opened = True
        self.opens += 1
        self._next_frame_at = time.monotonic()

    def read(self) -> Image:
        if not self._opened:
            raise ConnectionLost("simulated camera not open")
        # Pace like a real sensor (wall time, independent of the injected clock).
        delay = self._next_frame_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_frame_at = max(self._next_frame_at + 1.0 / self.fps, time.monotonic())
        if not self._plugged.is_set():
            self._opened = False
            raise ConnectionLost("simulated camera unplugged")
        frame = self.frame()
        self.frames_served += 1
        return frame

    def close(self) -> None:
        self._opened = False

    def frame(self) -> Image:
        """The picture the camera sees right now (idle background or the shown code)."""
        with self._lock:
            picture = self._picture if self._clock() < self._until else None
            noise = self._look.noise if picture is not None else 2.0
        base = picture if picture is not None else self._idle
        if noise > 0:
            jitter = self._rng.normal(0.0, noise, base.shape)
            out = np.clip(base.astype(np.float32) + jitter, 0, 255).astype(np.uint8)
        else:
            out = base.copy()
        if self.color:
            out = np.repeat(out[:, :, None], 3, axis=2)
        return out

    # ------------------------------------------------------------------ helpers

    def _compose(self, picture: Image, offset: tuple[int, int]) -> Image:
        import cv2

        if picture.ndim == 3:
            picture = np.asarray(cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
        h, w = picture.shape
        scale = min(1.0, (self.width - 8) / w, (self.height - 8) / h)
        if scale < 1.0:
            picture = cv2.resize(  # type: ignore[assignment]
                picture,
                (max(1, int(w * scale)), max(1, int(h * scale))),
                interpolation=cv2.INTER_AREA,
            )
            h, w = picture.shape
        frame = self._idle.copy()
        y = min(max(0, (self.height - h) // 2 + offset[1]), self.height - h)
        x = min(max(0, (self.width - w) // 2 + offset[0]), self.width - w)
        frame[y : y + h, x : x + w] = picture
        return frame
