"""Parse tiny-cuda-nn config dicts into validated, frozen descriptions.

The grid layout (per-level scale, resolution, table size, offset, hashed or dense) follows
tiny-cuda-nn exactly, so a flat parameter vector means the same thing in every backend:

* level ``l``: ``scale = base_resolution * per_level_scale**l - 1``, ``resolution = ceil(scale) + 1``;
* entries ``n_l = next multiple of 8 of resolution**D``, capped at ``2**log2_hashmap_size`` (HashGrid) or
  ``base_resolution**D`` (TiledGrid), uncapped for DenseGrid;
* a HashGrid level whose ``resolution**D`` exceeds ``n_l`` is hashed; every index is taken modulo ``n_l``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GRID_OTYPES = {"HashGrid": "Hash", "DenseGrid": "Dense", "TiledGrid": "Tiled"}
INTERPOLATIONS = ("Linear", "Smoothstep", "Nearest")
ACTIVATIONS = ("None", "ReLU", "Sigmoid", "Exponential", "Softplus", "Tanh")
NETWORK_OTYPES = ("FullyFusedMLP", "CutlassMLP", "MLP")
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
MAX_LOG2_HASHMAP_SIZE = 30


def _bad(key: str, problem: str) -> ValueError:
    return ValueError(f"encoding/network config: '{key}' {problem}")


def _positive_int(cfg: dict, key: str, default: int) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(key, f"must be a positive integer, got {value!r}")
    return value


def _positive_float(cfg: dict, key: str, default: float) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _bad(key, f"must be a positive number, got {value!r}")
    return float(value)


def _choice(cfg: dict, key: str, default: str, choices: tuple[str, ...]) -> str:
    value = cfg.get(key, default)
    if value not in choices:
        raise _bad(key, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _next_multiple(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


@dataclass(frozen=True)
class GridConfig:
    """A validated grid encoding: the config plus the derived per-level layout."""

    grid_type: str  # "Hash" | "Dense" | "Tiled"
    n_dims: int
    n_levels: int
    n_features_per_level: int
    log2_hashmap_size: int
    base_resolution: int
    per_level_scale: float
    interpolation: str
    scales: tuple[float, ...]
    resolutions: tuple[int, ...]
    table_sizes: tuple[int, ...]  # entries n_l per level
    offsets: tuple[int, ...]  # entry offset of each level in the flat table (n_levels + 1 values)
    hashed: tuple[bool, ...]

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features_per_level

    @property
    def n_params(self) -> int:
        return self.offsets[-1] * self.n_features_per_level

    def to_dict(self) -> dict:
        """The tiny-cuda-nn dict this was parsed from (round-trips through :func:`parse_grid_config`)."""
        otype = {v: k for k, v in GRID_OTYPES.items()}[self.grid_type]
        return {
            "otype": otype,
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": self.interpolation,
        }


def hash_grid_config(n_levels: int, n_features_per_level: int, log2_hashmap_size: int, base_resolution: int,
                     per_level_scale: float) -> dict:
    """tiny-cuda-nn's dict of a HashGrid encoding with these fields (checked when an Encoding parses it)."""
    return {"otype": "HashGrid", "n_levels": n_levels, "n_features_per_level": n_features_per_level,
            "log2_hashmap_size": log2_hashmap_size, "base_resolution": base_resolution,
            "per_level_scale": per_level_scale}


