"""The simulated camera: generated codes, degradations, timing out, images, unplugging."""

from __future__ import annotations

import numpy as np
import pytest

from controller.ports import ConnectionLost
from drivers.camera import corpus
from drivers.camera.decoders import DECODER_NAMES, make_decoder
from simulators.camera import SimulatedCamera, render_qr


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_render_qr_is_black_on_white_with_quiet_zone() -> None:
    img = render_qr("HELLO", module_px=3, border=4)
    assert img.dtype == np.uint8 and img.shape[0] == img.shape[1]
    assert set(np.unique(img)) == {0, 255}
    assert (img[:12, :] == 255).all()  # 4 modules x 3 px of quiet zone


@pytest.mark.parametrize("name", DECODER_NAMES)
@pytest.mark.parametrize(
    ("blur", "noise", "module"), [(0.0, 0.0, 4), (0.8, 10.0, 3), (1.2, 6.0, 5)]
)
def test_shown_code_decodes_in_a_vga_frame(
    name: str, blur: float, noise: float, module: int
) -> None:
    cam = SimulatedCamera(seed=3)
    cam.show("ES1.sim-token", 10, module_px=module, blur_px=blur, noise=noise, offset=(60, -40))
    frame = cam.frame()
    assert frame.shape == (480, 640)
    assert make_decoder(name).decode(frame) == ["ES1.sim-token"]


def test_show_times_out_to_idle_background() -> None:
    clock = FakeClock()
    cam = SimulatedCamera(clock=clock)
    cam.show("GONE-SOON", 2.0)
    assert cam.showing and make_decoder().decode(cam.frame()) == ["GONE-SOON"]
    clock.t = 2.5
    assert not cam.showing and make_decoder().decode(cam.frame()) == []
    cam.show("AGAIN", 2.0)
    cam.hide()
    assert make_decoder().decode(cam.frame()) == []


def test_color_frames() -> None:
    cam = SimulatedCamera(color=True)
    cam.show("BGR-1", 5)
    frame = cam.frame()
    assert frame.shape == (480, 640, 3)
    assert make_decoder().decode(frame) == ["BGR-1"]


def test_unplug_and_plug() -> None:
    cam = SimulatedCamera(fps=1000)
    cam.open()
    assert cam.read().shape == (480, 640)
    cam.unplug()
    with pytest.raises(ConnectionLost):
        cam.read()
    with pytest.raises(ConnectionLost):
        cam.open()
    cam.plug()
    cam.open()
    assert cam.read().shape == (480, 640)


def test_show_image_from_the_sample_corpus() -> None:
    root = corpus.default_samples_dir()
    if not (root / "samples.tsv").is_file():
        pytest.skip(f"QR sample corpus not found at {root}")
    sample = next(s for s in corpus.load_samples(root) if s.path.name == "qr-inv-1.webp")
    cam = SimulatedCamera()
    cam.show_image(sample.path, 5)  # 403x419, light on dark
    assert make_decoder("zxing").decode(cam.frame()) == [sample.expected]
    with pytest.raises(ValueError):
        cam.show_image(root / "no-such.png")
