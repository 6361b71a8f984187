"""A labelled QR sample corpus (``samples.tsv`` + images) and scoring a decoder on it.

Used by the decoder tests and the benchmark, and handy on a station to check a
camera build against known images. The corpus lives outside the repository
(``<repo>/../shared/qr_samples``, or ``$EDGE_STATION_QR_SAMPLES``).

``samples.tsv``: a ``#`` header line, then ``image_path<TAB>expected<TAB>
expected_file<TAB>note`` rows. ``expected`` is UTF-8 with ``\\\\``, ``\\t``,
``\\n``, ``\\r`` escaped. The file is split on ``\\n`` only: expected texts
contain characters (``\\x1d``, ``\\x1c``) that ``str.splitlines`` treats as
line breaks. Rows whose note says *structured-append* are parts of one
message: the group passes when the parts, decoded in file order and joined,
give the expected text.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.camera.decoders import Decoder, Image

ENV_VAR = "EDGE_STATION_QR_SAMPLES"
_UNESCAPE = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def default_samples_dir() -> Path:
    """``$EDGE_STATION_QR_SAMPLES``, else ``<repo>/../shared/qr_samples``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "qr_samples"


def unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        out.append(_UNESCAPE.get(nxt, "\\" + nxt))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Sample:
    path: Path
    expected: str
    structured_group: str | None = None  # expected_file shared by the parts

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def load_samples(root: Path) -> list[Sample]:
    """Parse ``root/samples.tsv``. Raises ``FileNotFoundError`` if it is absent."""
    text = (root / "samples.tsv").read_text(encoding="utf-8")
    samples: list[Sample] = []
    for row in text.split("\n"):
        if not row or row.startswith("#"):
            continue
        image, expected, expected_file, note = [*row.split("\t"), "", "", ""][:4]
        group = expected_file if "structured-append" in note else None
        samples.append(Sample(root / image, unescape(expected), group))
    return samples


def read_image(path: Path) -> Image:
    """Load an image file as 8-bit grayscale (webp, png, jpg)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return np.ascontiguousarray(img, dtype=np.uint8)


def fit_into_frame(img: Image, width: int = 640, height: int = 480) -> Image:
    """Place ``img`` centred in a light-grey ``width``×``height`` frame, shrinking it if needed.

    This is what a camera at VGA would hand the decoder: the code is a part of
    a larger, busier picture.
    """
    import cv2

    h, w = img.shape[:2]
    scale = min(1.0, (width - 16) / w, (height - 16) / h)
    if scale < 1.0:
        img = cv2.resize(  # type: ignore[assignment]
            img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA
        )
        h, w = img.shape[:2]
    frame = np.full((height, width), 200, dtype=np.uint8)
    y, x = (height - h) // 2, (width - w) // 2
    frame[y : y + h, x : x + w] = img
    return frame


@dataclass(frozen=True, slots=True)
class SampleResult:
    sample: Sample
    texts: tuple[str, ...]
    seconds: float
    passed: bool


@dataclass(frozen=True, slots=True)
class Score:
    decoder: str
    results: tuple[SampleResult, ...]

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def times_ms(self) -> list[float]:
        return [r.seconds * 1000 for r in self.results]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    def failures(self) -> list[str]:
        return [r.sample.name for r in self.results if not r.passed]


def _decode_timed(decoder: Decoder, img: Image) -> tuple[tuple[str, ...], float]:
    t0 = time.perf_counter()
    texts = decoder.decode(img)
    return tuple(texts), time.perf_counter() - t0


def score(decoder: Decoder, samples: Sequence[Sample], *, in_vga_frame: bool = False) -> Score:
    """Decode every sample once; a plain sample passes if its text is among the results."""
    raw: list[tuple[Sample, tuple[str, ...], float]] = []
    for sample in samples:
        img = read_image(sample.path)
        if in_vga_frame:
            img = fit_into_frame(img)
        texts, seconds = _decode_timed(decoder, img)
        raw.append((sample, texts, seconds))
    group_ok = _structured_groups(raw)
    results = tuple(
        SampleResult(
            s,
            texts,
            sec,
            group_ok[s.structured_group] if s.structured_group else s.expected in texts,
        )
        for s, texts, sec in raw
    )
    return Score(decoder.name, results)


def _structured_groups(raw: Sequence[tuple[Sample, tuple[str, ...], float]]) -> dict[str, bool]:
    parts: dict[str, list[tuple[Sample, tuple[str, ...]]]] = {}
    for sample, texts, _ in raw:
        if sample.structured_group:
            parts.setdefault(sample.structured_group, []).append((sample, texts))
    ok: dict[str, bool] = {}
    for group, members in parts.items():
        members.sort(key=lambda m: m[0].path.name)
        if all(len(texts) == 1 for _, texts in members):
            ok[group] = "".join(texts[0] for _, texts in members) == members[0][0].expected
        else:
            ok[group] = False
    return ok


def iter_existing(root: Path) -> Iterator[Sample]:
    """Samples whose image file exists (a partial checkout still scores what it has)."""
    for sample in load_samples(root):
        if sample.path.is_file():
            yield sample
