"""NeRF on the synthetic scene: a tiny run beats a PSNR threshold, fused and unfused rendering agree."""

import copy

import pytest
import torch

from ngfx.render import stages
from ngfx.render.apps import nerf
from ngfx.render.ops.sh import spherical_harmonics
from ngfx.render.neural_field import fit


@pytest.fixture(scope="module")
def one_thread():
    # tiny tensors: one thread avoids OpenMP barrier costs on small (and shared) CI machines
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread, tmp_path_factory):
    import os

    os.environ.setdefault("NGFX_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.manual_seed(0)
    app = nerf.build_app("synthetic", "hashgrid", "tiny", device="cpu")
    before = app.evaluate()["psnr_db"]
    fit(app, steps=nerf.DEFAULT_STEPS["tiny"])
    return app, before


def test_tiny_nerf_beats_constant_colour(trained):
    app, before = trained
    after = app.evaluate()
    baseline = nerf.constant_colour_psnr(app)
    assert before < baseline + 3.0  # untrained: no better than a flat image
    assert after["psnr_db"] >= 20.0 and after["psnr_db"] > baseline + 8.0
    assert after["ssim"] > 0.8
    assert 0.0 < after["occupied_fraction"] < 0.5  # the occupancy grid pruned empty space


def test_fused_and_unfused_render_agree(trained):
    app, _ = trained
    with stages.record_stages() as records:
        fused = app.render(24, 16, 1, fused=True)
    unfused = app.render(24, 16, 1, fused=False)
    assert fused.shape == (16, 24, 3)
    torch.testing.assert_close(fused, unfused, atol=2e-3, rtol=0)
    names = {r.name for r in records}
    assert {"nerf.ray_gen", "nerf.march", "nerf.density_encoding", "nerf.field_head", "nerf.composite"} <= names
    assert {r.category for r in records if r.name == "nerf.density_encoding"} == {"encoding"}


def test_render_grid_drops_samples_not_pixels(trained, monkeypatch):
    """The two-level render grid evaluates fewer samples than the training grid for the same frame; it is
    rebuilt after a training step."""
    app, _ = trained
    counted = []
    query = app.field.query
    monkeypatch.setattr(app.field, "query", lambda points, dirs, fused=False: counted.append(len(points)) or query(
        points, dirs, fused))
    assert app.render_sub == nerf.RENDER_SUB["tiny"] > 1
    refined = app.render(24, 16, 1, fused=False)
    refined_samples = sum(counted)
    monkeypatch.setattr(app, "render_sub", 1)
    counted.clear()
    coarse = app.render(24, 16, 1, fused=False)
    assert 0 < refined_samples < sum(counted)  # a blurry tiny field fills most fine cells: few are dropped here
    torch.testing.assert_close(refined, coarse, atol=0.03, rtol=0)
    assert float((refined - coarse).abs().mean()) < 2e-3
    grid = app.render_grid()
    assert grid.dtype == torch.bool  # render_sub 1: the training grid itself
    monkeypatch.setattr(app, "render_sub", nerf.RENDER_SUB["tiny"])
    bits = app.render_grid()
    assert bits.dtype == torch.int64 and bits is app.render_grid()  # built once
    assert not bool((bits[~app.occupancy.mask] != 0).any())
    stepped = copy.deepcopy(app)  # the module's trained app stays as the other tests expect it
    before = stepped.render_grid()
    assert stepped.render_grid() is before
    stepped.training_step(1)  # a step changes the field: the grid is refined again
    assert stepped.render_grid() is not before


def test_render_rays_matches_frame_and_chunks(trained):
    app, _ = trained
    pose = app.eval_poses[0]
    frame = app.render(app.intrinsics.width, app.intrinsics.height, pose, fused=False)
    from ngfx.cameras import pixel_rays

    origins, dirs = pixel_rays(pose, app.intrinsics)
    rgb = app.render_rays(origins, dirs, fused=False)
    torch.testing.assert_close(rgb.reshape(frame.shape).clamp(0, 1), frame, atol=1e-4, rtol=0)
    assert app.train_poses.shape[1:] == (4, 4) and app.aabb.shape == (2, 3) and app.background.shape == (3,)
    assert app.eval_images.shape == (len(app.eval_poses), app.intrinsics.height, app.intrinsics.width, 3)
    assert 0 < app.near < app.far


def test_spherical_harmonics_are_orthonormal():
    torch.manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(200_000, 3), dim=1)
    basis = spherical_harmonics(dirs)
    gram = 4 * torch.pi * basis.t() @ basis / dirs.shape[0]  # Monte Carlo integral over the sphere
    torch.testing.assert_close(gram, torch.eye(16), atol=0.05, rtol=0)


def test_training_step_is_staged_and_adapts_its_batch(trained):
    from ngfx.render.neural_field import optimisation_step

    app, _ = trained
    stats = app.batch_stats()
    assert stats["steps"] >= nerf.DEFAULT_STEPS["tiny"]
    assert 0 < stats["rays_kept_per_step"] <= stats["rays_per_step"]
    assert 0.5 * stats["sample_slots"] < stats["samples_per_step"] <= stats["sample_slots"]  # the batch filled up
    assert app.early_stop is None  # a CPU trains on every occupied sample: the density pass costs it steps
    optimizer = app.optimizer()
    with stages.record_stages() as records:
        optimisation_step(app, optimizer, 0)
    names = {r.name for r in records}
    assert {"nerf.train.occupancy", "nerf.train.rays", "nerf.train.march", "nerf.train.field",
            "nerf.train.composite", "nerf.train.backward", "nerf.train.optimizer"} <= names
    assert "nerf.train.density_pass" not in names


def test_density_pass_drops_samples_behind_opaque_ones(monkeypatch):
    from ngfx.render.neural_field import optimisation_step

    monkeypatch.setattr(nerf, "EARLY_STOP_DEVICES", ("cuda", "cpu"))  # the GPU's step, run by its twins
    torch.manual_seed(0)
    app = nerf.build_app("synthetic", "hashgrid", "tiny", device="cpu")
    assert app.early_stop == nerf.EARLY_STOP and app.max_march_slots == nerf.MARCH_SLOTS_PER_SAMPLE * app.target_samples
    fit(app, steps=120)
    stats = app.batch_stats()
    assert 0 < stats["rays_kept_per_step"] <= stats["rays_per_step"]
    assert app.target_samples <= stats["march_slots"] <= app.max_march_slots
    optimizer = app.optimizer()
    with stages.record_stages() as records:
        loss = optimisation_step(app, optimizer, 0)
    assert {"nerf.train.density_pass", "nerf.train.compact"} <= {r.name for r in records} and bool(loss.isfinite())
