"""Grid layout against hand-computed tiny-cuda-nn values, and bad configs naming their key."""

import math

import pytest

from ngfx.encodings import parse_grid_config, parse_network_config

NGP_HASH = {"otype": "HashGrid", "n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19,
            "base_resolution": 16, "per_level_scale": 1.447}


def test_hashgrid_levels_match_hand_computed_values():
    cfg = parse_grid_config(3, NGP_HASH)
    # level l: scale = 16 * 1.447**l - 1, resolution = ceil(scale) + 1
    assert cfg.scales[0] == 15.0 and cfg.resolutions[0] == 16
    assert cfg.resolutions[1] == math.ceil(16 * 1.447 - 1) + 1 == 24
    assert cfg.resolutions[2] == 34  # 16 * 1.447^2 - 1 = 32.50 -> 33 + 1
    # 16^3 = 4096 dense entries; 24^3 = 13824; level 4 (71^3 = 357911 -> next multiple of 8 = 357912) fits 2^19
    assert cfg.table_sizes[:2] == (4096, 13824)
    assert cfg.table_sizes[4] == 357912 and not cfg.hashed[4]
    assert cfg.table_sizes[5] == 2**19 and cfg.hashed[5]
    assert cfg.offsets[1] == 4096 and cfg.offsets[2] == 4096 + 13824
    assert cfg.n_params == 2 * sum(cfg.table_sizes)
    assert cfg.n_output_dims == 32


def test_dense_grid_is_uncapped_and_tiled_grid_capped_at_base_resolution():
    dense = parse_grid_config(2, {"otype": "DenseGrid", "n_levels": 3, "base_resolution": 5, "per_level_scale": 2.0})
    # scales 4, 9, 19 -> resolutions 5, 10, 20 -> 25 -> 32, 100 -> 104, 400
    assert dense.resolutions == (5, 10, 20)
    assert dense.table_sizes == (32, 104, 400)
    assert not any(dense.hashed)
    tiled = parse_grid_config(2, {"otype": "TiledGrid", "n_levels": 3, "base_resolution": 5, "per_level_scale": 2.0})
    assert tiled.table_sizes == (25, 25, 25)
    assert not any(tiled.hashed)


def test_config_round_trips_through_to_dict():
    cfg = parse_grid_config(3, NGP_HASH)
    assert parse_grid_config(3, cfg.to_dict()) == cfg


@pytest.mark.parametrize("key,value", [
    ("otype", "SphericalHarmonics"), ("n_levels", 0), ("n_levels", -3), ("n_features_per_level", 3),
    ("log2_hashmap_size", 31), ("log2_hashmap_size", 0), ("base_resolution", 0), ("per_level_scale", -1.0),
    ("per_level_scale", float("nan")), ("interpolation", "Cubic"), ("n_levels", 2.5),
])
def test_bad_grid_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=f"'{key}'"):
        parse_grid_config(3, {**NGP_HASH, key: value})


def test_bad_input_width_is_rejected():
    with pytest.raises(ValueError, match="n_input_dims"):
        parse_grid_config(0, NGP_HASH)
    import torch

    from ngfx.encodings import Encoding

    enc = Encoding(3, NGP_HASH, backend="torch")
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        enc(torch.rand(4, 2))


@pytest.mark.parametrize("key,value", [("otype", "Transformer"), ("n_neurons", 0), ("n_hidden_layers", -1),
                                       ("activation", "Swish"), ("output_activation", "Gelu")])
def test_bad_network_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=f"'{key}'"):
        parse_network_config(32, 4, {"otype": "FullyFusedMLP", key: value})


def test_unknown_backend_is_rejected():
    from ngfx.encodings import Encoding

    with pytest.raises(ValueError, match="backend"):
        Encoding(3, NGP_HASH, backend="cuda")
