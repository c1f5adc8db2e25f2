"""NeLF network: shapes, presets' published sizes, hand-counted costs, BatchNorm folding, bad configs."""

import math

import pytest
import torch

from ngfx.errors import NgfxInputError
from ngfx.nelf.layer_costs import layer_costs, totals
from ngfx.cameras import Intrinsics, look_at, pixel_rays
from ngfx.nelf.lightslab import PRESETS as SLAB_PRESETS, slab_coordinates, slab_frames
from ngfx.nelf.network import (PRESETS, NeLF, NeLFConfig, ResidualBlock, compile_blocks, encode_frames, encode_rays,
                               fold_batchnorm, low_resolution, preset_for)

SMALL = NeLFConfig(n_points=1, n_freqs=1, width=4, n_blocks=1, sr_stages=((2, 4, 2),), sr_blocks=1)


def test_small_network_costs_match_hand_counts():
    # output 8x6 -> low-res 4x3 = 12 pixels; in_channels = 1 point * 3 * (1 + 2) = 9; 48 output pixels
    costs = layer_costs(SMALL, 8, 6)
    expect = [  # (name, params, MACs)
        ("stem.0", 9 * 4 + 4, 12 * 4 * 9),
        ("body.0.conv1", 4 * 4 + 4, 12 * 4 * 4), ("body.0.conv2", 4 * 4 + 4, 12 * 4 * 4),
        ("upsample.0", 4 * 2 * 16 + 2, 12 * 4 * 2 * 16),  # every input pixel scatters a 4x4 patch
        ("upsample.3.conv1", 2 * 2 + 2, 48 * 2 * 2), ("upsample.3.conv2", 2 * 2 + 2, 48 * 2 * 2),
        ("to_rgb", 2 * 3 + 3, 48 * 3 * 2),
    ]
    assert [(c.name, c.params, c.macs) for c in costs] == expect
    t = totals(costs)
    assert t["params"] == 231 and t["macs"] == 3024 and t["flops"] == 6048
    assert costs[0].in_shape == (9, 3, 4) and costs[-1].out_shape == (3, 6, 8)
    assert costs[0].activation_bytes == (9 * 12 + 4 * 12) * 2 and costs[0].weight_bytes == 40 * 2
    # the trainable module adds BatchNorm's scale and shift: 2 x (4 + 4 + 2 + 2 + 2) channels
    assert sum(p.numel() for p in NeLF(SMALL).parameters()) == 231 + 28


@pytest.mark.parametrize("preset,resolution,gflops", [("mobile_r2l_x8", (800, 800), 101.0),
                                                      ("mobile_r2l_x12", (1008, 756), 53.0)])
def test_paper_network_matches_published_size(preset, resolution, gflops):
    t = totals(layer_costs(PRESETS[preset], *resolution))
    assert abs(t["storage_mb_fp16"] - 8.5) / 8.5 < 0.05  # issue target: within 5 % of 8.5 MB
    assert abs(t["flops"] / 1e9 - gflops) / gflops < 0.05
    assert t["storage_mb_fp32"] == pytest.approx(2 * t["storage_mb_fp16"])


def test_forward_shapes_and_range():
    for name in ("tiny", "quick"):
        cfg = PRESETS[name]
        with torch.no_grad():
            out = NeLF(cfg).eval()(torch.randn(2, cfg.in_channels, 3, 5))
        assert out.shape == (2, 3, 3 * cfg.upscale, 5 * cfg.upscale)
        assert float(out.min()) > 0 and float(out.max()) < 1
    r2l = NeLF(PRESETS["r2l"])
    assert r2l.cfg.upscale == 1 and len(r2l.body) == 44 and r2l.cfg.in_channels == 16 * 3 * 13


def test_paper_preset_picks_the_upscale_that_divides():
    assert preset_for("paper", (800, 800)).upscale == 8
    assert preset_for("paper", (1008, 756)).upscale == 12
    assert low_resolution(preset_for("paper", (1008, 756)), 1008, 756) == (84, 63)