def parse_grid_config(n_input_dims: int, config: dict) -> GridConfig:
    """Validate a tiny-cuda-nn grid encoding dict; bad values raise ``ValueError`` naming the key."""
    if not isinstance(config, dict):
        raise ValueError(f"encoding config must be a dict, got {type(config).__name__}")
    otype = config.get("otype")
    if otype == "Grid":  # tiny-cuda-nn's generic form: {"otype": "Grid", "type": "Hash"}
        grid_type = config.get("type", "Hash")
        if grid_type not in GRID_OTYPES.values():
            raise _bad("type", f"must be one of Hash, Dense, Tiled, got {grid_type!r}")
    elif otype in GRID_OTYPES:
        grid_type = GRID_OTYPES[otype]
    else:
        raise _bad("otype", f"must be one of {', '.join(GRID_OTYPES)} (or Grid), got {otype!r}")
    if isinstance(n_input_dims, bool) or not isinstance(n_input_dims, int) or not 1 <= n_input_dims <= len(HASH_PRIMES):
        raise ValueError(f"encoding config: 'n_input_dims' must be an integer in 1..{len(HASH_PRIMES)}, got {n_input_dims!r}")
    n_levels = _positive_int(config, "n_levels", 16)
    n_features = _positive_int(config, "n_features_per_level", 2)
    if n_features not in (1, 2, 4, 8):
        raise _bad("n_features_per_level", f"must be 1, 2, 4 or 8, got {n_features}")
    log2_size = _positive_int(config, "log2_hashmap_size", 19)
    if log2_size > MAX_LOG2_HASHMAP_SIZE:
        raise _bad("log2_hashmap_size", f"must be <= {MAX_LOG2_HASHMAP_SIZE}, got {log2_size}")
    base_resolution = _positive_int(config, "base_resolution", 16)
    per_level_scale = _positive_float(config, "per_level_scale", 2.0)
    if per_level_scale < 1.0:
        raise _bad("per_level_scale", f"must be >= 1, got {per_level_scale}")
    interpolation = _choice(config, "interpolation", "Linear", INTERPOLATIONS)

    scales, resolutions, sizes, hashed, offsets = [], [], [], [], [0]
    for level in range(n_levels):
        scale = base_resolution * per_level_scale**level - 1.0
        resolution = math.ceil(scale) + 1
        dense_entries = resolution**n_input_dims
        n_entries = _next_multiple(min(dense_entries, 2**31), 8)
        if grid_type == "Hash":
            n_entries = min(n_entries, 2**log2_size)
        elif grid_type == "Tiled":
            n_entries = min(n_entries, base_resolution**n_input_dims)
        if grid_type == "Dense" and n_entries > 2**31:
            raise _bad("n_levels", f"dense level {level} would need {n_entries} entries; use a HashGrid")
        scales.append(scale)
        resolutions.append(resolution)
        sizes.append(n_entries)
        hashed.append(grid_type == "Hash" and dense_entries > n_entries)
        offsets.append(offsets[-1] + n_entries)
    return GridConfig(
        grid_type=grid_type,
        n_dims=n_input_dims,
        n_levels=n_levels,
        n_features_per_level=n_features,
        log2_hashmap_size=log2_size,
        base_resolution=base_resolution,
        per_level_scale=per_level_scale,
        interpolation=interpolation,
        scales=tuple(scales),
        resolutions=tuple(resolutions),
        table_sizes=tuple(sizes),
        offsets=tuple(offsets),
        hashed=tuple(hashed),
    )


@dataclass(frozen=True)
class MLPConfig:
    """A validated tiny-cuda-nn network dict: bias-free linear layers, as tiny-cuda-nn's MLPs are."""

    n_input_dims: int
    n_output_dims: int
    n_neurons: int
    n_hidden_layers: int
    activation: str
    output_activation: str

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of each weight matrix, input layer first."""
        widths = [self.n_input_dims] + [self.n_neurons] * self.n_hidden_layers + [self.n_output_dims]
        return [(widths[i + 1], widths[i]) for i in range(len(widths) - 1)]


def parse_network_config(n_input_dims: int, n_output_dims: int, config: dict) -> MLPConfig:
    if not isinstance(config, dict):
        raise ValueError(f"network config must be a dict, got {type(config).__name__}")
    otype = config.get("otype", "FullyFusedMLP")
    if otype not in NETWORK_OTYPES:
        raise _bad("otype", f"must be one of {', '.join(NETWORK_OTYPES)}, got {otype!r}")
    for key, value in (("n_input_dims", n_input_dims), ("n_output_dims", n_output_dims)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"network config: '{key}' must be a positive integer, got {value!r}")
    n_neurons = _positive_int(config, "n_neurons", 64)
    n_hidden = config.get("n_hidden_layers", 2)
    if isinstance(n_hidden, bool) or not isinstance(n_hidden, int) or n_hidden < 0:
        raise _bad("n_hidden_layers", f"must be a non-negative integer, got {n_hidden!r}")
    return MLPConfig(
        n_input_dims=n_input_dims,
        n_output_dims=n_output_dims,
        n_neurons=n_neurons,
        n_hidden_layers=n_hidden,
        activation=_choice(config, "activation", "ReLU", ACTIVATIONS),
        output_activation=_choice(config, "output_activation", "None", ACTIVATIONS),
    )
