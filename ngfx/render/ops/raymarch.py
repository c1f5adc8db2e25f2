"""Ray marching through an occupancy grid with fixed steps: the PyTorch references of NeRF's "rest" kernels.

* :func:`ray_gen` -- rays of a band of pixel rows and their entry/exit distances through the scene box;
* :func:`march_segment` -- for each active ray, the next ``K`` sample points in occupied cells (at most
  ``max_scan`` iterations, each taking one step or jumping over one empty cell), advancing the ray;
* :func:`gather_samples` -- positions and directions of the occupied sample slots, for the network;
* :func:`composite_segment` -- fold a segment's densities and colours into each ray's running colour and
  transmittance, front to back (slots with a zero step contribute nothing);
* :func:`render_segments` -- the render loop NeRF and NVR share: march a segment, evaluate the samples,
  composite them, until rays leave the box or their transmittance drops (early termination);
* :func:`march_training` -- all occupied samples of a batch of rays at once, packed (for training).

Samples sit at the midpoints ``t + (j + 0.5) dt`` of fixed steps of length ``dt``. Cells of the occupancy
grid are indexed x-fastest: ``cx + cy R + cz R^2``. The Triton twins live in
:mod:`ngfx.render.ops.triton_raymarch` and compute exactly the same thing.
"""

from __future__ import annotations

from typing import Callable

import torch

from ngfx.render import stages
from ngfx.cameras import Intrinsics
from ngfx.render.orbit_view import band_rays
from ngfx.render.ops.sphere_trace import ray_box
from ngfx.render.ops.volume import composite

# Empty-space jumps stop this fraction of a cell short of the exit face: far above float32 rounding of
# positions, so a jump never passes an occupied lattice point; at worst it lands one point early.
SKIP_MARGIN = 1e-3


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


def cell_exit(origins, dirs, cells, aabb, resolution: int) -> torch.Tensor:
    """Ray distance [A] where each ray leaves its cell, pulled ``SKIP_MARGIN`` of a cell back inside.

    ``cells`` [A, 3] float are the cell coordinates of a point on each ray (origins, dirs [A, 3]). The
    margin is in position, not in ``t``: a lattice point before the returned distance lies inside the cell
    on every axis even for a ray nearly parallel to a face, whatever the rounding of ``t`` and of the point.
    """
    size = aabb[1] - aabb[0]
    cell = size / resolution
    margin = SKIP_MARGIN * cell
    safe_dirs = torch.where(dirs == 0, torch.ones_like(dirs), dirs)
    to_upper = (aabb[0] + (cells + 1.0) * cell - margin - origins) / safe_dirs
    to_lower = (aabb[0] + cells * cell + margin - origins) / safe_dirs
    per_axis = torch.where(dirs > 0, to_upper, torch.where(dirs < 0, to_lower, torch.full_like(dirs, float("inf"))))
    return per_axis.amin(dim=1)


