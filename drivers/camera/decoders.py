"""QR decoders: one tiny protocol, two libraries behind it, chosen by name.

``decode(image) -> list[str]`` takes a grayscale (H×W) or BGR (H×W×3) uint8
array and returns the text of every QR code found, in the order the library
reports them, without duplicates. It never raises for an unreadable image: no
code is an empty list. Both decoders are blocking C calls; run them off the
event loop.

Text: a QR code carries bytes. ``zxing-cpp`` applies the ECI / QR rules itself
(``TextMode.Plain``, so control characters such as GS1's ``\\x1d`` stay raw
instead of becoming ``<GS>``). zbar's own text conversion guesses encodings
and turns UTF-8 Japanese into mojibake, so the pyzbar decoder asks zbar for
the raw bytes (``ZBAR_CFG_BINARY``) and decodes them with :func:`bytes_to_text`.

The default is :data:`DEFAULT_DECODER` (``"zxing"``): on the shared sample
corpus it reads clearly more codes than zbar and is faster per image; the
figures are in the module's tests and ``tests/bench/bench_qr.py``.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

DEFAULT_DECODER = "zxing"

# zbar >= 0.23: "don't convert binary data to text" (zbar.h ZBAR_CFG_BINARY).
# pyzbar 0.1.9 predates it, so its enum lacks the value.
_ZBAR_CFG_BINARY = 4
_ZBAR_QRCODE = 64
_ZBAR_CFG_ENABLE = 0
_ZBAR_FOURCC_Y800 = 0x30303859


class Decoder(Protocol):
    """Finds QR codes in one frame. Blocking; never raises for image content."""

    name: str

    def decode(self, image: Image) -> list[str]: ...


def bytes_to_text(data: bytes) -> str:
    """Raw QR payload bytes → text.

    UTF-8 first (what nearly every generator writes today, and always valid for
    ASCII tokens), then Shift-JIS if the result contains kana (Japanese codes
    written without ECI), else ISO-8859-1, the QR standard's default, which maps
    every byte and so never fails. A heuristic, like every reader's: Latin-1
    text made only of bytes 0xA1..0xDF would be taken for half-width kana.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        sjis = data.decode("shift_jis")
    except UnicodeDecodeError:
        pass
    else:
        # Latin-1 text often also decodes as Shift-JIS (to kanji); real Japanese has kana.
        if any("\u3040" <= ch <= "\u30ff" or "\uff61" <= ch <= "\uff9f" for ch in sjis):
            return sjis
    return data.decode("iso-8859-1")


def to_gray(image: Image) -> Image:
    """A contiguous 8-bit grayscale view of ``image`` (BGR, BGRA or already gray)."""
    import cv2

    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY), dtype=np.uint8)
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    else:
        raise ValueError(f"unsupported image shape {image.shape}")
    if gray.dtype != np.uint8:
        gray = gray.astype(np.uint8)
    return np.ascontiguousarray(gray)


def _unique(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


class ZxingDecoder:
    """zxing-cpp (``zxingcpp.read_barcodes``), QR and Micro QR only.

    ``try_downscale`` lets it find codes that fill a large frame; ``try_invert``
    reads light-on-dark codes (phone screens in dark mode); ``try_rotate`` is
    off because a QR finder pattern is rotation-invariant already and the
    rotated pass only matters for linear barcodes.
    """

    name = "zxing"

    def __init__(self, *, try_invert: bool = True, try_downscale: bool = True) -> None:
        import zxingcpp

        self._zx: Any = zxingcpp
        self._formats = (zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.MicroQRCode)
        self._try_invert = try_invert
        self._try_downscale = try_downscale

    def decode(self, image: Image) -> list[str]:
        gray = to_gray(image)
        try:
            results = self._zx.read_barcodes(
                gray,
                formats=self._formats,
                try_rotate=False,
                try_downscale=self._try_downscale,
                try_invert=self._try_invert,
                text_mode=self._zx.TextMode.Plain,
            )
        except (RuntimeError, ValueError) as exc:  # a malformed buffer, not a missing code
            log.debug("zxing-cpp failed on a frame: %s", exc)
            return []
        return _unique([r.text for r in results if r.valid])


class ZbarDecoder:
    """zbar through pyzbar's ctypes bindings, QR only.

    ``pyzbar.decode`` itself is not used: with zbar 0.23 it raises ``ValueError``
    on symbols whose orientation is unknown (``-1`` read as unsigned), and it
    cannot ask for raw bytes. This drives the same C functions directly.
    """

    name = "pyzbar"

    def __init__(self) -> None:
        from pyzbar import wrapper

        self._w: Any = wrapper
        # Fail at construction (missing libzbar), not on the first frame.
        wrapper.load_libzbar()

    def decode(self, image: Image) -> list[str]:
        gray = to_gray(image)
        height, width = gray.shape
        if height == 0 or width == 0:
            return []
        w = self._w
        pixels = gray.tobytes()
        scanner = w.zbar_image_scanner_create()
        if not scanner:
            raise MemoryError("zbar_image_scanner_create failed")
        try:
            w.zbar_image_scanner_set_config(scanner, 0, _ZBAR_CFG_ENABLE, 0)
            w.zbar_image_scanner_set_config(scanner, _ZBAR_QRCODE, _ZBAR_CFG_ENABLE, 1)
            w.zbar_image_scanner_set_config(scanner, _ZBAR_QRCODE, _ZBAR_CFG_BINARY, 1)
            img = w.zbar_image_create()
            if not img:
                raise MemoryError("zbar_image_create failed")
            try:
                w.zbar_image_set_format(img, _ZBAR_FOURCC_Y800)
                w.zbar_image_set_size(img, width, height)
                w.zbar_image_set_data(
                    img, ctypes.cast(ctypes.c_char_p(pixels), ctypes.c_void_p), len(pixels), None
                )
                if w.zbar_scan_image(scanner, img) < 0:
                    return []
                texts: list[str] = []
                symbol = w.zbar_image_first_symbol(img)
                while symbol:
                    data = ctypes.string_at(
                        w.zbar_symbol_get_data(symbol), w.zbar_symbol_get_data_length(symbol)
                    )
                    texts.append(bytes_to_text(data))
                    symbol = w.zbar_symbol_next(symbol)
                return _unique(texts)
            finally:
                w.zbar_image_destroy(img)
        finally:
            w.zbar_image_scanner_destroy(scanner)


_FACTORIES: dict[str, Callable[[], Decoder]] = {
    "zxing": ZxingDecoder,
    "pyzbar": ZbarDecoder,
}

DECODER_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def make_decoder(name: str = DEFAULT_DECODER) -> Decoder:
    """Build a decoder by its config name (``"zxing"`` or ``"pyzbar"``)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown QR decoder {name!r}; choose one of {DECODER_NAMES}") from None
    return factory()
