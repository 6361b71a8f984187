"""QR decoder benchmark: both decoders, same inputs, one core.

- throughput on 640×480 frames (a code in a camera-like frame, and an empty
  frame, which is what the camera sees most of the time); target ≥ 20 frames/s;
- pass rate and median / p99 decode time per image on the shared sample
  corpus, as is and placed in a 640×480 frame.

Run: ``.venv/bin/pytest -m bench tests/bench/bench_qr.py`` (reports in bench-results/).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from drivers.camera import corpus
from drivers.camera.decoders import DECODER_NAMES, DEFAULT_DECODER, make_decoder
from simulators.camera import SimulatedCamera
from tests.bench.report import metric, percentile, write_report

pytestmark = pytest.mark.bench

TARGET_FPS = 20.0
FRAMES = 200


@pytest.fixture(scope="module", autouse=True)
def one_core() -> Iterator[None]:
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpus:
        os.sched_setaffinity(0, {min(cpus)})
    yield
    if cpus:
        os.sched_setaffinity(0, cpus)
    cv2.setNumThreads(threads)


def _frames() -> dict[str, list[np.ndarray]]:
    cam = SimulatedCamera(seed=7)
    with_code = []
    for i in range(10):
        cam.show(
            f"ES1.bench-{i:04d}-" + "x" * 150,
            60,
            module_px=3,
            blur_px=0.7,
            noise=6.0,
            offset=(i * 17 - 80, i * 9 - 40),
        )
        with_code.append(cam.frame())
    cam.hide()
    empty = [cam.frame() for _ in range(10)]
    return {"code": with_code, "empty": empty}


@pytest.mark.parametrize("name", DECODER_NAMES)
def test_throughput_vga(name: str) -> None:
    decoder = make_decoder(name)
    metrics: dict[str, dict[str, Any]] = {}
    for kind, frames in _frames().items():
        hits = 0
        times: list[float] = []
        for i in range(FRAMES):
            t0 = time.perf_counter()
            texts = decoder.decode(frames[i % len(frames)])
            times.append(time.perf_counter() - t0)
            hits += bool(texts)
        fps = FRAMES / sum(times)
        metrics[f"{kind}_fps"] = metric(fps, "frames/s", better="higher", target=TARGET_FPS)
        metrics[f"{kind}_p99_ms"] = metric(percentile(times, 99) * 1000, "ms")
        if kind == "code":
            metrics["code_hit_rate"] = metric(hits / FRAMES, "ratio", better="higher")
            assert hits == FRAMES, f"{name} missed codes in {FRAMES - hits} frames"
        assert fps >= TARGET_FPS, f"{name}: {fps:.1f} frames/s on {kind} 640x480 frames"
    write_report(
        f"qr_throughput_{name}", metrics, {"frames": FRAMES, "cores": 1, "size": "640x480"}
    )


@pytest.mark.parametrize("name", DECODER_NAMES)
def test_corpus_pass_rate_and_latency(name: str) -> None:
    root = corpus.default_samples_dir()
    if not (root / "samples.tsv").is_file():
        pytest.skip(f"QR sample corpus not found at {root}")
    samples = corpus.load_samples(root)
    decoder = make_decoder(name)
    decoder.decode(np.zeros((64, 64), dtype=np.uint8))  # warm-up (library init)
    metrics: dict[str, dict[str, Any]] = {}
    notes: dict[str, Any] = {"samples": len(samples), "default": name == DEFAULT_DECODER}
    for vga in (False, True):
        tag = "vga" if vga else "raw"
        score = corpus.score(decoder, samples, in_vga_frame=vga)
        times = score.times_ms
        metrics[f"{tag}_pass_rate"] = metric(score.pass_rate, "ratio", better="higher")
        metrics[f"{tag}_median_ms"] = metric(score.median_ms, "ms")
        metrics[f"{tag}_p99_ms"] = metric(percentile(times, 99), "ms")
        notes[f"{tag}_passed"] = f"{score.passed}/{score.total}"
        notes[f"{tag}_failures"] = score.failures()
    write_report(f"qr_corpus_{name}", metrics, notes)
