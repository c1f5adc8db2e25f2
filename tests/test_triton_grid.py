"""Triton grid encoding vs the PyTorch reference (CPU, TRITON_INTERPRET=1, fp32), forward and gradients."""

import random

import pytest
import torch

from ngfx.encodings import Encoding, reference, triton_grid
from ngfx.encodings.config import GRID_OTYPES, parse_grid_config
from ngfx.encodings.grid import resolve_backend

BAND = 1e-4  # |position - nearest cell border| (in cells) under which a point counts as on a border


def random_config(seed: int, otype: str, n_dims: int, interpolation: str):
    rng = random.Random(seed)
    return parse_grid_config(n_dims, {
        "otype": otype, "n_levels": rng.randint(1, 7), "n_features_per_level": rng.choice((1, 2, 4, 8)),
        "log2_hashmap_size": rng.randint(5, 11), "base_resolution": rng.randint(2, 12),
        "per_level_scale": rng.uniform(1.1, 2.0), "interpolation": interpolation})


def sample_points(cfg, n_random: int = 96) -> torch.Tensor:
    """Uniform points, points on and just beside cell borders of random levels, corners 0 and 1."""
    x = torch.rand(n_random, cfg.n_dims)
    level = torch.randint(0, cfg.n_levels, (32,))
    scale = torch.tensor(cfg.scales)[level][:, None]
    cell = torch.floor(torch.rand(32, cfg.n_dims) * scale)
    offset = torch.tensor([0.0, 1e-6, -1e-6, 3e-3])[torch.randint(0, 4, (32, cfg.n_dims))]
    border = ((cell + 0.5) / scale + offset).clamp(0.0, 1.0)
    corners = torch.tensor([[0.0] * cfg.n_dims, [1.0] * cfg.n_dims, [0.0, 1.0, 0.0][: cfg.n_dims]])
    return torch.cat([x, border, corners])


def border_band(x: torch.Tensor, cfg) -> torch.Tensor:
    """[N] bool: the point lies within BAND of a cell border at some level and dimension."""
    pos = x[:, None, :] * torch.tensor(cfg.scales)[None, :, None] + 0.5
    return ((pos - pos.round()).abs() < BAND).flatten(1).any(dim=1)


CASES = [(otype, d, interp) for otype in GRID_OTYPES for d in (2, 3) for interp in ("Linear", "Smoothstep", "Nearest")]


@pytest.mark.parametrize("otype,n_dims,interpolation", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_forward_and_gradients_match_reference(otype, n_dims, interpolation, seed):
    cfg = random_config(seed * 100 + len(CASES), otype, n_dims, interpolation)
    params = (torch.rand(cfg.n_params) * 2 - 1).requires_grad_()
    x = sample_points(cfg).requires_grad_()
    out = triton_grid.grid_encode(x, params, cfg)
    expected = reference.grid_encode(x, params, cfg)
    band = border_band(x.detach(), cfg)
    assert band.float().mean() < 0.4  # the band is the constructed border points, not the bulk
    far = ~band
    torch.testing.assert_close(out[far], expected[far], rtol=1e-5, atol=1e-5)
    if interpolation != "Nearest":  # continuous across borders: close inside the band too
        torch.testing.assert_close(out[band], expected[band], rtol=0, atol=1e-3)

    v = torch.randn_like(out)
    grad_x, grad_p = torch.autograd.grad((out * v).sum(), (x, params))
    if interpolation == "Nearest":
        assert torch.count_nonzero(grad_x) == 0
        # no x-gradient in the reference; table gradients from points off the borders only
        keep = far.float()[:, None]
        grad_p, = torch.autograd.grad((triton_grid.grid_encode(x, params, cfg) * v * keep).sum(), params)
        ref_p, = torch.autograd.grad((reference.grid_encode(x, params, cfg) * v * keep).sum(), params)
        torch.testing.assert_close(grad_p, ref_p, rtol=1e-5, atol=1e-5)
        return
    ref_x, ref_p = torch.autograd.grad((expected * v).sum(), (x, params))
    torch.testing.assert_close(grad_p, ref_p, rtol=1e-4, atol=1e-3)
    # dx jumps at borders (the interpolation's derivative does): tight off the band only
    torch.testing.assert_close(grad_x[far], ref_x[far], rtol=1e-4, atol=1e-4 * max(cfg.scales))
    assert torch.isfinite(grad_x).all()


@pytest.mark.parametrize("otype", list(GRID_OTYPES))
@pytest.mark.parametrize("n_dims,interpolation", [(2, "Smoothstep"), (3, "Linear")])
def test_table_gradient_of_feature_pairs(otype, n_dims, interpolation):
    """F = 2 without dL/dx: each corner's feature pair is one reduction (one vector atomic on the GPU)."""
    cfg = parse_grid_config(n_dims, {"otype": otype, "n_levels": 6, "n_features_per_level": 2,
                                     "log2_hashmap_size": 9, "base_resolution": 3, "per_level_scale": 1.5,
                                     "interpolation": interpolation})
    params = (torch.rand(cfg.n_params) * 2 - 1).requires_grad_()
    x = torch.rand(200, n_dims)
    v = torch.randn(200, cfg.n_output_dims)
    (grad,) = torch.autograd.grad((triton_grid.grid_encode(x, params, cfg) * v).sum(), params)
    (ref,) = torch.autograd.grad((reference.grid_encode(x, params, cfg) * v).sum(), params)
    torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-5)


