"""NVR: tiny training beats a PSNR threshold vs the ground-truth cloud, the occupancy grid skips empty space
without changing the image."""

import math

import pytest
import torch

from ngfx.render.apps import nvr
from ngfx.render.neural_field import fit
from ngfx.render.stages import record_stages


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    app = nvr.build_app("cloud", "hashgrid", "tiny", device="cpu")
    before = app.evaluate()["psnr_db"]
    fit(app, steps=nvr.DEFAULT_STEPS["tiny"])
    return app, before


def test_tiny_training_reaches_psnr(trained):
    app, before = trained
    assert before < 15.0
    assert app.evaluate()["psnr_db"] > 32.0


def test_fused_render_matches_unfused(trained):
    app, _ = trained
    # early termination may stop a ray one segment apart: bounded by the transmittance threshold
    torch.testing.assert_close(app.render(40, 30, view=1, fused=True), app.render(40, 30, view=1, fused=False),
                               atol=2 * nvr.MIN_TRANSMITTANCE, rtol=0)


def test_marching_terminates_early_and_runs_in_bands(trained):
    app, _ = trained
    width, height = 200, 60
    with record_stages("cpu") as records:
        frame = app.render(width, height, view=0, fused=False)
    assert app.last_render_chunks == math.ceil(height / (nvr.CHUNK_RAYS["tiny"] // width)) > 1
    samples = sum(r.n_inputs for r in records if r.name == "nvr.activation")
    rays_in_box = sum(r.n_inputs for r in records if r.name == "nvr.ray_gen")
    assert samples < 0.8 * rays_in_box * nvr.N_STEPS_DIAGONAL["tiny"]  # misses, empty space, opaque rays stop early
    assert {"nvr.march", "nvr.encoding", "nvr.mlp", "nvr.composite", "nvr.compact"} <= {r.name for r in records}
    background = torch.tensor(nvr.BACKGROUND)
    torch.testing.assert_close(frame[0, 0], background, atol=0.01, rtol=0)  # a corner ray misses the cloud
    assert float((frame[height // 2, width // 2] - background).abs().sum()) > 0.1


def _evaluated_samples(app, **options) -> tuple[torch.Tensor, int]:
    with record_stages("cpu") as records:
        frame = app.render(40, 30, view=1, fused=False, **options)
    return frame, sum(r.n_inputs for r in records if r.name == "nvr.activation")


def test_occupancy_grid_skips_empty_space_without_changing_the_image(trained):
    app, _ = trained
    skipping, n_skipping = _evaluated_samples(app)
    every_step, n_every_step = _evaluated_samples(app, skip_empty=False)
    assert 0.2 < float(app.occupancy.float().mean()) < 0.8  # the cloud fills part of the cube
    assert n_skipping < 0.7 * n_every_step
    # what the grid skips is the network's residual density below instant-ngp's step opacity threshold
    torch.testing.assert_close(skipping, every_step, atol=0.02, rtol=0)
    assert float((skipping - every_step).abs().mean()) < 0.004


def test_occupancy_grid_follows_the_weights(trained):
    app, _ = trained
    grid = app.occupancy
    assert app.occupancy is grid  # built once, reused by every render
    state = {k: v.clone() for k, v in app.state_dict().items()}
    app.training_step(0)  # training invalidates it, and so do new weights
    assert app._occupancy is None
    grid_again = app.occupancy
    app.load_state_dict(state)
    assert app._occupancy is None
    # rebuilt deterministically from the same weights
    assert torch.equal(app.occupancy, grid) and torch.equal(grid_again, grid)


def test_bad_scene_and_config_roundtrip(trained):
    app, _ = trained
    with pytest.raises(ValueError, match="cloud"):
        nvr.build_app("smoke", "hashgrid", "tiny", device="cpu")
    assert nvr.build_app(**app.config()).config() == app.config()
