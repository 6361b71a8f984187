"""QR decoders: pass-rate floors on the shared real-world corpus, text handling, selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers.camera import corpus
from drivers.camera.decoders import (
    DECODER_NAMES,
    DEFAULT_DECODER,
    Decoder,
    bytes_to_text,
    make_decoder,
    to_gray,
)
from simulators.camera import render_qr

# Measured on /work/shared/qr_samples (141 images), see tests/bench/bench_qr.py:
#   zxing   129/141 = 0.915 as is, 127/141 = 0.901 in a 640x480 frame
#   pyzbar  104/141 = 0.738 as is,  89/141 = 0.631 in a 640x480 frame
# The floors are those figures minus a small margin (about 3 images).
FLOORS: dict[tuple[str, bool], float] = {
    ("zxing", False): 0.89,
    ("zxing", True): 0.88,
    ("pyzbar", False): 0.71,
    ("pyzbar", True): 0.60,
}


@pytest.fixture(scope="module")
def samples() -> list[corpus.Sample]:
    root = corpus.default_samples_dir()
    if not (root / "samples.tsv").is_file():
        pytest.skip(f"QR sample corpus not found at {root} (set ${corpus.ENV_VAR} to its folder)")
    found = corpus.load_samples(root)
    missing = [s.name for s in found if not s.path.is_file()]
    assert not missing, f"samples.tsv lists images that are absent: {missing[:5]}"
    return found


@pytest.fixture(scope="module")
def scores(samples: list[corpus.Sample]) -> dict[tuple[str, bool], corpus.Score]:
    return {
        (name, vga): corpus.score(make_decoder(name), samples, in_vga_frame=vga)
        for name in DECODER_NAMES
        for vga in (False, True)
    }


def test_corpus_parses_all_rows(samples: list[corpus.Sample]) -> None:
    # 141 rows; a naive splitlines() would break rows at \x1d / \x1c inside expected texts.
    assert len(samples) == 141
    gs1 = next(s for s in samples if s.path.name == "gs1-figure-4.15.1-2.png")
    assert "\x1d" in gs1.expected
    assert sum(1 for s in samples if s.structured_group) == 4


def test_expected_texts_match_their_txt_files(samples: list[corpus.Sample]) -> None:
    for s in samples:
        txt = s.path.with_suffix(".txt")
        if s.structured_group is None:
            assert txt.read_bytes().decode("utf-8") == s.expected, s.name


@pytest.mark.parametrize(("name", "vga"), sorted(FLOORS))
def test_pass_rate_floor(
    scores: dict[tuple[str, bool], corpus.Score], name: str, vga: bool
) -> None:
    score = scores[(name, vga)]
    assert score.pass_rate >= FLOORS[(name, vga)], (
        f"{name} {'640x480' if vga else 'as is'}: {score.passed}/{score.total}; "
        f"failed: {score.failures()}"
    )


def test_default_is_the_better_decoder(scores: dict[tuple[str, bool], corpus.Score]) -> None:
    for vga in (False, True):
        best = max(DECODER_NAMES, key=lambda n: scores[(n, vga)].pass_rate)
        assert best == DEFAULT_DECODER


def test_unescape_rules() -> None:
    assert corpus.unescape(r"a\\b\tc\nd\re") == "a\\b\tc\nd\re"
    assert corpus.unescape("http\\\\://x") == "http\\://x"


def test_structured_append_scored_as_a_group(tmp_path: Path) -> None:
    class Parts:
        name = "fake"

        def decode(self, image: np.ndarray) -> list[str]:
            return [{1: "Hello, ", 2: "world"}[int(image[0, 0])]]

    for i in (1, 2):
        import cv2

        cv2.imwrite(str(tmp_path / f"01-0{i}.png"), np.full((8, 8), i, dtype=np.uint8))
    group = [corpus.Sample(tmp_path / f"01-0{i}.png", "Hello, world", "01.txt") for i in (1, 2)]
    assert corpus.score(Parts(), group).passed == 2
    wrong = [corpus.Sample(s.path, "Hello, there", "01.txt") for s in group]
    assert corpus.score(Parts(), wrong).passed == 0


# --------------------------------------------------------------------------- decoders


@pytest.fixture(params=DECODER_NAMES)
def decoder(request: pytest.FixtureRequest) -> Decoder:
    return make_decoder(request.param)


def _in_frame(code: np.ndarray) -> np.ndarray:
    return corpus.fit_into_frame(code)


def test_decodes_a_generated_code(decoder: Decoder) -> None:
    frame = _in_frame(render_qr("ES1.abc.def", module_px=4))
    assert decoder.decode(frame) == ["ES1.abc.def"]


def test_decodes_bgr_frames(decoder: Decoder) -> None:
    gray = _in_frame(render_qr("ID-12345", module_px=3))
    bgr = np.repeat(gray[:, :, None], 3, axis=2)
    assert decoder.decode(bgr) == ["ID-12345"]


@pytest.mark.parametrize("text", ["Grüße aus Köln", "測試 ダブルQR", "a\x1db"])
def test_non_ascii_text_round_trips(decoder: Decoder, text: str) -> None:
    assert decoder.decode(_in_frame(render_qr(text, module_px=4))) == [text]


def test_nothing_to_see(decoder: Decoder) -> None:
    assert decoder.decode(np.full((480, 640), 128, dtype=np.uint8)) == []
    rng = np.random.default_rng(1)
    assert decoder.decode(rng.integers(0, 256, (480, 640), dtype=np.uint8)) == []
    assert decoder.decode(np.zeros((0, 0), dtype=np.uint8)) == []


def test_two_codes_in_one_frame(decoder: Decoder) -> None:
    frame = np.full((480, 640), 255, dtype=np.uint8)
    a, b = render_qr("LEFT", module_px=4), render_qr("RIGHT", module_px=4)
    frame[40 : 40 + a.shape[0], 20 : 20 + a.shape[1]] = a
    frame[200 : 200 + b.shape[0], 380 : 380 + b.shape[1]] = b
    assert sorted(decoder.decode(frame)) == ["LEFT", "RIGHT"]


def test_make_decoder_by_name() -> None:
    assert make_decoder().name == DEFAULT_DECODER == "zxing"
    assert make_decoder("pyzbar").name == "pyzbar"
    with pytest.raises(ValueError, match="unknown QR decoder"):
        make_decoder("opencv")


def test_bytes_to_text() -> None:
    assert bytes_to_text(b"ES1.abc") == "ES1.abc"
    assert bytes_to_text("Grüße ☕".encode()) == "Grüße ☕"
    assert bytes_to_text("ﾃﾞｻﾞｲﾝQR".encode("shift_jis")) == "ﾃﾞｻﾞｲﾝQR"
    assert bytes_to_text("Bär".encode("latin-1")) == "Bär"  # also valid Shift-JIS (a kanji)
    assert bytes_to_text(bytes(range(256))) == bytes(range(256)).decode("latin-1")


def test_to_gray_shapes() -> None:
    assert to_gray(np.zeros((4, 5, 3), dtype=np.uint8)).shape == (4, 5)
    assert to_gray(np.zeros((4, 5, 4), dtype=np.uint8)).shape == (4, 5)
    assert to_gray(np.zeros((4, 5, 1), dtype=np.uint8)).shape == (4, 5)
    with pytest.raises(ValueError):
        to_gray(np.zeros((4, 5, 2), dtype=np.uint8))
