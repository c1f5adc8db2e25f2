"""The fused per-ray volume renderer equals the stage-by-stage PyTorch path under the interpreter (fp32)."""

import functools

import pytest
import torch

from ngfx.cameras import Intrinsics, look_at
from ngfx.ngpc_sim.capture import trace_frame
from ngfx.render.apps import nvr
from ngfx.render.apps.nerf_field import NerfField
from ngfx.render.apps.presets import encoding_preset
from ngfx.render.ops import fused_volume, raymarch, triton_fused_volume

AABB = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
BACKGROUND = torch.tensor([1.0, 0.5, 0.2])
MIN_TRANSMITTANCE = 1e-4
# the two paths take the same samples; the fused one stops a ray right after the sample that takes its
# transmittance to MIN_TRANSMITTANCE, the stage path after that sample's segment: at most MIN_TRANSMITTANCE of
# light apart, plus float rounding
TOLERANCE = 1e-3


def _nerf_field(seed: int) -> fused_volume.VolumeField:
    """A tiny NeRF field with densities from about 3 to several hundred, so some rays turn opaque early."""
    torch.manual_seed(seed)
    field = NerfField(encoding_preset("hashgrid", 3, "tiny"))
    with torch.no_grad():
        field.density_net.encoding.params.mul_(1e4)
        field.density_net.network.weights[-1][0].abs_().mul_(4.0)
    return fused_volume.VolumeField("nerf", field.density_net.encoding, field.density_net.network, field.colour_net,
                                    AABB, field.query)


def _render_both(field, occupancy, resolution: int, sub: int = 1):
    c2w = look_at(torch.tensor([3.0, -2.0, 1.0]), torch.zeros(3))
    origins, dirs, t_near, t_far = raymarch.ray_gen(c2w, Intrinsics.from_fov_x(8, 6, 1.6), 0, 6, AABB)
    images, counts = [], []
    for render in (fused_volume.render_volume, triton_fused_volume.render_volume):
        counters = torch.zeros(2, dtype=torch.int64)
        images.append(render(origins, dirs, t_near, t_far, occupancy, AABB, resolution, 5.2 / 64, field, BACKGROUND,
                             max_scan=32, min_transmittance=MIN_TRANSMITTANCE, counters=counters, sub=sub))
        counts.append(counters)
    return images, counts, t_near < t_far


@pytest.mark.parametrize("sub", [1, 4])  # the training grid's mask, or a two-level render grid's bits
def test_nerf_matches_stage_path(sub):
    from ngfx.render.ops.occupancy import pack_fine_bits

    torch.manual_seed(1)
    occupancy = torch.rand(16 ** 3) < 0.5
    if sub > 1:
        occupancy = pack_fine_bits(occupancy[:, None] & (torch.rand(16 ** 3, sub ** 3) < 0.5))
    (stage, fused), (stage_counts, fused_counts), hits = _render_both(_nerf_field(0), occupancy, 16, sub)
    torch.testing.assert_close(fused, stage, atol=TOLERANCE, rtol=0)
    assert bool(hits.any()) and not bool(hits.all())  # rays through the box and rays that miss it
    # background where rays miss; rays that turned opaque stopped early, so fewer samples ran
    torch.testing.assert_close(fused[~hits], BACKGROUND.expand(int((~hits).sum()), 3))
    assert fused_counts[0] == stage_counts[0] == hits.numel()
    assert 0 < fused_counts[1] < stage_counts[1]
    # another field gives another image: the comparison above can fail
    (_, other), _, _ = _render_both(_nerf_field(1), occupancy, 16, sub)
    assert float((other - fused).abs().max()) > 50 * TOLERANCE


def test_nerf_empty_grid_gives_background():
    (stage, fused), (_, fused_counts), _ = _render_both(_nerf_field(0), torch.zeros(8 ** 3, dtype=torch.bool), 8)
    torch.testing.assert_close(fused, BACKGROUND.expand_as(fused))
    torch.testing.assert_close(stage, fused)
    assert fused_counts[1] == 0


@pytest.fixture(scope="module")
def nvr_app():
    app = nvr.build_app("cloud", "hashgrid", "tiny", device="cpu")
    with torch.no_grad():  # an untrained network is nearly empty: give it a medium to march through
        app.field.model.encoding.params.mul_(3e3)
    return app


def test_nvr_render_matches_stage_path(nvr_app):
    fused = nvr_app.render(10, 8, 1, fused=True, per_ray=True)  # TRITON_INTERPRET=1: the kernel runs on the CPU
    stage = nvr_app.render(10, 8, 1, fused=False)
    torch.testing.assert_close(fused, stage, atol=TOLERANCE * 10, rtol=0)  # NVR stops at 1e-3
    background = torch.tensor(nvr.BACKGROUND)
    assert float((stage - background).abs().amax(-1).max()) > 0.05  # the medium shows in the frame
    unfused_truth = nvr_app.render(10, 8, 1, fused=True, ground_truth=True)  # the cloud: stage by stage
    assert float((unfused_truth - fused).abs().max()) > 50 * TOLERANCE


def test_trace_of_fused_frame_says_what_it_fused(nvr_app, monkeypatch):
    # the per-ray kernel renders only when asked (render(per_ray=True)), on a GPU as on the CPU
    monkeypatch.setattr(nvr_app, "render", functools.partial(nvr_app.render, per_ray=True))
    trace = trace_frame(nvr_app, 6, 4, "cpu", warmup=0, fused=True, profiler=False)
    fused = [k for k in trace.kernels if k.name == "nvr.fused_volume"]
    assert trace.rest == "per_ray" and len(fused) == 1 and fused[0].category == "rest"
    # the field ran inside the fused kernel: no separate encoding or MLP stage for the model to speed up
    assert not [k for k in trace.kernels if k.category in ("encoding", "mlp")]
    unfused = trace_frame(nvr_app, 6, 4, "cpu", warmup=0, fused=False, profiler=False)
    assert {"encoding", "mlp"} <= {k.category for k in unfused.kernels} and unfused.rest == "unfused"


def test_volume_field_refuses_mismatched_kinds():
    field = _nerf_field(0)
    with pytest.raises(ValueError, match="kind"):
        fused_volume.VolumeField("sdf", field.encoding, field.density_net, None, AABB, field.query)
    with pytest.raises(ValueError, match="colour network"):
        fused_volume.VolumeField("nvr", field.encoding, field.density_net, field.colour_net, AABB, field.query)