def test_hashed_and_dense_levels_in_one_grid():
    cfg = parse_grid_config(3, {"otype": "HashGrid", "n_levels": 6, "n_features_per_level": 2,
                                "log2_hashmap_size": 10, "base_resolution": 4, "per_level_scale": 2.0})
    assert any(cfg.hashed) and not all(cfg.hashed)
    params = torch.rand(cfg.n_params)
    x = torch.rand(256, 3)
    torch.testing.assert_close(triton_grid.grid_encode(x, params, cfg), reference.grid_encode(x, params, cfg),
                               rtol=1e-5, atol=1e-5)


def test_params_gradient_without_x_gradient():
    cfg = random_config(3, "HashGrid", 3, "Linear")
    params = torch.rand(cfg.n_params, requires_grad=True)
    x = torch.rand(64, 3)
    out = triton_grid.grid_encode(x, params, cfg)
    (grad,) = torch.autograd.grad(out.sum(), params)
    (ref,) = torch.autograd.grad(reference.grid_encode(x, params, cfg).sum(), params)
    torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-5)


def test_fp16_table_matches_reference_on_rounded_params():
    cfg = random_config(4, "DenseGrid", 3, "Linear")
    params = torch.rand(cfg.n_params)
    x = torch.rand(64, 3)
    out = triton_grid.grid_encode(x, params, cfg, precision=torch.float16)
    expected = reference.grid_encode(x, params.half().float(), cfg)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert (out - reference.grid_encode(x, params, cfg)).abs().max() < 1e-3  # fp16 rounding, no more


@pytest.mark.parametrize("n_dims", [1, 4])
def test_other_dims_raise(n_dims):
    cfg = parse_grid_config(n_dims, {"otype": "HashGrid", "n_levels": 2})
    with pytest.raises(ValueError, match="D in"):
        triton_grid.grid_encode(torch.rand(4, n_dims), torch.zeros(cfg.n_params), cfg)


def test_wrong_param_count_raises():
    cfg = random_config(5, "HashGrid", 2, "Linear")
    with pytest.raises(ValueError, match="params"):
        triton_grid.grid_encode(torch.rand(4, 2), torch.zeros(cfg.n_params + 1), cfg)


def test_auto_backend_is_torch_on_cpu(monkeypatch):
    monkeypatch.delenv("NGFX_BACKEND", raising=False)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"


def test_encoding_module_on_triton_backend_matches_torch():
    config = {"otype": "HashGrid", "n_levels": 4, "log2_hashmap_size": 8, "base_resolution": 4}
    enc = Encoding(3, config, backend="triton")
    x = torch.rand(64, 3)
    torch.testing.assert_close(enc(x), reference.grid_encode(x, enc.params, enc.cfg), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["Linear", "Nearest"])
def test_packed_fp16_pairs_match_reference(interpolation):
    cfg = parse_grid_config(3, {"otype": "HashGrid", "n_levels": 5, "n_features_per_level": 2,
                                "log2_hashmap_size": 9, "base_resolution": 4, "per_level_scale": 1.7,
                                "interpolation": interpolation})
    params = torch.rand(cfg.n_params) * 2 - 1
    table, packed = triton_grid.forward_table(params, cfg, torch.float16)
    assert packed and table.dtype == torch.int32
    x = torch.rand(128, 3)
    out = triton_grid.grid_encode(x, params, cfg, precision=torch.float16)
    expected = reference.grid_encode(x, params.half().float(), cfg)
    far = ~border_band(x, cfg)
    torch.testing.assert_close(out[far], expected[far], rtol=1e-5, atol=1e-5)


def test_inference_features_in_half_precision_are_the_forward_rounded():
    torch.manual_seed(4)
    enc = Encoding(3, {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2, "log2_hashmap_size": 10},
                   backend="triton")
    with torch.no_grad():
        enc.params.normal_()  # features of order 1 (the initial table is within 1e-4)
    x = torch.rand(300, 3)
    forward = enc(x).detach()
    half = enc.features(x, torch.float16)
    assert half.dtype == torch.float16 and not half.requires_grad
    torch.testing.assert_close(half, forward.half(), atol=0, rtol=0)
    torch.testing.assert_close(enc.features(x), forward, atol=0, rtol=0)
    assert float(forward.abs().max()) > 0.1  # the features are not all zero
