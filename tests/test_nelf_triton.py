"""The fused NeLF forward (Triton, under the interpreter in fp32) against the PyTorch network it replaces."""

import pytest
import torch

from ngfx.nelf.triton_nelf import FusedNeLF, ResidualMLP
from ngfx.nelf.network import NeLF, NeLFConfig, fold_batchnorm

SMALL = NeLFConfig(n_points=2, n_freqs=2, width=32, n_blocks=2, sr_stages=((16, 4, 2),), sr_blocks=1)


def _trained_looking(model: NeLF) -> NeLF:
    """Non-trivial BatchNorm statistics and larger weights, so every layer and skip changes the output."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model.eval()


@pytest.mark.parametrize("launch", [{"block_m": 16, "block_k": 16},  # one program per tile
                                    {"block_m": 32, "block_k": 32, "num_stages": 1},
                                    {"block_m": 16, "block_k": 16, "programs": 2},  # each program walks tiles
                                    {"block_m": 16, "block_k": 16, "residual": "scratch"}])
def test_fused_forward_matches_the_network(launch):
    model = _trained_looking(NeLF(SMALL))
    rays = torch.randn(1, SMALL.in_channels, 5, 7)  # 35 pixels: the last tile is partly masked
    fused = FusedNeLF(model, torch.float32, launch)
    assert isinstance(fused.stages[0][1], ResidualMLP)  # the 16-wide super-resolution blocks run fused too
    with torch.no_grad():
        ref = model(rays)
        out = fused(rays)
    assert out.shape == ref.shape == (1, 3, 10, 14)
    assert (out - ref).abs().max() < 1e-5


def test_fused_body_skips_and_layers_all_count():
    """Body output against the reference body for several block counts (catches a dropped layer or skip)."""
    for n_blocks in (0, 1, 3):
        cfg = NeLFConfig(n_points=2, n_freqs=2, width=16, n_blocks=n_blocks, sr_stages=(), sr_blocks=0, norm="none")
        model = fold_batchnorm(NeLF(cfg))
        rays = torch.randn(1, cfg.in_channels, 4, 5)
        mlp = ResidualMLP(list(model.body), model.stem[0], True, torch.float32, {"block_m": 16, "block_k": 16,
                                                                                  "num_warps": 4, "num_stages": 1})
        with torch.no_grad():
            stem = model.stem(rays)
            ref = (stem + model.body(stem)).permute(0, 2, 3, 1).reshape(-1, 16)
            out = mlp(rays.permute(0, 2, 3, 1).reshape(-1, cfg.in_channels).contiguous())
        assert (out - ref).abs().max() < 1e-5, n_blocks


def test_widths_the_kernel_cannot_take_are_refused():
    model = NeLF(NeLFConfig(width=48, n_blocks=1, sr_stages=(), sr_blocks=0))
    with pytest.raises(ValueError, match="width 48"):
        FusedNeLF(model, torch.float32)
