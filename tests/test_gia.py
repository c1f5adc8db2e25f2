"""GIA: tiny training beats a PSNR threshold, windows render consistently and in bands, fused == unfused."""

import math

import pytest
import torch

from ngfx.errors import NgfxInputError
from ngfx.render.apps import gia
from ngfx.render.ops import triton_window, window
from ngfx.render.metrics import psnr
from ngfx.render.neural_field import fit
from ngfx.render.stages import record_stages


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    app = gia.build_app("image", "hashgrid", "tiny", device="cpu")
    before = app.evaluate()["psnr_db"]
    fit(app, steps=gia.DEFAULT_STEPS["tiny"])
    return app, before


def test_tiny_training_reaches_psnr(trained):
    app, before = trained
    after = app.evaluate()["psnr_db"]
    assert before < 15.0
    assert after > 32.0


def test_zoom_window_matches_quadrant_of_full_render(trained):
    app, _ = trained
    full = app.render(96, 64, view=0, fused=False)  # the image's own 3:2, so view 0 is the whole image
    quadrant = app.render(48, 32, view=(0.0, 0.0, 0.5, 0.5), fused=False)
    torch.testing.assert_close(quadrant, full[:32, :48], atol=1e-5, rtol=0)
    assert app.render(8, 8, view=3, fused=False).shape == (8, 8, 3)


def test_render_matches_target_image(trained):
    app, _ = trained
    frame = app.render(96, 64, view=0, fused=False)
    target = app.procedural.__class__(96, 64).tile(0, 0, 96, 64)
    assert psnr(frame, target) > 28.0


def test_fused_render_equals_unfused(trained):
    app, _ = trained
    torch.testing.assert_close(app.render(40, 30, view=(0.1, 0.2, 0.7, 0.6), fused=True),
                               app.render(40, 30, view=(0.1, 0.2, 0.7, 0.6), fused=False), atol=1e-6, rtol=0)


@pytest.mark.parametrize("width,height,row0,n_rows", [(7, 5, 0, 5), (33, 20, 3, 9)])
def test_kernels_equal_reference(width, height, row0, n_rows):
    box = (0.13, 0.27, 0.91, 0.64)
    torch.testing.assert_close(triton_window.window_coords(box, width, height, row0, n_rows),
                               window.window_coords(box, width, height, row0, n_rows))
    rgb = torch.randn(n_rows * width, 3)
    a, b = torch.zeros(height, width, 3), torch.zeros(height, width, 3)
    triton_window.write_rows(a, rgb, row0)
    window.write_rows(b, rgb, row0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert float(a.max()) <= 1.0 and float(a[row0].abs().sum()) > 0


def test_large_render_runs_in_bands_with_named_stages(trained):
    app, _ = trained
    width, height = 1024, 600
    with record_stages("cpu") as records:
        frame = app.render(width, height, view=0, fused=False)
    band_pixels = gia.CHUNK_PIXELS["tiny"]
    assert frame.shape == (height, width, 3)
    assert app.last_render_chunks == math.ceil(height / (band_pixels // width))
    coords = [r for r in records if r.name == "gia.pixel_coords"]
    assert len(coords) == app.last_render_chunks and max(r.n_inputs for r in coords) <= band_pixels
    assert {r.category for r in records} == {"encoding", "mlp", "rest"}  # encoding and MLP timed apart
    enc = next(r for r in records if r.category == "encoding")
    assert (enc.attrs["app"], enc.attrs["n_dims"], enc.attrs["n_levels"]) == ("gia", 2, 8)
    assert enc.attrs["log2_hashmap_size"] == 14 and enc.attrs["n_features_per_level"] == 2


def test_real_image_greyscale_is_rgb_and_sampled_at_pixel_centres(shared_scenes):
    app = gia.build_app(f"{shared_scenes}/images/albert.jpg", "hashgrid", "tiny", device="cpu")
    assert (app.width, app.height) == (3250, 4333)
    uv = torch.tensor([[(10 + 0.5) / app.width, (20 + 0.5) / app.height]])
    colour = app.target_at(uv)[0]
    torch.testing.assert_close(colour, app.target[0, :, 20, 10], atol=1e-6, rtol=0)
    assert float(colour.std()) == 0.0  # grey replicated to RGB
    again = gia.build_app(**app.config())
    assert again.config() == app.config()


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(NgfxInputError, match="not found"):
        gia.build_app(str(tmp_path / "missing.png"), "hashgrid", "tiny", device="cpu")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(NgfxInputError, match="broken.png"):
        gia.build_app(str(tmp_path / "broken.png"), "hashgrid", "tiny", device="cpu")
    with pytest.raises(ValueError, match="size"):
        gia.build_app("image", "hashgrid", "huge", device="cpu")
    with pytest.raises(ValueError, match="window"):
        gia.view_window((0.5, 0.0, 0.2, 1.0))


def test_whole_image_view_is_cropped_not_stretched():
    # a portrait 3:4 image in a 16:9 frame: the full width, the middle 0.42 of the height
    x0, y0, x1, y1 = gia.crop_to_aspect((0.0, 0.0, 1.0, 1.0), (3000, 4000), (1920, 1080))
    assert (x0, x1) == (0.0, 1.0)
    assert math.isclose((1.0 * 3000) / ((y1 - y0) * 4000), 1920 / 1080) and math.isclose(y0 + y1, 1.0)
    # a wide image in a square frame: narrowed about the centre; a matching aspect is left alone
    x0, y0, x1, y1 = gia.crop_to_aspect((0.0, 0.0, 1.0, 1.0), (200, 100), (64, 64))
    assert (y0, y1) == (0.0, 1.0) and math.isclose(x1 - x0, 0.5) and math.isclose(x0 + x1, 1.0)
    assert gia.crop_to_aspect((0.0, 0.0, 1.0, 1.0), (96, 64), (48, 32)) == (0.0, 0.0, 1.0, 1.0)
