"""The ``[camera]`` section: a QR camera whose codes go to the station's bays.

A code is meant for the bay its signed token names, else the camera's own
``bay`` (a camera mounted at one locker), else the bay the kiosk shows.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.core.config import StationConfig
from controller.ports import ScannedCode
from drivers.camera.decoders import DEFAULT_DECODER
from drivers.camera.reader import FrameSource, OpenCvSource, QrCameraReader

if TYPE_CHECKING:
    from controller.core.station import Station

log = structlog.get_logger(__name__)


class CameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "camera"
    device: int | str = Field(default=0, description="V4L2 index or device path, e.g. /dev/video0")
    decoder: Literal["zxing", "zbar"] = DEFAULT_DECODER  # type: ignore[assignment]
    decode_hz: float = Field(default=10.0, gt=0, le=60)
    dedup_s: float = Field(default=3.0, ge=0, le=60)
    width: int = Field(default=640, ge=160, le=4096)
    height: int = Field(default=480, ge=120, le=4096)
    bay: str | None = Field(default=None, description="the bay this camera belongs to, if only one")


def parse(cfg: StationConfig) -> CameraConfig | None:
    return None if cfg.camera is None else CameraConfig.model_validate(cfg.camera)


async def run_camera(
    station: Station, reader: QrCameraReader, *, camera: str, bay: str | None
) -> None:
    """Run ``reader`` and hand every code to the station, in order, off the reader's thread."""
    codes: asyncio.Queue[ScannedCode] = asyncio.Queue(maxsize=32)

    def sink(code: ScannedCode) -> None:
        if codes.full():
            log.warning("camera.backlog_dropped", camera=camera)
            return
        codes.put_nowait(code)

    async def consume() -> None:
        while True:
            code = await codes.get()
            try:
                await station.commands.code_scanned(code.text, camera=camera, bay_id=bay)
            except Exception:
                log.exception("camera.scan_failed", camera=camera)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(reader.run(sink), name=f"camera:{camera}")
        tg.create_task(consume(), name=f"camera-codes:{camera}")


class CameraExtension:
    name = "camera"

    def check(self, cfg: StationConfig) -> list[str]:
        try:
            cam = parse(cfg)
        except ValidationError as err:
            return [
                f"camera.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            ]
        if cam is not None and cam.bay is not None and cam.bay not in {b.id for b in cfg.bays}:
            return [f"camera.bay: unknown bay {cam.bay!r}"]
        return []

    def attach(self, station: Station, source: FrameSource | None = None) -> None:
        cam = parse(station.cfg)
        if cam is None:
            return
        reader = QrCameraReader(
            source or OpenCvSource(cam.device, width=cam.width, height=cam.height),
            camera=cam.name,
            decoder=cam.decoder,
            decode_hz=cam.decode_hz,
            dedup_s=cam.dedup_s,
        )

        async def service() -> None:
            await run_camera(station, reader, camera=cam.name, bay=cam.bay)

        station.add_service(f"camera:{cam.name}", service)


EXTENSION = CameraExtension()
