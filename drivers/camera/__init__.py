"""QR camera adapter: frame capture, decoding (zxing-cpp or zbar) and deduplication."""

from drivers.camera.decoders import DECODER_NAMES, DEFAULT_DECODER, Decoder, make_decoder
from drivers.camera.reader import (
    CallableSource,
    CameraStats,
    FrameSource,
    OpenCvSource,
    QrCameraReader,
)

__all__ = [
    "DECODER_NAMES",
    "DEFAULT_DECODER",
    "CallableSource",
    "CameraStats",
    "Decoder",
    "FrameSource",
    "OpenCvSource",
    "QrCameraReader",
    "make_decoder",
]
