"""NVR: tiny training beats a PSNR threshold vs the ground-truth cloud, the occupancy grid skips empty space
without changing the image, a coarser render step costs a bounded PSNR vs the unchanged truth."""

import math

import pytest
import torch

from ngfx.render import runs
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
    assert samples < 0.8 * rays_in_box * app.render_steps  # misses, empty space, opaque rays stop early
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


def test_render_step_defaults_to_the_truths_and_a_change_rebuilds_the_grid(trained):
    app, _ = trained
    assert app.render_steps == nvr.RENDER_STEPS_DIAGONAL["tiny"] == nvr.N_STEPS_DIAGONAL["tiny"]
    assert app.dt == app.truth_dt
    frame, grid = app.render(40, 30, view=1, fused=False), app.occupancy
    try:
        app.render_steps = 16
        assert app._occupancy is None
        # the grid's threshold is a step opacity: a longer step makes more cells visible, never fewer
        coarse_grid = app.occupancy
        assert not bool((grid & ~coarse_grid).any()) and int(coarse_grid.sum()) > int(grid.sum())
    finally:
        app.render_steps = nvr.N_STEPS_DIAGONAL["tiny"]
    assert torch.equal(app.occupancy, grid)
    assert torch.equal(app.render(40, 30, view=1, fused=False), frame)


def test_coarser_render_step_stays_close_to_the_unchanged_truth(trained):
    app, _ = trained
    coarse = nvr.build_app(**{**app.config(), "render_steps": 16})  # a third of the truth's steps
    coarse.load_state_dict(app.state_dict())
    assert coarse.dt == pytest.approx(3 * app.truth_dt) and coarse.truth_dt == app.truth_dt
    truth = app.render(40, 30, view=1, ground_truth=True)
    torch.testing.assert_close(coarse.render(40, 30, view=1, ground_truth=True), truth, atol=0, rtol=0)
    frame = coarse.render(40, 30, view=1)
    assert bool(frame.isfinite().all())
    # a step three times longer is exact per step (opacity 1 - exp(-sigma dt)): it only samples the cloud more
    # sparsely, so PSNR drops measurably but little (tiny: 43 -> 37 dB; opacity of the truth's step: 22 dB)
    fine_psnr, coarse_psnr = app.evaluate()["psnr_db"], coarse.evaluate()["psnr_db"]
    assert 32.0 < coarse_psnr < fine_psnr - 1.0


@pytest.mark.parametrize("steps", [0, -1, 1.5, math.nan, "x", True])
def test_bad_render_steps_are_refused(trained, steps):
    app, _ = trained
    with pytest.raises(ValueError, match="render_steps"):
        nvr.build_app("cloud", "hashgrid", "tiny", device="cpu", render_steps=steps)
    with pytest.raises(ValueError, match="render_steps"):
        app.render_steps = steps
    assert app.render_steps == nvr.N_STEPS_DIAGONAL["tiny"]  # a refused value changes nothing


def test_bad_scene_and_config_roundtrip(trained):
    app, _ = trained
    with pytest.raises(ValueError, match="cloud"):
        nvr.build_app("smoke", "hashgrid", "tiny", device="cpu")
    assert nvr.build_app(**app.config()).config() == app.config()
    coarse = {**app.config(), "render_steps": 12}
    assert nvr.build_app(**coarse).config() == coarse
    # a run saved before the option existed renders with the size's default
    old = {k: v for k, v in app.config().items() if k != "render_steps"}
    assert nvr.build_app(**old).render_steps == nvr.RENDER_STEPS_DIAGONAL["tiny"]
    assert runs.check_options(nvr, {"render_steps": 12}, "run.json") == {"render_steps": 12}