def march_segment(origins, dirs, active, t, t_far, occupancy, aabb, resolution: int, dt: float, k: int,
                  max_scan: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next ``k`` occupied samples of each active ray, skipping empty cells; ``t`` [R] is advanced in place.

    Args:
        origins, dirs: [R, 3]; active: [A] int64 ray ids; t, t_far: [R]; occupancy: [resolution^3] bool.
    Returns:
        t_samples [A, k] (sample distances), deltas [A, k] (``dt`` for a sample, 0 for an empty slot).

    Each ray walks the lattice ``t + (j + 0.5) dt``, at most ``max_scan`` iterations: a lattice point in an
    occupied cell is taken (if before ``t_far``) and the walk moves one step; a point in an empty cell makes
    the walk jump to the first lattice point past the cell's exit (DDA), so crossing an empty cell costs one
    iteration however many steps it spans. The ray resumes after its ``k``-th sample, after its last
    iteration, or one step past ``t_far`` (so it leaves the render loop). The samples over a whole render are
    those of plain fixed-step marching: a jump only passes points of the same empty cell.
    """
    n_active, device = active.numel(), t.device
    t_samples = torch.zeros(n_active, k, device=device)
    deltas = torch.zeros(n_active, k, device=device)
    t0, far, o, d = t[active], t_far[active], origins[active], dirs[active]
    lo, size = aabb[0], aabb[1] - aabb[0]
    strides = torch.tensor([1, resolution, resolution * resolution], device=device)
    rows = torch.arange(n_active, device=device)
    j = torch.zeros(n_active, device=device)  # lattice index (float, as in the kernel)
    count = torch.zeros(n_active, dtype=torch.long, device=device)
    searching = torch.ones(n_active, dtype=torch.bool, device=device)
    for iteration in range(max_scan):
        # stop once every ray is done (as the kernel does); the check is a host sync, so not every iteration
        if iteration % 8 == 0 and not bool(searching.any()):
            break
        t_point = t0 + (j + 0.5) * dt
        cells = ((o + t_point[:, None] * d - lo) / size * resolution).floor().clamp(0.0, resolution - 1.0)
        inside = t_point < far
        occupied = searching & inside & occupancy[(cells.long() * strides).sum(dim=1)]
        slot = count.clamp(max=k - 1)  # a ray that is done writes its last slot back unchanged
        t_samples[rows, slot] = torch.where(occupied, t_point, t_samples[rows, slot])
        deltas[rows, slot] = torch.where(occupied, dt, deltas[rows, slot])
        count += occupied.long()
        j_past_cell = ((cell_exit(o, d, cells, aabb, resolution) - t0) / dt - 0.5).ceil()
        step = torch.where(occupied | ~inside, j + 1.0, torch.maximum(j + 1.0, j_past_cell))
        j = torch.where(searching, step, j)
        searching = searching & inside & (count < k)
    t[active] = t0 + j * dt
    return t_samples, deltas


def gather_samples(origins, dirs, active, t_samples, slots, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and directions [S, 3] of the occupied ``slots`` [S] (flat indices into ``t_samples`` [A, k])."""
    ray = active[slots // k]
    sample_dirs = dirs[ray]
    return origins[ray] + t_samples.flatten()[slots, None] * sample_dirs, sample_dirs


def composite_segment(colour, transmittance, active, sigmas, rgbs, deltas, k: int) -> None:
    """colour [R, 3], transmittance [R] updated in place with the active rays' segments (sigmas, deltas [A*K],
    rgbs [A*K, 3]), composited with :func:`ngfx.render.ops.volume.composite`."""
    n_active = active.numel()
    ray_indices = torch.arange(n_active, device=sigmas.device).repeat_interleave(k)
    seg_rgb, seg_opacity = composite(sigmas, rgbs, deltas, ray_indices, n_active)
    colour[active] += transmittance[active, None] * seg_rgb
    transmittance[active] *= 1.0 - seg_opacity


def render_segments(origins, dirs, t_start, t_far, occupancy, aabb, resolution: int, dt: float,
                    query: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                    background: torch.Tensor, *, app: str, fused: bool, segment: int, max_scan: int,
                    min_transmittance: float) -> torch.Tensor:
    """Colour [n, 3] of rays marched segment by segment through the occupancy grid, over ``background`` [3].

    Each pass takes the next ``segment`` occupied samples of every active ray (:func:`march_segment`),
    evaluates ``query(points [S, 3], dirs [S, 3]) -> (sigma [S], rgb [S, 3])`` on the samples found,
    composites them front to back and drops rays that left the box or whose transmittance fell below
    ``min_transmittance`` (early termination). ``fused`` picks the Triton kernels; the stages are named
    ``{app}.march``, ``{app}.compact`` and ``{app}.composite``.
    """
    if fused:
        from ngfx.render.ops import triton_raymarch  # imports triton

        march, gather, composite = (triton_raymarch.march_segment, triton_raymarch.gather_samples,
                                    triton_raymarch.composite_segment)
    else:
        march, gather, composite = march_segment, gather_samples, composite_segment
    n, device = origins.shape[0], origins.device
    t = t_start.clone().contiguous()
    colour = torch.zeros(n, 3, device=device)
    transmittance = torch.ones(n, device=device)
    active = torch.nonzero(t < t_far)[:, 0]
    while active.numel():
        n_slots = active.numel() * segment
        with stages.stage(f"{app}.march", "rest", n_inputs=active.numel() * max_scan, bytes_read=active.numel() * 32.0,
                          bytes_written=n_slots * 8.0, app=app, fused=fused):
            t_samples, deltas = march(origins, dirs, active, t, t_far, occupancy, aabb, resolution, dt, segment,
                                      max_scan)
        with stages.stage(f"{app}.compact", "rest", n_inputs=n_slots, bytes_read=n_slots * 8.0, app=app):
            slots = torch.nonzero(deltas.flatten() > 0)[:, 0]
            points, sample_dirs = gather(origins, dirs, active, t_samples, slots, segment)
        sigmas = torch.zeros(n_slots, device=device)
        rgbs = torch.zeros(n_slots, 3, device=device)
        if slots.numel():
            sigmas[slots], rgbs[slots] = query(points, sample_dirs)
        with stages.stage(f"{app}.composite", "rest", n_inputs=n_slots, bytes_read=n_slots * 20.0,
                          bytes_written=active.numel() * 16.0, app=app, fused=fused):
            composite(colour, transmittance, active, sigmas, rgbs, deltas.flatten(), segment)
        with stages.stage(f"{app}.compact", "rest", n_inputs=active.numel(), app=app):
            keep = (transmittance[active] > min_transmittance) & (t[active] < t_far[active])
            active = active[keep]
    return colour + transmittance[:, None] * background


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
