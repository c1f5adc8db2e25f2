"""Readable PyTorch twins of every kernel: the definition the Triton kernels are tested against.

float32 (or float64 for gradcheck), runs on any device, differentiable by autograd with respect to
both the inputs and the parameters.
"""

from __future__ import annotations

import itertools

import torch

from ngfx.encodings.config import HASH_PRIMES, GridConfig, MLPConfig


def grid_vertex_index(corner: torch.Tensor, cfg: GridConfig, level: int) -> torch.Tensor:
    """Entry index of integer grid vertices ``corner`` [N, D] (int64) within level ``level``'s table.

    Row-major (dimension 0 fastest) while the stride fits the table, as tiny-cuda-nn does; the
    XOR-of-primes hash for hashed levels; always modulo the level's entry count.
    """
    n_entries = cfg.table_sizes[level]
    if cfg.hashed[level]:
        index = torch.zeros_like(corner[:, 0])
        for d in range(cfg.n_dims):
            index ^= (corner[:, d] * HASH_PRIMES[d]) & 0xFFFFFFFF
    else:
        index = torch.zeros_like(corner[:, 0])
        stride = 1
        for d in range(cfg.n_dims):
            if stride > n_entries:  # tiny-cuda-nn stops here to avoid uint32 overflow
                break
            index = index + corner[:, d] * stride
            stride *= cfg.resolutions[level]
        index = index & 0xFFFFFFFF
    return index % n_entries


def _interpolation_weights(frac: torch.Tensor, interpolation: str) -> torch.Tensor:
    if interpolation == "Smoothstep":
        return frac * frac * (3.0 - 2.0 * frac)
    return frac


def grid_encode(x: torch.Tensor, params: torch.Tensor, cfg: GridConfig) -> torch.Tensor:
    """Multi-resolution grid encoding.

    Args:
        x: [N, D] positions, nominally in [0, 1].
        params: [n_params] flat table, level after level, each entry's F features contiguous.
    Returns:
        [N, n_levels * F], level-major (level 0's features first), dtype of ``params``.
    """
    n_features = cfg.n_features_per_level
    table = params.view(-1, n_features)
    outputs = []
    for level in range(cfg.n_levels):
        pos = x.to(params.dtype) * cfg.scales[level] + 0.5
        floor = torch.floor(pos)
        base = floor.long()
        level_table = table[cfg.offsets[level] : cfg.offsets[level + 1]]
        if cfg.interpolation == "Nearest":
            outputs.append(level_table[grid_vertex_index(base, cfg, level)])
            continue
        weight_hi = _interpolation_weights(pos - floor, cfg.interpolation)
        weight_lo = 1.0 - weight_hi
        feature = torch.zeros(x.shape[0], n_features, dtype=params.dtype, device=x.device)
        for bits in itertools.product((0, 1), repeat=cfg.n_dims):
            offset = torch.tensor(bits, device=x.device)
            weight = torch.ones_like(pos[:, 0])
            for d, bit in enumerate(bits):
                weight = weight * (weight_hi[:, d] if bit else weight_lo[:, d])
            feature = feature + weight[:, None] * level_table[grid_vertex_index(base + offset, cfg, level)]
        outputs.append(feature)
    return torch.cat(outputs, dim=1)


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "None":
        return x
    if name == "ReLU":
        return torch.relu(x)
    if name == "Sigmoid":
        return torch.sigmoid(x)
    if name == "Exponential":
        return torch.exp(x)
    if name == "Softplus":
        return torch.nn.functional.softplus(x)
    if name == "Tanh":
        return torch.tanh(x)
    raise ValueError(f"unknown activation {name!r}")


def mlp_forward(x: torch.Tensor, weights: list[torch.Tensor], cfg: MLPConfig) -> torch.Tensor:
    """Bias-free MLP: ``weights[i]`` is [out, in]; hidden layers use ``cfg.activation``."""
    h = x.to(weights[0].dtype)
    for i, w in enumerate(weights):
        h = h @ w.t()
        h = activation(h, cfg.activation if i < len(weights) - 1 else cfg.output_activation)
    return h
