"""Ray marching through an occupancy grid with fixed steps: the PyTorch references of NeRF's "rest" kernels.

* :func:`ray_gen` -- rays of a band of pixel rows and their entry/exit distances through the scene box;
* :func:`march_segment` -- for each active ray, the next ``K`` sample points in occupied cells (scanning at
  most ``max_scan`` fixed steps), advancing the ray; a render loop calls it until rays leave the box or
  their transmittance drops (early termination);
* :func:`march_training` -- all occupied samples of a batch of rays at once, packed (for training).

Samples sit at the midpoints ``t + (j + 0.5) dt`` of fixed steps of length ``dt``. Cells of the occupancy
grid are indexed x-fastest: ``cx + cy R + cz R^2``. The Triton twins live in
:mod:`ngfx.render.triton_volume` and compute exactly the same thing.
"""

from __future__ import annotations

import torch

from ngfx.render.cameras import Intrinsics
from ngfx.render.orbit_view import band_rays
from ngfx.render.sphere_trace import ray_box


def cell_index(points: torch.Tensor, aabb: torch.Tensor, resolution: int) -> torch.Tensor:
    """Occupancy cell of world points [..., 3] inside ``aabb`` [2, 3] -> int64 [...] (clamped to the grid)."""
    unit = (points - aabb[0]) / (aabb[1] - aabb[0])
    c = (unit * resolution).floor().long().clamp(0, resolution - 1)
    return c[..., 0] + c[..., 1] * resolution + c[..., 2] * (resolution * resolution)


def ray_aabb(origins: torch.Tensor, dirs: torch.Tensor, aabb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit distances [N] of rays through the box (t_near >= t_far: miss)."""
    return ray_box(origins, dirs, aabb[0], aabb[1])


def ray_gen(c2w: torch.Tensor, k: Intrinsics, row0: int, n_rows: int, aabb: torch.Tensor):
    """Rays of pixel rows [row0, row0 + n_rows) -> origins, dirs [n, 3], t_near, t_far [n]."""
    origins, dirs = band_rays(c2w, k, row0, n_rows)
    t_near, t_far = ray_aabb(origins, dirs, aabb)
    return origins, dirs, t_near, t_far


def march_segment(origins, dirs, active, t, t_far, occupancy, aabb, resolution: int, dt: float, k: int,
                  max_scan: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next ``k`` occupied samples of each active ray; ``t`` [R] is advanced in place.

    Args:
        origins, dirs: [R, 3]; active: [A] int64 ray ids; t, t_far: [R]; occupancy: [resolution^3] bool.
    Returns:
        t_samples [A, k] (sample distances), deltas [A, k] (``dt`` for a sample, 0 for an empty slot).
        Candidates ``j < max_scan`` are scanned; the ray then resumes after the k-th sample, or after
        ``max_scan`` steps when fewer were found.
    """
    steps = torch.arange(max_scan, device=t.device, dtype=torch.float32) + 0.5
    t_active = t[active]
    t_candidates = t_active[:, None] + steps * dt  # [A, max_scan]
    points = origins[active, None, :] + t_candidates[..., None] * dirs[active, None, :]
    valid = occupancy[cell_index(points, aabb, resolution)] & (t_candidates < t_far[active, None])
    rank = torch.cumsum(valid.int(), dim=1)
    take = valid & (rank <= k)
    rows, cols = torch.nonzero(take, as_tuple=True)
    t_samples = torch.zeros(active.numel(), k, device=t.device)
    deltas = torch.zeros(active.numel(), k, device=t.device)
    slot = rank[rows, cols] - 1
    t_samples[rows, slot] = t_candidates[rows, cols]
    deltas[rows, slot] = dt
    # resume after the k-th sample (its column index + 1) or after the whole scan
    full = rank[:, -1] >= k
    kth = torch.argmax((rank >= k).int(), dim=1)
    n_advanced = torch.where(full, kth + 1, torch.full_like(kth, max_scan))
    t[active] = t_active + n_advanced.float() * dt
    return t_samples, deltas


def march_training(origins, dirs, t_near, t_far, occupancy, aabb, resolution: int, dt: float, max_steps: int,
                   jitter: torch.Tensor | None = None):
    """All occupied samples of rays [R], packed and sorted by ray.

    Returns ray_indices [S] int64, t [S], deltas [S]. ``jitter`` [R] in [0, 1) shifts each ray's samples
    (training), 0.5 places them at step midpoints.
    """
    n_steps = ((t_far - t_near) / dt).ceil().clamp(0, max_steps)
    n_scan = max(1, int(n_steps.max())) if n_steps.numel() else 1
    offset = jitter if jitter is not None else torch.full_like(t_near, 0.5)
    j = torch.arange(n_scan, device=origins.device, dtype=torch.float32)
    t = t_near[:, None] + (j + offset[:, None]) * dt  # [R, n_scan]
    points = origins[:, None, :] + t[..., None] * dirs[:, None, :]
    valid = occupancy[cell_index(points, aabb, resolution)] & (j < n_steps[:, None]) & (t < t_far[:, None])
    ray_indices, cols = torch.nonzero(valid, as_tuple=True)
    t_samples = t[ray_indices, cols]
    return ray_indices, t_samples, torch.full_like(t_samples, dt)
