"""The fused NeLF forward (Triton, under the interpreter in fp32) against the PyTorch network it replaces."""

import dataclasses

import pytest
import torch

from ngfx.nelf.network import NeLF, NeLFConfig, fold_batchnorm
from ngfx.nelf.triton_nelf import (DEFAULT_LAUNCH, Body, FusedNeLF, UpsampleStage, extra_tile_rows, pixel_rows,
                                   split_rows)

SMALL = NeLFConfig(n_points=2, n_freqs=2, width=32, n_blocks=2, sr_stages=((16, 4, 2),), sr_blocks=1)
BODY_ONLY = dataclasses.replace(SMALL, sr_stages=(), sr_blocks=0, norm="none")  # what Body runs, and no more
SMALL_TILES = {"block_m": 16, "block_k": 16, "num_warps": 4, "num_stages": 1}  # a body launch the tests' sizes fill


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


def _with_gelu(model: torch.nn.Module, gelu: str) -> torch.nn.Module:
    """``model`` with its GELUs in the form a launch's "gelu" names ("tanh": nn.GELU(approximate="tanh"))."""
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, torch.nn.GELU):
                setattr(module, name, torch.nn.GELU(approximate="tanh" if gelu == "tanh" else "none"))
    return model


@torch.no_grad()
def _reference_body(model: NeLF, rays: torch.Tensor) -> torch.Tensor:
    """The PyTorch body (stem, blocks, global skip) of ``rays`` [1, C, h, w] as rows [h * w, width]."""
    stem = model.stem(rays)
    return pixel_rows(stem + model.body(stem))


