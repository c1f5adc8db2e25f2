"""Occupancy grids: which cells of a box are worth sampling when marching rays.

* :class:`OccupancyGrid` -- instant-ngp's grid for a field still being trained: a density estimate per cell,
  decayed and refreshed every few steps, and the mask of cells worth sampling (``density * dt`` above a
  threshold, or above the mean when most is empty);
* :func:`density_occupancy` -- a mask built once from a trained field (NVR): the largest density of a few
  jittered points per cell, thresholded, then dilated by a cell.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

DECAY = 0.95
OPACITY_THRESHOLD = 0.01  # nerfacc / instant-ngp: skip cells whose step opacity would be below this
WARMUP_STEPS = 256  # instant-ngp samples every cell at first, then a quarter uniformly + a quarter occupied


def cell_coords(cells: torch.Tensor, resolution: int) -> torch.Tensor:
    """Integer coordinates (x, y, z) as float [M, 3] of cells [M] indexed x-fastest."""
    r = resolution
    return torch.stack([cells % r, (cells // r) % r, cells // (r * r)], dim=1).float()


def dilate(mask: torch.Tensor, resolution: int) -> torch.Tensor:
    """Mask [R^3] grown by one cell in every direction (26-neighbourhood)."""
    grid = mask.reshape(1, 1, resolution, resolution, resolution).float()
    return (torch.nn.functional.max_pool3d(grid, 3, stride=1, padding=1) > 0).flatten()


@torch.no_grad()
def density_occupancy(density_fn: Callable[[torch.Tensor], torch.Tensor], aabb: torch.Tensor, resolution: int,
                      dt: float, threshold: float = OPACITY_THRESHOLD, n_points: int = 8, seed: int = 0,
                      chunk: int = 2 ** 20) -> torch.Tensor:
    """Mask [resolution^3] bool (x-fastest) of cells of ``aabb`` [2, 3] where a ray step could be visible.

    A cell is occupied where the largest density of ``n_points`` random points inside it (``density_fn``:
    world points [M, 3] -> [M]) gives a step opacity ``density * dt`` above ``threshold``. The points sample
    the cell rather than bound it, and density can rise between them next to an occupied neighbour, so
    the mask is dilated by one cell: the edges of the medium and thin features are not cut. Deterministic
    for a ``seed``.
    """
    device = aabb.device
    generator = torch.Generator().manual_seed(seed)
    coords = cell_coords(torch.arange(resolution ** 3, device=device), resolution)
    max_density = torch.zeros(resolution ** 3, device=device)
    for _ in range(n_points):
        jitter = torch.rand(coords.shape, generator=generator).to(device)
        points = aabb[0] + (coords + jitter) / resolution * (aabb[1] - aabb[0])
        density = torch.cat([density_fn(p).float() for p in points.split(chunk)])
        max_density = torch.maximum(max_density, density)
    return dilate(max_density * dt > threshold, resolution)


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
        coords = cell_coords(cells, self.resolution)
        unit = (coords + torch.rand_like(coords)) / self.resolution
        return self.aabb[0] + unit * (self.aabb[1] - self.aabb[0])

    @torch.no_grad()
    def update(self, step: int, density_fn: Callable[[torch.Tensor], torch.Tensor], dt: float) -> None:
        """Decay the estimates, refresh sampled cells with ``density_fn`` (world points [M, 3] -> [M]), remask.

        After the warm-up, a quarter of the cells are drawn uniformly and a quarter among the occupied ones;
        everything stays on the device (no count of the occupied cells is read back).
        """
        n, device = self.density.numel(), self.density.device
        if step < self.warmup_steps:
            cells = torch.arange(n, device=device)
        else:
            uniform = torch.randint(0, n, (n // 4,), device=device)
            occupied_first = torch.argsort(self.mask.to(torch.uint8), descending=True)
            # an index below the occupied count picks an occupied cell (any cell while none is occupied)
            pick = (torch.rand(n // 4, device=device) * self.mask.sum()).long()
            cells = torch.cat([uniform, occupied_first[pick]])
        fresh = torch.cat([density_fn(self.cell_points(c)).float() for c in cells.split(self.chunk)])
        # duplicate cells keep their largest fresh value, and a cell its decayed one if that is larger
        self.density.mul_(DECAY).scatter_reduce_(0, cells, fresh, reduce="amax")
        threshold = self.density.mean().clamp(max=OPACITY_THRESHOLD / dt)
        self.mask.copy_(self.density > threshold)

    def occupied_fraction(self) -> float:
        return float(self.mask.float().mean())
