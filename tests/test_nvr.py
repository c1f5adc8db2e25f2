"""NVR: tiny training beats a PSNR threshold vs the ground-truth cloud, marching kernels equal their twins."""

import math

import pytest
import torch

from ngfx.render import nvr, triton_nvr
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


def test_kernels_equal_reference():
    n_rays, n_active, k, dt = 90, 61, 16, 0.05
    origins, dirs = torch.randn(n_rays, 3), torch.randn(n_rays, 3)
    active = torch.randperm(n_rays)[:n_active].sort().values
    t_segment = torch.rand(n_rays)
    t_far = t_segment + torch.rand(n_rays) * 1.2  # some segments run past the exit
    p1, d1 = triton_nvr.sample_segment_torch(origins, dirs, active, t_segment, t_far, k, dt)
    p2, d2 = triton_nvr.sample_segment_triton(origins, dirs, active, t_segment, t_far, k, dt)
    torch.testing.assert_close(p1, p2)
    torch.testing.assert_close(d1, d2)
    assert float((d1 == 0).float().mean()) > 0.05  # the exit test was exercised
    sigmas, rgbs = torch.rand(n_active * k) * 8, torch.rand(n_active * k, 3)
    colour1, trans1 = torch.rand(n_rays, 3) * 0.2, torch.rand(n_rays)
    colour2, trans2 = colour1.clone(), trans1.clone()
    triton_nvr.composite_segment_torch(colour1, trans1, active, sigmas, rgbs, d1, k)
    triton_nvr.composite_segment_triton(colour2, trans2, active, sigmas, rgbs, d1, k)
    torch.testing.assert_close(colour1, colour2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trans1, trans2, atol=1e-5, rtol=1e-5)


def test_homogeneous_segment_transmittance_is_beer_lambert():
    k, dt, sigma = 16, 0.05, 3.0
    colour, trans = torch.zeros(1, 3), torch.ones(1)
    triton_nvr.composite_segment_torch(colour, trans, torch.tensor([0]), torch.full((k,), sigma),
                                       torch.ones(k, 3), torch.full((k,), dt), k)
    assert float(trans) == pytest.approx(math.exp(-sigma * k * dt), rel=1e-5)
    assert float(colour[0, 0]) == pytest.approx(1 - math.exp(-sigma * k * dt), rel=1e-5)


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
    samples = sum(r.n_inputs for r in records if r.name == "nvr.sample_gen")
    rays_in_box = sum(r.n_inputs for r in records if r.name == "nvr.ray_gen")
    max_segments = math.ceil(nvr.N_STEPS_DIAGONAL["tiny"] / nvr.SEGMENT)
    assert samples < 0.8 * rays_in_box * max_segments * nvr.SEGMENT  # misses and opaque rays stop early
    assert {"nvr.encoding", "nvr.mlp", "nvr.composite", "nvr.compact"} <= {r.name for r in records}
    background = torch.tensor(nvr.BACKGROUND)
    torch.testing.assert_close(frame[0, 0], background, atol=0.01, rtol=0)  # a corner ray misses the cloud
    assert float((frame[height // 2, width // 2] - background).abs().sum()) > 0.1


def test_bad_scene_and_config_roundtrip(trained):
    app, _ = trained
    with pytest.raises(ValueError, match="cloud"):
        nvr.build_app("smoke", "hashgrid", "tiny", device="cpu")
    assert nvr.build_app(**app.config()).config() == app.config()