@torch.no_grad()
def _body_rows(model: NeLF, body: Body, rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fused body, reference body) of ``rays`` [1, C, h, w] as rows [h * w, width]."""
    return body(pixel_rows(rays).contiguous()), _reference_body(model, rays)


@pytest.mark.parametrize("launch", [{"block_m": 16, "block_k": 16, "sr_block_m": 16},  # last tiles partly masked
                                    {"block_m": 32, "block_k": 32, "num_stages": 1, "sr_block_m": 32},
                                    {"block_m": 16, "block_k": 16, "sr_block_m": 16, "residual": "fp16"},
                                    # tanh GELU everywhere; 3 tiles on 2 SMs and no extra tile: the third
                                    # tile's rows (3 of 35) run in the tail launch
                                    {"block_m": 16, "block_k": 16, "sr_block_m": 16, "gelu": "tanh",
                                     "tail_block_m": 16, "round_tiles": 2, "extra_rows": 0},
                                    # 3 tiles of 16 on 1 SM: 2 programs of 16 + 16 rows, the last one's tile
                                    # 3 of 16 rows, its extra tile all masked
                                    {"block_m": 16, "block_k": 16, "sr_block_m": 16, "gelu": "tanh",
                                     "extra_rows": 16, "round_tiles": 1}])
def test_fused_forward_matches_the_network(launch):
    model = _with_gelu(_trained_looking(NeLF(SMALL)), {**DEFAULT_LAUNCH, **launch}["gelu"])
    rays = torch.randn(1, SMALL.in_channels, 5, 7)  # 35 pixels
    fused = FusedNeLF(model, torch.float32, launch)
    with torch.no_grad():
        ref = model(rays)
        out = fused(rays)
    assert out.shape == ref.shape == (1, 3, 10, 14)
    assert (out - ref).abs().max() < 1e-5


def test_tanh_gelu_is_the_tanh_form_not_the_exact_one():
    """The body with the "tanh" launch matches nn.GELU(approximate="tanh") and is far from the exact form
    (about 1e-3 here), so the tolerances of these tests tell the two apart."""
    model = fold_batchnorm(NeLF(BODY_ONLY))
    rays = 3 * torch.randn(1, BODY_ONLY.in_channels, 4, 4)  # wide inputs: pre-activations where the forms differ
    body = Body(model, torch.float32, {**SMALL_TILES, "gelu": "tanh"})
    out, exact = _body_rows(model, body, rays)
    tanh_form = _reference_body(_with_gelu(model, "tanh"), rays)
    assert (out - tanh_form).abs().max() < 1e-5
    assert (out - exact).abs().max() > 2e-4


def test_split_rows_moves_only_a_partial_last_round_to_the_tail():
    assert split_rows(10_000, 64, 16, 132) == 132 * 64  # 800x800's x8 body: 157 tiles; 1,552 rows in 97 tiles
    assert split_rows(5_292, 64, 16, 132) == 5_292  # 1008x756's x12 body: 83 tiles, one round
    assert split_rows(10_000, 32, 16, 264) == 264 * 32  # 32-row tiles two per SM: 313 tiles, rounds of 264
    assert split_rows(10_000, 64, 0, 132) == 10_000  # no tail launch asked for
    assert split_rows(2 * 132 * 64, 64, 16, 132) == 2 * 132 * 64  # whole rounds
    assert split_rows(263 * 64, 64, 16, 132) == 263 * 64  # the tail's 524 small tiles would not fit one round


def test_extra_rows_only_where_they_save_a_round():
    assert extra_tile_rows(10_000, 64, 16, 132) == 16  # 800x800's x8 body: 157 tiles of 64 -> 125 programs of 80
    assert split_rows(10_000, 64 + 16, 16, 132) == 10_000  # one round: no tail launch
    assert extra_tile_rows(5_292, 64, 16, 132) == 0  # 1008x756's 83 tiles are one round already
    assert extra_tile_rows(10_000, 64, 0, 132) == 0


def _recorded_launches(body: Body) -> list[tuple[int, int, int]]:
    """The (rows, block_m, extra rows) of each kernel launch ``body`` makes from now on, as they are made."""
    launches, launch = [], body._launch

    def record(x, out, n_rows, block_m, extra_m, num_warps):
        launches.append((n_rows, block_m, extra_m))
        return launch(x, out, n_rows, block_m, extra_m, num_warps)

    body._launch = record
    return launches


@pytest.mark.parametrize("h, w, round_tiles, tail, gelu, residual, launches", [
    # 93 rows: 3 programs of 16 + 16, the last extra tile 13 of 16 rows
    (3, 31, 4, 0, "tanh", "fp32", [(93, 16, 16)]),
    # 70 rows: the last program's tile 6 of 16 rows, its extra tile all masked
    (2, 35, 4, 0, "erf", "fp32", [(70, 16, 16)]),
    # the extra tile's residual stream in the operand dtype too
    (3, 31, 4, 0, "erf", "fp16", [(93, 16, 16)]),
    # 93 rows: 2 programs (64 rows, one round), the tail launch the other 29
    (3, 31, 2, 16, "tanh", "fp32", [(64, 16, 16), (29, 16, 0)]),
])
def test_extra_tile_rows_match_the_network(h, w, round_tiles, tail, gelu, residual, launches):
    """Every row of programs that run an extra tile through the same weights as their tile matches the
    reference body (a missing, shifted or differently weighted extra tile leaves rows wrong)."""
    model = _with_gelu(fold_batchnorm(NeLF(BODY_ONLY)), gelu)
    launch = {**SMALL_TILES, "extra_rows": 16, "tail_block_m": tail, "round_tiles": round_tiles, "gelu": gelu,
              "residual": residual}
    assert extra_tile_rows(h * w, 16, 16, round_tiles) == 16
    body = Body(model, torch.float32, launch)
    made = _recorded_launches(body)
    out, ref = _body_rows(model, body, torch.randn(1, BODY_ONLY.in_channels, h, w))
    assert made == launches
    assert (out - ref).abs().max() < 1e-5


@pytest.mark.parametrize("gelu", ["erf", "tanh"])
def test_tail_launch_runs_the_rows_after_the_whole_rounds(gelu):
    """93 rows in tiles of 32 on 2 SMs: the main launch takes 64 (one round), the tail launch the other 29 in
    tiles of 16 (one full, one partly masked); every row matches the reference body."""
    assert split_rows(93, 32, 16, 2) == 64
    model = _with_gelu(fold_batchnorm(NeLF(BODY_ONLY)), gelu)
    body = Body(model, torch.float32, {**SMALL_TILES, "block_m": 32, "tail_block_m": 16, "round_tiles": 2,
                                       "gelu": gelu, "extra_rows": 0})
    launches = _recorded_launches(body)
    out, ref = _body_rows(model, body, torch.randn(1, BODY_ONLY.in_channels, 3, 31))
    assert launches == [(64, 32, 0), (29, 16, 0)]
    assert (out - ref).abs().max() < 1e-5


@pytest.mark.parametrize("residual", ["fp32", "fp16"])  # fp16 means the operand dtype: fp32 here
def test_fused_body_skips_and_layers_all_count(residual):
    """Body output against the reference body for several block counts (catches a dropped layer or skip)."""
    for n_blocks in (0, 1, 3):
        cfg = dataclasses.replace(BODY_ONLY, n_blocks=n_blocks)
        model = fold_batchnorm(NeLF(cfg))
        rays = torch.randn(1, cfg.in_channels, 4, 5)
        mlp = Body(model, torch.float32, {**SMALL_TILES, "residual": residual, "gelu": "erf"})
        out, ref = _body_rows(model, mlp, rays)
        assert (out - ref).abs().max() < 1e-5, n_blocks


@pytest.mark.parametrize("kernel, stride, n_blocks, rgb, gelu", [(4, 2, 1, False, "erf"), (3, 3, 0, True, "erf"),
                                                                  (5, 3, 1, True, "erf"), (2, 2, 2, False, "erf"),
                                                                  (4, 2, 1, False, "tanh"), (3, 3, 1, True, "tanh")])
def test_upsample_stage_matches_the_transposed_conv_and_blocks(kernel, stride, n_blocks, rgb, gelu):
    """Every phase and tap of a transposed conv (kernels larger than, equal to and not a multiple of the
    stride), the residual blocks after it, and the RGB layer, against PyTorch."""
    from ngfx.nelf.network import ResidualBlock

    up = torch.nn.ConvTranspose2d(16, 32, kernel, stride=stride, padding=(kernel - stride) // 2)
    blocks = [ResidualBlock(32, "none") for _ in range(n_blocks)]
    to_rgb = torch.nn.Conv2d(32, 3, 1) if rgb else None
    stage = UpsampleStage(up, blocks, to_rgb, torch.float32, {"sr_block_m": 16, "sr_num_warps": 4, "gelu": gelu})
    x = 2 * torch.randn(1, 16, 3, 5)
    with torch.no_grad():
        ref = _with_gelu(torch.nn.Sequential(up, torch.nn.GELU(), *blocks), gelu)(x)
        if rgb:
            ref = torch.sigmoid(to_rgb(ref))
        out = stage(pixel_rows(x).contiguous(), 3, 5)
    h, w = 3 * stride, 5 * stride
    if not rgb:
        out = out.view(h, w, 32).permute(2, 0, 1)
    assert out.shape == ref[0].shape
    assert (out - ref[0]).abs().max() < 1e-5


def test_widths_and_launches_the_kernels_cannot_take_are_refused():
    model = NeLF(NeLFConfig(width=48, n_blocks=1, sr_stages=((16, 4, 2),), sr_blocks=0))
    with pytest.raises(ValueError, match="width 48"):
        FusedNeLF(model, torch.float32)
    with pytest.raises(ValueError, match="residual"):
        FusedNeLF(NeLF(SMALL), torch.float32, {"residual": "bf16"})
    with pytest.raises(ValueError, match="gelu"):
        FusedNeLF(NeLF(SMALL), torch.float32, {"gelu": "sigmoid"})
    with pytest.raises(ValueError, match="tail_block_m 24"):
        FusedNeLF(NeLF(SMALL), torch.float32, {"tail_block_m": 24})
    with pytest.raises(ValueError, match="extra_rows 8"):
        FusedNeLF(NeLF(SMALL), torch.float32, {"extra_rows": 8})
    with pytest.raises(ValueError, match="unknown launch key.*block_n"):
        FusedNeLF(NeLF(SMALL), torch.float32, {"block_n": 64})
    for bad in ({"block_m": 24}, {"block_k": 8}, {"num_warps": "8"}, {"num_stages": 1.5}, {"round_tiles": 0},
                {"extra_rows": True}, {"sr_block_m": 0}, {"tail_num_warps": -4}):
        (key, value), = bad.items()
        with pytest.raises(ValueError, match=f"launch {key} {value!r} must be"):
            FusedNeLF(NeLF(SMALL), torch.float32, bad)
    with pytest.raises(ValueError, match="super-resolution stage"):
        FusedNeLF(NeLF(NeLFConfig(width=32, n_blocks=1, sr_stages=(), sr_blocks=0)), torch.float32)