def test_encode_rays_layout():
    origins, dirs = torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    aabb = torch.tensor([[-2.0] * 3, [2.0] * 3])
    enc = encode_rays(origins, dirs, 0.0, 2.0, aabb, n_points=3, n_freqs=2).reshape(2, 3, 3, 5)
    # point k of ray 0 sits at x = k (t = 0, 1, 2), mapped to [-1, 1] by the box: x / 2
    assert torch.allclose(enc[0, :, 0, 0], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(enc[0, 1, 0, 1:3], torch.sin(torch.tensor([0.5, 1.0]) * math.pi))
    assert torch.allclose(enc[0, 1, 0, 3:5], torch.cos(torch.tensor([0.5, 1.0]) * math.pi), atol=1e-6)


@pytest.mark.parametrize("cfg", [PRESETS["tiny"], SLAB_PRESETS["tiny"]], ids=["mobile_r2l", "lightslab"])
def test_encode_frames_batch_matches_each_frame_alone(cfg):
    # the batch is encoded in one pass; each frame must be what its own pose's pixel_rays give, in its own slot
    k, aabb = Intrinsics(fx=9.0, fy=8.0, cx=6.5, cy=3.0, width=12, height=8), torch.tensor([[-1.0] * 3, [1.0] * 3])
    poses = torch.stack([look_at(torch.tensor(eye), torch.zeros(3)) for eye in
                         ([3.0, 0.5, 1.0], [-1.0, 2.5, 2.0], [0.2, -3.0, 0.5])])
    w, h = low_resolution(cfg, k.width, k.height)
    frames = encode_frames(cfg, poses, k, 2.0, 5.0, aabb)
    assert frames.shape == (3, cfg.in_channels, h, w)
    for pose, frame in zip(poses, frames):
        origins, dirs = pixel_rays(pose, k.scaled(w, h))
        enc = (slab_coordinates(origins, dirs, aabb, slab_frames(cfg)) if cfg.arch == "lightslab"
               else encode_rays(origins, dirs, 2.0, 5.0, aabb, cfg.n_points, cfg.n_freqs))
        assert torch.allclose(frame, enc.t().reshape(-1, h, w), atol=1e-4)


def test_compiled_blocks_keep_outputs_gradients_and_checkpoint_names():
    torch.manual_seed(0)
    eager = NeLF(PRESETS["tiny"])
    compiled = compile_blocks(NeLF(PRESETS["tiny"]))
    compiled.load_state_dict(eager.state_dict())
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints read either way
    blocks = [m for m in compiled.modules() if isinstance(m, ResidualBlock)]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks)
    x = torch.randn(2, eager.cfg.in_channels, 3, 4)
    outputs = [model(x) for model in (eager, compiled)]
    for out in outputs:
        (out * torch.linspace(0, 1, out.numel()).reshape(out.shape)).sum().backward()
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def test_fold_batchnorm_keeps_outputs():
    model = NeLF(PRESETS["tiny"])
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
    model.eval()
    folded = fold_batchnorm(model)
    x = torch.randn(2, model.cfg.in_channels, 4, 4)
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_bad_configs_and_resolutions_name_the_field():
    with pytest.raises(NgfxInputError, match="resolution.*multiples of its super-resolution factor 8"):
        low_resolution(PRESETS["mobile_r2l_x8"], 804, 800)
    with pytest.raises(NgfxInputError, match="'depth'"):
        NeLFConfig.from_dict({"depth": 3})
    with pytest.raises(NgfxInputError, match="'norm'"):
        NeLFConfig.from_dict({"norm": "layer"})
    with pytest.raises(NgfxInputError, match="sr_stages"):
        NeLFConfig.from_dict({"sr_stages": [[16, 3, 2]]})
    with pytest.raises(NgfxInputError, match="unknown NeLF preset"):
        preset_for("huge")
    assert NeLFConfig.from_dict(PRESETS["mobile_r2l_x12"].to_dict()) == PRESETS["mobile_r2l_x12"]
