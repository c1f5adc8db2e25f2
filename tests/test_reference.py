"""The PyTorch reference: hand-checked values, hash function, and gradcheck in float64."""

import itertools

import pytest
import torch

from ngfx.encodings import parse_grid_config
from ngfx.encodings.reference import grid_encode, grid_vertex_index


def test_hash_matches_hand_computed_xor_of_primes():
    cfg = parse_grid_config(3, {"otype": "HashGrid", "n_levels": 2, "log2_hashmap_size": 4,
                                "base_resolution": 16, "per_level_scale": 2.0})
    assert cfg.hashed == (True, True)
    corner = torch.tensor([[3, 5, 7]])
    expected = ((3 * 1) ^ ((5 * 2654435761) & 0xFFFFFFFF) ^ ((7 * 805459861) & 0xFFFFFFFF)) % 16
    assert grid_vertex_index(corner, cfg, 0).item() == expected


def test_dense_index_is_row_major_dimension_zero_fastest():
    cfg = parse_grid_config(2, {"otype": "DenseGrid", "n_levels": 1, "base_resolution": 5})
    assert grid_vertex_index(torch.tensor([[2, 3]]), cfg, 0).item() == 2 + 3 * 5


def test_linear_interpolation_of_a_linear_table_is_exact():
    # A 1-level dense 2D grid whose entry at vertex (i, j) holds (i, j): the encoding of x is x*scale + 0.5.
    cfg = parse_grid_config(2, {"otype": "DenseGrid", "n_levels": 1, "n_features_per_level": 2,
                                "base_resolution": 9, "per_level_scale": 1.0})
    res = cfg.resolutions[0]
    table = torch.zeros(cfg.table_sizes[0], 2, dtype=torch.float64)
    for i, j in itertools.product(range(res), repeat=2):
        table[i + j * res] = torch.tensor([i, j], dtype=torch.float64)
    x = torch.rand(100, 2, dtype=torch.float64) * 0.9  # keep the +1 corner inside the grid
    out = grid_encode(x, table.flatten(), cfg)
    torch.testing.assert_close(out, x * cfg.scales[0] + 0.5)


@pytest.mark.parametrize("otype,interp,dims", [("HashGrid", "Linear", 3), ("HashGrid", "Smoothstep", 2),
                                                ("DenseGrid", "Linear", 2), ("TiledGrid", "Smoothstep", 3)])
def test_gradcheck_float64(otype, interp, dims):
    cfg = parse_grid_config(dims, {"otype": otype, "n_levels": 3, "n_features_per_level": 2, "log2_hashmap_size": 6,
                                   "base_resolution": 3, "per_level_scale": 1.7, "interpolation": interp})
    torch.manual_seed(0)
    # keep points away from cell borders, where the encoding's derivative in x jumps
    x = torch.rand(6, dims, dtype=torch.float64)
    params = torch.randn(cfg.n_params, dtype=torch.float64, requires_grad=True)
    x.requires_grad_(True)
    pos = torch.stack([x.detach() * s + 0.5 for s in cfg.scales])
    frac = pos - pos.floor()
    assert ((frac > 1e-3) & (frac < 1 - 1e-3)).all()
    assert torch.autograd.gradcheck(lambda p, q: grid_encode(q, p, cfg), (params, x), eps=1e-6, atol=1e-5)
