"""instant-ngp's occupancy grid: a density estimate per cell, decayed and refreshed every few steps, and the
mask of cells worth sampling (``density * dt`` above a threshold, or above the mean when most is empty).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

DECAY = 0.95
OPACITY_THRESHOLD = 0.01  # nerfacc / instant-ngp: skip cells whose step opacity would be below this
WARMUP_STEPS = 256  # instant-ngp samples every cell at first, then a quarter uniformly + a quarter occupied


class OccupancyGrid(nn.Module):
    """``resolution``^3 cells over ``aabb`` [2, 3]; ``mask`` [resolution^3] bool, x-fastest."""

    def __init__(self, aabb: torch.Tensor, resolution: int = 128, chunk: int = 2 ** 20,
                 warmup_steps: int = WARMUP_STEPS):
        super().__init__()
        self.resolution, self.chunk, self.warmup_steps = resolution, chunk, warmup_steps
        n = resolution ** 3
        self.register_buffer("aabb", aabb.clone().float())
        self.register_buffer("density", torch.zeros(n))
        self.register_buffer("mask", torch.ones(n, dtype=torch.bool))

    def cell_points(self, cells: torch.Tensor) -> torch.Tensor:
        """A random world point inside each cell [M] -> [M, 3]."""
        r = self.resolution
        coords = torch.stack([cells % r, (cells // r) % r, cells // (r * r)], dim=1).float()
        unit = (coords + torch.rand_like(coords)) / r
        return self.aabb[0] + unit * (self.aabb[1] - self.aabb[0])

    @torch.no_grad()
    def update(self, step: int, density_fn: Callable[[torch.Tensor], torch.Tensor], dt: float) -> None:
        """Decay the estimates, refresh sampled cells with ``density_fn`` (world points [M, 3] -> [M]), remask."""
        n = self.density.numel()
        if step < self.warmup_steps:
            cells = torch.arange(n, device=self.density.device)
        else:
            uniform = torch.randint(0, n, (n // 4,), device=self.density.device)
            occupied = torch.nonzero(self.mask)[:, 0]
            pick = torch.randint(0, max(1, occupied.numel()), (n // 4,), device=self.density.device)
            cells = torch.cat([uniform, occupied[pick]]) if occupied.numel() else uniform
        fresh = torch.cat([density_fn(self.cell_points(c)).float() for c in cells.split(self.chunk)])
        decayed = self.density * DECAY
        decayed[cells] = torch.maximum(decayed[cells], fresh)  # duplicate cells: any of their maxima will do
        self.density.copy_(decayed)
        threshold = self.density.mean().clamp(max=OPACITY_THRESHOLD / dt)  # stays on the device: no host sync
        self.mask.copy_(self.density > threshold)

    def occupied_fraction(self) -> float:
        return float(self.mask.float().mean())
