"""The three encodings of the NGPC paper as tiny-cuda-nn config dicts, and the apps' MLP configs.

``hashgrid``  -- multi-resolution hash grid (instant-ngp: 16 levels x 2 features, T = 2^19, base 16);
``densegrid`` -- multi-resolution dense grid (8 levels x 2 features, base 16, scale 1.405);
``lowres``    -- low-resolution dense grid (a DenseGrid with two coarse levels and wider features).

``size="tiny"`` shrinks tables and levels so CPU tests and the quick demo stay fast; the structure
(otype, interpolation, feature layout) is unchanged.
"""

from __future__ import annotations

ENCODINGS = ("hashgrid", "densegrid", "lowres")


def encoding_preset(name: str, n_dims: int, size: str = "full", finest_resolution: int = 2048,
                    log2_hashmap_size: int = 19) -> dict:
    """tiny-cuda-nn encoding dict for encoding ``name`` over ``n_dims`` input dimensions."""
    if name not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {name!r}")
    if size not in ("full", "tiny"):
        raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
    tiny = size == "tiny"
    if name == "hashgrid":
        n_levels = 8 if tiny else 16
        base = 8 if tiny else 16
        finest = min(finest_resolution, 256) if tiny else finest_resolution
        return {"otype": "HashGrid", "n_levels": n_levels, "n_features_per_level": 2,
                "log2_hashmap_size": min(log2_hashmap_size, 14) if tiny else log2_hashmap_size,
                "base_resolution": base, "per_level_scale": (finest / base) ** (1.0 / (n_levels - 1)),
                "interpolation": "Linear"}
    if name == "densegrid":
        if tiny:
            return {"otype": "DenseGrid", "n_levels": 4, "n_features_per_level": 2, "base_resolution": 8,
                    "per_level_scale": 1.5, "interpolation": "Linear"}
        return {"otype": "DenseGrid", "n_levels": 8, "n_features_per_level": 2, "base_resolution": 16,
                "per_level_scale": 1.405, "interpolation": "Linear"}
    # lowres: few, coarse levels with more features each
    if tiny:
        return {"otype": "DenseGrid", "n_levels": 2, "n_features_per_level": 4, "base_resolution": 16,
                "per_level_scale": 2.0, "interpolation": "Linear"}
    base = 64 if n_dims == 3 else 256
    return {"otype": "DenseGrid", "n_levels": 2, "n_features_per_level": 4, "base_resolution": base,
            "per_level_scale": 2.0, "interpolation": "Linear"}


def mlp_preset(n_hidden_layers: int = 1, n_neurons: int = 64, output_activation: str = "None") -> dict:
    """instant-ngp's small MLPs: 64 wide, 1-2 hidden layers, ReLU."""
    return {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": output_activation,
            "n_neurons": n_neurons, "n_hidden_layers": n_hidden_layers}
