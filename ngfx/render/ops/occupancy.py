"""Occupancy grids: which cells of a box are worth sampling when marching rays.

* :class:`OccupancyGrid` -- instant-ngp's grid for a field still being trained: a density estimate per cell,
  decayed and refreshed every few steps, and the mask of cells worth sampling (``density * dt`` above a
  threshold, or above the mean when most is empty);
* :func:`density_occupancy` -- a mask built once from a trained field (NVR): the largest density of a few
  jittered points per cell, thresholded, then dilated by a cell;
* :func:`refine_occupancy` -- the two-level grid rendering marches through: each occupied cell of a coarse
  mask split into ``sub^3`` fine cells, tested the same way, packed as the bits of one int64 per coarse cell;
* :func:`macro_occupancy` -- the macro level over a render grid: which blocks of its cells hold an occupied one, so
  a ray crosses an empty block in one marching iteration.
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
    """Mask [R^3] grown by one cell in every direction (26-neighbourhood), axis by axis on bools (a 512^3
    render grid would take 0.5 GB a copy as floats)."""
    grid = mask.reshape(resolution, resolution, resolution).clone()
    for axis in range(3):
        shifted = grid.clone()
        shifted.narrow(axis, 1, resolution - 1).logical_or_(grid.narrow(axis, 0, resolution - 1))
        shifted.narrow(axis, 0, resolution - 1).logical_or_(grid.narrow(axis, 1, resolution - 1))
        grid = shifted
    return grid.flatten()


def largest_density(density_fn: Callable[[torch.Tensor], torch.Tensor], coords: torch.Tensor, aabb: torch.Tensor,
                    resolution: int, n_points: int, generator: torch.Generator, chunk: int) -> torch.Tensor:
    """The largest density [M] of ``n_points`` random points in each cell (integer coordinates ``coords`` [M, 3]
    of a ``resolution``^3 grid over ``aabb``), the field queried ``chunk`` points at a time."""
    max_density = torch.zeros(coords.shape[0], device=coords.device)
    for _ in range(n_points):
        jitter = torch.rand(coords.shape, generator=generator).to(coords.device)
        points = aabb[0] + (coords + jitter) / resolution * (aabb[1] - aabb[0])
        density = [density_fn(p).float() for p in points.split(chunk)]
        max_density = torch.maximum(max_density, torch.cat(density))  # split gives one piece even of none
    return max_density


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
    coords = cell_coords(torch.arange(resolution ** 3, device=aabb.device), resolution)
    max_density = largest_density(density_fn, coords, aabb, resolution, n_points,
                                  torch.Generator().manual_seed(seed), chunk)
    return dilate(max_density * dt > threshold, resolution)


def sub_cell_offsets(sub: int, device=None) -> torch.Tensor:
    """Integer offsets [sub^3, 3] (x, y, z) of a coarse cell's fine cells, in the two-level grid's bit order
    ``sx + sub sy + sub^2 sz`` (:mod:`ngfx.render.ops.raymarch`)."""
    bit = torch.arange(sub ** 3, device=device)
    return torch.stack([bit % sub, (bit // sub) % sub, bit // (sub * sub)], dim=1)


@torch.no_grad()
def refine_occupancy(density_fn: Callable[[torch.Tensor], torch.Tensor], mask: torch.Tensor, aabb: torch.Tensor,
                     resolution: int, sub: int, dt: float, threshold: float = OPACITY_THRESHOLD, n_points: int = 4,
                     seed: int = 0, chunk: int = 2 ** 21) -> torch.Tensor:
    """The two-level render grid of a coarse ``mask`` [R^3]: int64 bits [R^3], bit ``sx + sub sy + sub^2 sz``
    of a cell set where its fine cell (``sub`` per axis: 2 or 4) could show a ray step.

    A fine cell of an occupied coarse cell is kept where the largest density of ``n_points`` random points in it
    (``density_fn``: world points [M, 3] -> [M]) gives a step opacity ``density * dt`` above ``threshold``, as
    :func:`density_occupancy` does, then grown by one fine cell and cut back to the coarse mask: the render
    samples are a subset of the coarse grid's, minus those in fine cells that showed no density. Only occupied
    coarse cells are evaluated (``mask.sum() * sub^3 * n_points`` queries). Deterministic for a ``seed``.
    """
    if sub not in (2, 4):  # a power of two: a point's fine and coarse cells then agree at every cell face
        raise ValueError(f"refine_occupancy: sub must be 2 or 4 (sub^3 bits in an int64), got {sub}")
    device, fine_resolution = mask.device, resolution * sub
    cells = torch.nonzero(mask)[:, 0]
    offsets = sub_cell_offsets(sub, device)
    generator = torch.Generator().manual_seed(seed)
    fine_index, shown = [], []
    for part in cells.split(max(1, chunk // sub ** 3)):
        fine = (cell_coords(part, resolution).long()[:, None, :] * sub + offsets).reshape(-1, 3)  # [m sub^3, 3]
        max_density = largest_density(density_fn, fine, aabb, fine_resolution, n_points, generator, chunk)
        fine_index.append(fine[:, 0] + fine[:, 1] * fine_resolution + fine[:, 2] * fine_resolution ** 2)
        shown.append(max_density * dt > threshold)
    fine_index = torch.cat(fine_index) if fine_index else torch.zeros(0, dtype=torch.long, device=device)
    dense = torch.zeros(fine_resolution ** 3, dtype=torch.bool, device=device)
    if shown:
        dense[fine_index] = torch.cat(shown)
    occupied = dilate(dense, fine_resolution)[fine_index].reshape(-1, sub ** 3)  # within the coarse mask
    bits = torch.zeros(resolution ** 3, dtype=torch.int64, device=device)
    bits[cells] = pack_fine_bits(occupied)
    return bits


def pack_fine_bits(occupied: torch.Tensor) -> torch.Tensor:
    """Fine cells [M, sub^3] bool (bit order of :func:`sub_cell_offsets`) -> one int64 [M] each."""
    weights = torch.ones(occupied.shape[1], dtype=torch.int64, device=occupied.device) << torch.arange(
        occupied.shape[1], device=occupied.device)
    return (occupied.long() * weights).sum(dim=1)  # distinct powers of two (bit 63 wraps): the sum is the bitwise or


def macro_occupancy(grid: torch.Tensor, resolution: int, factor: int) -> torch.Tensor:
    """The macro level of a render grid [R^3] (a mask, or the two-level grid's bits, x-fastest): bool [M^3], M = R /
    ``factor``, x-fastest, a macro cell occupied where any of its ``factor``^3 cells is (a non-zero entry)."""
    if factor < 2 or resolution % factor:
        raise ValueError(f"macro_occupancy: factor must be at least 2 and divide the grid's {resolution} cells per "
                         f"axis, got {factor}")
    m = resolution // factor
    blocks = (grid != 0).reshape(m, factor, m, factor, m, factor)  # (z, y, x) of the macro cell and within it
    return blocks.any(dim=5).any(dim=3).any(dim=1).flatten()


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
