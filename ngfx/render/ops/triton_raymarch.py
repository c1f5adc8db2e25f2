"""Fused Triton "rest" kernels of NeRF rendering, each the twin of a function in :mod:`ngfx.render.ops.raymarch`.

* :func:`ray_gen` -- pixel -> undistorted camera ray -> world ray -> box entry/exit, one kernel per band;
* :func:`march_packed` -- per active ray, walk the fixed-step lattice, look up the occupancy grid (and its macro
  level, if any), jump over empty cells, take the next ``K`` occupied samples and advance the ray; then pack the
  block's samples (positions, directions) for the network and list its rays with lattice left: one kernel instead
  of a loop of torch ops, a compaction and a gather;
* :func:`composite_segment` -- front-to-back compositing of each active ray's packed samples and early
  termination, one kernel;
* :func:`training_rays` -- a training batch's rays through random pixels of random images, their colours and
  backgrounds, one kernel;
* :func:`march_training` -- every occupied sample of a training batch, packed: a counting and a writing pass
  of one kernel (each lane walks a ray's whole lattice, jumping over empty cells) around a scan of the counts.

NeRF and NVR both render through these (:func:`ngfx.render.ops.raymarch.render_segments`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.cameras import Intrinsics
from ngfx.render.ops.raymarch import (SKIP_MARGIN, PackedSegment, TrainingSamples, macro_resolution, padding,
                                      slot_count)
from ngfx.render.ops.triton_volume import load3
from ngfx.render.ops.volume import MAX_OPTICAL_DEPTH

BLOCK = 128
# rays a marching program takes and its warps: a block walks until its last ray is done and counts its rays still
# walking at every step (a reduction across its warps), so one warp of 32 rays wastes the least. H200, Lego 4K
# (703a117, bench_render --knobs): 128 x 4 warps 42.13 ms, 64 x 1 43.93, 32 x 1 39.51 (BENCHMARKS.md, issue 14)
MARCH_BLOCK = 32
MARCH_WARPS = 1
COMPOSITE_BLOCK = 128  # rays a compositing program takes
COMPOSITE_CHUNK = 8  # samples of each ray it reads at a time: the first pass's segment
UNDISTORT_ITERATIONS = 10  # as cameras.undistort


@triton.jit
def camera_xy(px, py, fx, fy, cx, cy, k1, k2, p1, p2, DISTORTED: tl.constexpr, ITERATIONS: tl.constexpr):
    """Pixel coordinates -> normalised, undistorted camera coordinates (as cameras.pixel_rays / undistort)."""
    x0 = (px - cx) / fx
    y0 = (py - cy) / fy
    x, y = x0, y0
    if DISTORTED:
        for _ in tl.static_range(ITERATIONS):
            r2 = x * x + y * y
            radial = 1 + k1 * r2 + k2 * r2 * r2
            dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            x, y = (x0 - dx) / radial, (y0 - dy) / radial
    return x, y


@triton.jit
def camera_to_world(x, y, r00, r01, r02, r10, r11, r12, r20, r21, r22):
    """Normalised camera coordinates -> the world direction (not of unit length) of camera-space (x, -y, -1)
    (+x right, +y up, looking down -z, as cameras.pixel_rays), rotated by the pose's rows r0*, r1*, r2*."""
    return r00 * x - r01 * y - r02, r10 * x - r11 * y - r12, r20 * x - r21 * y - r22


@triton.jit
def band_pixel_direction(i, width, row0, fx, fy, cx, cy, k1, k2, p1, p2, r00, r01, r02, r10, r11, r12, r20, r21, r22,
                         DISTORTED: tl.constexpr, ITERATIONS: tl.constexpr):
    """The world direction (not of unit length) through the centre of pixel (i % width, row0 + i // width) of a
    band of rows, as cameras.pixel_rays makes it (pose rows r0*, r1*, r2*)."""
    px = (i % width).to(tl.float32) + 0.5
    py = (row0 + i // width).to(tl.float32) + 0.5
    x, y = camera_xy(px, py, fx, fy, cx, cy, k1, k2, p1, p2, DISTORTED, ITERATIONS)
    return camera_to_world(x, y, r00, r01, r02, r10, r11, r12, r20, r21, r22)


@triton.jit
def unit(x, y, z):
    """(x, y, z) scaled to unit length."""
    norm = tl.sqrt(x * x + y * y + z * z)
    return x / norm, y / norm, z / norm


@triton.jit
def box_entry_exit(ox, oy, oz, dx, dy, dz, lo_x, lo_y, lo_z, hi_x, hi_y, hi_z):
    """Entry and exit distances of rays through the box [lo, hi] (entry at 0 at the least; entry >= exit: a
    miss), as :func:`ngfx.render.ops.sphere_trace.ray_box`."""
    ix = 1.0 / tl.where(tl.abs(dx) < 1e-9, 1e-9, dx)
    iy = 1.0 / tl.where(tl.abs(dy) < 1e-9, 1e-9, dy)
    iz = 1.0 / tl.where(tl.abs(dz) < 1e-9, 1e-9, dz)
    ax, bx = (lo_x - ox) * ix, (hi_x - ox) * ix
    ay, by = (lo_y - oy) * iy, (hi_y - oy) * iy
    az, bz = (lo_z - oz) * iz, (hi_z - oz) * iz
    t_near = tl.maximum(tl.maximum(tl.maximum(tl.minimum(ax, bx), tl.minimum(ay, by)), tl.minimum(az, bz)), 0.0)
    t_far = tl.minimum(tl.minimum(tl.maximum(ax, bx), tl.maximum(ay, by)), tl.maximum(az, bz))
    return t_near, t_far


@triton.jit
def _store_box_ray(i, mask, ox, oy, oz, wx, wy, wz, aabb_ptr, o_ptr, d_ptr, t_near_ptr, t_far_ptr):
    """Rays ``i`` [BLOCK] from (ox, oy, oz) along world directions (wx, wy, wz), not yet of unit length, stored as
    rows of origins and unit directions [n, 3] and their entry/exit distances [n] through the box ``aabb``
    [2, 3] (as raymarch.ray_aabb). A scalar origin (one camera for all the rays) is broadcast."""
    dx, dy, dz = unit(wx, wy, wz)
    t_near, t_far = box_entry_exit(ox, oy, oz, dx, dy, dz, tl.load(aabb_ptr), tl.load(aabb_ptr + 1),
                                   tl.load(aabb_ptr + 2), tl.load(aabb_ptr + 3), tl.load(aabb_ptr + 4),
                                   tl.load(aabb_ptr + 5))
    tl.store(o_ptr + i * 3, ox + 0.0 * dx, mask=mask)
    tl.store(o_ptr + i * 3 + 1, oy + 0.0 * dy, mask=mask)
    tl.store(o_ptr + i * 3 + 2, oz + 0.0 * dz, mask=mask)
    tl.store(d_ptr + i * 3, dx, mask=mask)
    tl.store(d_ptr + i * 3 + 1, dy, mask=mask)
    tl.store(d_ptr + i * 3 + 2, dz, mask=mask)
    tl.store(t_near_ptr + i, t_near, mask=mask)
    tl.store(t_far_ptr + i, t_far, mask=mask)


@triton.jit
def _ray_gen_kernel(c2w_ptr, aabb_ptr, o_ptr, d_ptr, t_near_ptr, t_far_ptr, n, width, row0,
                    fx, fy, cx, cy, k1, k2, p1, p2, DISTORTED: tl.constexpr, ITERATIONS: tl.constexpr,
                    BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    wx, wy, wz = band_pixel_direction(i, width, row0, fx, fy, cx, cy, k1, k2, p1, p2, tl.load(c2w_ptr),
                                      tl.load(c2w_ptr + 1), tl.load(c2w_ptr + 2), tl.load(c2w_ptr + 4),
                                      tl.load(c2w_ptr + 5), tl.load(c2w_ptr + 6), tl.load(c2w_ptr + 8),
                                      tl.load(c2w_ptr + 9), tl.load(c2w_ptr + 10), DISTORTED, ITERATIONS)
    _store_box_ray(i, mask, tl.load(c2w_ptr + 3), tl.load(c2w_ptr + 7), tl.load(c2w_ptr + 11), wx, wy, wz, aabb_ptr,
                  o_ptr, d_ptr, t_near_ptr, t_far_ptr)


def ray_gen(c2w: torch.Tensor, k: Intrinsics, row0: int, n_rows: int, aabb: torch.Tensor):
    """Fused twin of :func:`ngfx.render.ops.raymarch.ray_gen`."""
    n, device = n_rows * k.width, c2w.device
    origins = torch.empty(n, 3, device=device)
    dirs = torch.empty(n, 3, device=device)
    t_near = torch.empty(n, device=device)
    t_far = torch.empty(n, device=device)
    _ray_gen_kernel[(triton.cdiv(n, BLOCK),)](
        c2w.float().contiguous(), aabb.float().contiguous(), origins, dirs, t_near, t_far, n, k.width, row0,
        float(k.fx), float(k.fy), float(k.cx), float(k.cy), float(k.k1), float(k.k2), float(k.p1), float(k.p2),
        DISTORTED=k.distorted, ITERATIONS=UNDISTORT_ITERATIONS, BLOCK=BLOCK)
    return origins, dirs, t_near, t_far


@triton.jit
def load_ray(o_ptr, d_ptr, ray, mask):
    """Origin and direction of rays ``ray`` (rows of [R, 3] arrays) -> ox, oy, oz, dx, dy, dz."""
    ox, oy, oz = load3(o_ptr, ray, mask)
    dx, dy, dz = load3(d_ptr, ray, mask)
    return ox, oy, oz, dx, dy, dz


@triton.jit
def load_box(box_ptr):
    """A box [2, 3] (lower and upper corner) -> its lower corner and size: lo_x, lo_y, lo_z, size_x, size_y, size_z."""
    lo_x, lo_y, lo_z = tl.load(box_ptr), tl.load(box_ptr + 1), tl.load(box_ptr + 2)
    return lo_x, lo_y, lo_z, tl.load(box_ptr + 3) - lo_x, tl.load(box_ptr + 4) - lo_y, tl.load(box_ptr + 5) - lo_z


@triton.jit
def _cell_exit_axis(o, d, cell_coord, lo, cell, margin):
    """Distance to the exit face of the cell along one axis (see raymarch.cell_exit); inf if parallel. One division:
    the face the ray leaves through is picked first."""
    face = tl.where(d > 0, lo + (cell_coord + 1.0) * cell - margin, lo + cell_coord * cell + margin)
    return tl.where(d == 0, float("inf"), (face - o) / tl.where(d == 0, 1.0, d))


@triton.jit
def lattice_step(ox, oy, oz, dx, dy, dz, t0, j, t_far, searching, occ_ptr, lo_x, lo_y, lo_z, size_x, size_y, size_z,
                 dt, R: tl.constexpr, SKIP_MARGIN: tl.constexpr, SUB: tl.constexpr, macro_ptr=None,
                 MACRO: tl.constexpr = 0):
    """One marching iteration of rays at lattice index ``j`` (see raymarch.march_segment) -> (the point's
    distance ``t0 + (j + 0.5) dt``, whether it is before ``t_far``, whether it is taken: ``searching``, inside and
    in an occupied cell, the next lattice index: one step, or past the cell's exit when the cell is empty).
    ``SUB`` 1: ``occ_ptr`` is the mask (uint8); else the two-level grid's int64 bits (raymarch.occupancy_lookup).
    ``MACRO`` > 1: ``macro_ptr`` is the grid's macro mask (uint8, ``R / MACRO`` cells per axis); a point in an empty
    macro cell jumps past the macro cell (its coarse cell is empty too: the macro mask is built from the grid)."""
    t = t0 + (j + 0.5) * dt
    px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
    fx = tl.minimum(tl.maximum(tl.floor((px - lo_x) / size_x * R), 0.0), R - 1.0)
    fy = tl.minimum(tl.maximum(tl.floor((py - lo_y) / size_y * R), 0.0), R - 1.0)
    fz = tl.minimum(tl.maximum(tl.floor((pz - lo_z) / size_z * R), 0.0), R - 1.0)
    cell = fx.to(tl.int32) + fy.to(tl.int32) * R + fz.to(tl.int32) * (R * R)
    inside = t < t_far
    looked_up = searching & inside  # the lanes that read the grid
    if MACRO > 1:
        # the macro cell of the coarse cell (not of the point, whose rounding could differ at a face); read alongside
        # the grid, not before it: the two loads' latencies overlap
        mx, my, mz = tl.floor(fx / MACRO), tl.floor(fy / MACRO), tl.floor(fz / MACRO)
        macro_cell = mx.to(tl.int32) + my.to(tl.int32) * (R // MACRO) + mz.to(tl.int32) * ((R // MACRO) * (R // MACRO))
        macro_empty = looked_up & (tl.load(macro_ptr + macro_cell, mask=looked_up, other=0) == 0)
    if SUB == 1:
        occupied = looked_up & (tl.load(occ_ptr + cell, mask=looked_up, other=0) != 0)
    else:
        bits = tl.load(occ_ptr + cell, mask=looked_up, other=0)
        coarse = bits != 0
        gx = tl.minimum(tl.maximum(tl.floor((px - lo_x) / size_x * (R * SUB)), 0.0), R * SUB - 1.0)
        gy = tl.minimum(tl.maximum(tl.floor((py - lo_y) / size_y * (R * SUB)), 0.0), R * SUB - 1.0)
        gz = tl.minimum(tl.maximum(tl.floor((pz - lo_z) / size_z * (R * SUB)), 0.0), R * SUB - 1.0)
        sx = tl.minimum(tl.maximum(gx - fx * SUB, 0.0), SUB - 1.0).to(tl.int64)
        sy = tl.minimum(tl.maximum(gy - fy * SUB, 0.0), SUB - 1.0).to(tl.int64)
        sz = tl.minimum(tl.maximum(gz - fz * SUB, 0.0), SUB - 1.0).to(tl.int64)
        fine = ((bits >> (sx + sy * SUB + sz * (SUB * SUB))) & 1) != 0
        occupied = looked_up & coarse & fine
        # an empty fine cell of an occupied coarse cell is the one jumped over
        fx, fy, fz = tl.where(coarse, gx, fx), tl.where(coarse, gy, fy), tl.where(coarse, gz, fz)
    # cell sizes of the level jumped over: per block, not per lane (the same quotients as size / resolution per lane)
    if SUB == 1:
        cell_x, cell_y, cell_z = size_x / R, size_y / R, size_z / R
    else:
        cell_x = tl.where(coarse, size_x / (R * SUB), size_x / R)
        cell_y = tl.where(coarse, size_y / (R * SUB), size_y / R)
        cell_z = tl.where(coarse, size_z / (R * SUB), size_z / R)
    if MACRO > 1:  # an empty macro cell is the one jumped over
        occupied = occupied & (macro_empty == 0)
        fx, fy, fz = tl.where(macro_empty, mx, fx), tl.where(macro_empty, my, fy), tl.where(macro_empty, mz, fz)
        cell_x = tl.where(macro_empty, size_x / (R // MACRO), cell_x)
        cell_y = tl.where(macro_empty, size_y / (R // MACRO), cell_y)
        cell_z = tl.where(macro_empty, size_z / (R // MACRO), cell_z)
    exit_t = tl.minimum(tl.minimum(_cell_exit_axis(ox, dx, fx, lo_x, cell_x, SKIP_MARGIN * cell_x),
                                   _cell_exit_axis(oy, dy, fy, lo_y, cell_y, SKIP_MARGIN * cell_y)),
                        _cell_exit_axis(oz, dz, fz, lo_z, cell_z, SKIP_MARGIN * cell_z))
    j_past_cell = tl.ceil((exit_t - t0) / dt - 0.5)
    return t, inside, occupied, tl.where(occupied | (inside == 0), j + 1.0, tl.maximum(j + 1.0, j_past_cell))


@triton.jit
def _unit_coordinate(x, lo, size):
    return tl.minimum(tl.maximum((x - lo) / size, 0.0), 1.0)


@triton.jit
def _reserve(counter_ptr, amounts, BLOCK: tl.constexpr):
    """Room for a block's ``amounts`` [BLOCK] (int32) at the end of a list sized by the int32 ``counter``: one atomic
    add per program -> each lane's first position, the lanes' room laid out in lane order."""
    lane = tl.arange(0, BLOCK)
    first_lane = lane == 0
    old = tl.atomic_add(counter_ptr + lane * 0, tl.where(first_lane, tl.sum(amounts, axis=0), 0), mask=first_lane)
    base = tl.sum(tl.where(first_lane, old, 0), axis=0)
    return (base + tl.cumsum(amounts, axis=0) - amounts).to(tl.int64)


@triton.jit
def _march_kernel(o_ptr, d_ptr, active_ptr, t_ptr, t_far_ptr, occ_ptr, macro_ptr, aabb_ptr, scratch_ptr,
                  counter_ptr, points_ptr, dirs_out_ptr, start_ptr, count_ptr, next_ptr, n_active, dt,
                  MAX_SCAN: tl.constexpr, R: tl.constexpr, K: tl.constexpr, K_CHUNK: tl.constexpr,
                  SKIP_MARGIN: tl.constexpr, SUB: tl.constexpr, MACRO: tl.constexpr, BLOCK: tl.constexpr):
    """March (the samples' distances into the rays' ``K`` scratch slots, a [K, BLOCK] array per program), then pack:
    the block's samples get consecutive positions from ``counter[0]`` on, its rays with lattice left from
    ``counter[1]`` on."""
    lane = tl.arange(0, BLOCK)
    a = tl.program_id(0) * BLOCK + lane
    mask = a < n_active
    ray = tl.load(active_ptr + a, mask=mask, other=0)
    t0 = tl.load(t_ptr + ray, mask=mask, other=0.0)
    t_far = tl.load(t_far_ptr + ray, mask=mask, other=0.0)
    ox, oy, oz, dx, dy, dz = load_ray(o_ptr, d_ptr, ray, mask)
    lo_x, lo_y, lo_z, size_x, size_y, size_z = load_box(aabb_ptr)
    j = tl.zeros([BLOCK], dtype=tl.float32)  # lattice index of the ray's next point
    count = tl.zeros([BLOCK], dtype=tl.int32)
    scratch = scratch_ptr + tl.program_id(0).to(tl.int64) * (K * BLOCK) + lane  # the program's [K, BLOCK] slots
    searching = mask
    n_searching = tl.sum(searching.to(tl.int32), axis=0)
    iteration = 0
    # the block stops as soon as all its rays are done, rather than after MAX_SCAN iterations
    while (iteration < MAX_SCAN) & (n_searching > 0):
        t, inside, occupied, step = lattice_step(ox, oy, oz, dx, dy, dz, t0, j, t_far, searching, occ_ptr, lo_x, lo_y,
                                                 lo_z, size_x, size_y, size_z, dt, R, SKIP_MARGIN, SUB, macro_ptr,
                                                 MACRO)
        # slot ``count`` of every lane side by side: lanes taking their n-th sample together store one run
        tl.store(scratch + count * BLOCK, t, mask=occupied)
        count += occupied.to(tl.int32)
        j = tl.where(searching, step, j)
        searching = searching & inside & (count < K)
        n_searching = tl.sum(searching.to(tl.int32), axis=0)
        iteration += 1
    t_end = t0 + j * dt
    tl.store(t_ptr + ray, t_end, mask=mask)
    start = _reserve(counter_ptr, count, BLOCK)
    tl.store(start_ptr + a, start, mask=mask)
    tl.store(count_ptr + a, count.to(tl.int64), mask=mask)
    # the tile below reads slots other lanes wrote
    tl.debug_barrier()
    for c0 in tl.static_range(0, K, K_CHUNK):
        column = c0 + tl.arange(0, K_CHUNK)[None, :]
        taken = mask[:, None] & (column < count[:, None])
        t_tile = tl.load(scratch[:, None] + column * BLOCK, mask=taken, other=0.0)
        slot = (start[:, None] + column) * 3
        # in the box's unit cube, as raymarch.unit_points
        tl.store(points_ptr + slot, _unit_coordinate(ox[:, None] + t_tile * dx[:, None], lo_x, size_x), mask=taken)
        tl.store(points_ptr + slot + 1, _unit_coordinate(oy[:, None] + t_tile * dy[:, None], lo_y, size_y), mask=taken)
        tl.store(points_ptr + slot + 2, _unit_coordinate(oz[:, None] + t_tile * dz[:, None], lo_z, size_z), mask=taken)
        tl.store(dirs_out_ptr + slot, dx[:, None] + 0.0 * t_tile, mask=taken)
        tl.store(dirs_out_ptr + slot + 1, dy[:, None] + 0.0 * t_tile, mask=taken)
        tl.store(dirs_out_ptr + slot + 2, dz[:, None] + 0.0 * t_tile, mask=taken)
    going_on = mask & (t_end < t_far)
    position = _reserve(counter_ptr + 1, going_on.to(tl.int32), BLOCK)
    tl.store(next_ptr + position, ray, mask=going_on)


class PendingSegment:
    """A fused march's packed segment whose sizes are on their way to the host: :meth:`result` waits for them (on a
    GPU only for the march itself, through an event, not for the work queued after it)."""

    def __init__(self, buffers: tuple[torch.Tensor, ...], counters: torch.Tensor):
        self.buffers = buffers
        if counters.is_cuda:
            self.counters = torch.empty(counters.shape, dtype=counters.dtype, pin_memory=True)
            self.counters.copy_(counters, non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record(torch.cuda.current_stream(counters.device))
        else:
            self.counters, self.ready = counters, None

    def result(self) -> PackedSegment:
        if self.ready is not None:
            self.ready.synchronize()
        n_samples, n_going_on = self.counters.tolist()
        points, sample_dirs, starts, counts, next_rays = self.buffers
        return PackedSegment(points[:n_samples], sample_dirs[:n_samples], starts, counts, next_rays[:n_going_on])


def march_packed(origins, dirs, active, t, t_far, occupancy, aabb, resolution: int, dt: float, k: int,
                 max_scan: int, sub: int = 1, macro: torch.Tensor | None = None,
                 wait: bool = True) -> PackedSegment | PendingSegment:
    """Fused twin of :func:`ngfx.render.ops.raymarch.march_packed` (same arguments; the rays' blocks of samples and
    the rays going on in any order). Reading the packed sizes is a host sync; with ``wait`` False it is left to the
    :class:`PendingSegment` returned."""
    n_active, device = active.numel(), t.device
    grid = grid_operand(occupancy, sub)
    # without a macro level the kernel is given the grid in its place, never read (MACRO 0)
    macro_factor = resolution // macro_resolution(macro, resolution) if macro is not None else 0
    macro_grid = macro.contiguous().view(torch.uint8) if macro is not None else grid
    scratch = torch.empty(triton.cdiv(n_active, MARCH_BLOCK) * MARCH_BLOCK * k, device=device)
    points = torch.empty(n_active * k, 3, device=device)
    sample_dirs = torch.empty(n_active * k, 3, device=device)
    starts = torch.empty(n_active, dtype=torch.long, device=device)
    counts = torch.empty(n_active, dtype=torch.long, device=device)
    next_rays = torch.empty(n_active, dtype=torch.long, device=device)
    counters = torch.zeros(2, dtype=torch.int32, device=device)
    if n_active:
        _march_kernel[(triton.cdiv(n_active, MARCH_BLOCK),)](
            origins.contiguous(), dirs.contiguous(), active, t, t_far.contiguous(), grid, macro_grid,
            aabb.float().contiguous(), scratch, counters, points, sample_dirs, starts, counts, next_rays, n_active,
            float(dt), MAX_SCAN=int(max_scan), R=resolution, K=k, K_CHUNK=min(triton.next_power_of_2(k), 8),
            SKIP_MARGIN=SKIP_MARGIN, SUB=sub, MACRO=macro_factor, BLOCK=MARCH_BLOCK, num_warps=MARCH_WARPS)
    pending = PendingSegment((points, sample_dirs, starts, counts, next_rays), counters)
    return pending.result() if wait else pending


def grid_operand(occupancy: torch.Tensor, sub: int) -> torch.Tensor:
    """The occupancy grid as :func:`lattice_step` reads it: the mask as uint8 (``sub`` 1), else the int64 bits."""
    if sub == 1:
        return occupancy.contiguous().view(torch.uint8)
    if occupancy.dtype != torch.int64:
        raise ValueError(f"a two-level occupancy grid (sub={sub}) is int64 bits, got {occupancy.dtype}")
    return occupancy.contiguous()


@triton.jit
def _composite_kernel(colour_ptr, trans_ptr, active_ptr, start_ptr, count_ptr, sigma_ptr, rgb_ptr, t_ptr, t_far_ptr,
                      n_active, dt, min_transmittance, CHUNK: tl.constexpr, MAX_OPTICAL_DEPTH: tl.constexpr,
                      BLOCK: tl.constexpr):
    """Each row of a [BLOCK, CHUNK] tile reads ``CHUNK`` consecutive packed samples of its ray (coalesced, where a
    lane per ray reading one sample at a time touched a sector per value), composited in closed form as the twin
    does: a sample's weight is the light left before it, exp(-optical depth so far), times its opacity
    1 - exp(-sigma dt). A ray left with too little light moves to its exit."""
    a = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = a < n_active
    ray = tl.load(active_ptr + a, mask=mask, other=0)
    trans = tl.load(trans_ptr + ray, mask=mask, other=0.0)
    start = tl.load(start_ptr + a, mask=mask, other=0)
    count = tl.load(count_ptr + a, mask=mask, other=0)
    r = tl.zeros([BLOCK], dtype=tl.float32)
    g = tl.zeros([BLOCK], dtype=tl.float32)
    b = tl.zeros([BLOCK], dtype=tl.float32)
    longest = tl.max(count, axis=0)
    c0 = 0
    while c0 < longest:
        column = c0 + tl.arange(0, CHUNK)[None, :]
        tile = mask[:, None] & (column < count[:, None])
        slot = start[:, None] + column
        # as volume.capped_optical_depth: capped so an inf density is opaque, not inf - inf
        optical = tl.where(tile, tl.minimum(tl.load(sigma_ptr + slot, mask=tile, other=0.0) * dt, MAX_OPTICAL_DEPTH),
                           0.0)
        depth = tl.cumsum(optical, axis=1)  # within the chunk, up to and including each sample
        weight = trans[:, None] * tl.exp(optical - depth) * (1.0 - tl.exp(-optical))
        r += tl.sum(weight * tl.load(rgb_ptr + slot * 3, mask=tile, other=0.0), axis=1)
        g += tl.sum(weight * tl.load(rgb_ptr + slot * 3 + 1, mask=tile, other=0.0), axis=1)
        b += tl.sum(weight * tl.load(rgb_ptr + slot * 3 + 2, mask=tile, other=0.0), axis=1)
        trans = trans * tl.exp(-tl.sum(optical, axis=1))
        c0 += CHUNK
    tl.store(colour_ptr + ray * 3, tl.load(colour_ptr + ray * 3, mask=mask, other=0.0) + r, mask=mask)
    tl.store(colour_ptr + ray * 3 + 1, tl.load(colour_ptr + ray * 3 + 1, mask=mask, other=0.0) + g, mask=mask)
    tl.store(colour_ptr + ray * 3 + 2, tl.load(colour_ptr + ray * 3 + 2, mask=mask, other=0.0) + b, mask=mask)
    tl.store(trans_ptr + ray, trans, mask=mask)
    ended = mask & ~(trans > min_transmittance)  # as the twin keeps only rays above it (a NaN ends too)
    tl.store(t_ptr + ray, tl.load(t_far_ptr + ray, mask=ended, other=0.0), mask=ended)


def composite_segment(colour, transmittance, active, starts, counts, sigmas, rgbs, dt: float, t, t_far,
                      min_transmittance: float) -> None:
    """Fused twin of :func:`ngfx.render.ops.raymarch.composite_segment` (same arguments, updates in place)."""
    n_active = active.numel()
    if n_active:
        _composite_kernel[(triton.cdiv(n_active, COMPOSITE_BLOCK),)](
            colour, transmittance, active, starts, counts, sigmas.contiguous(), rgbs.contiguous(), t,
            t_far.contiguous(), n_active, float(dt), float(min_transmittance), CHUNK=COMPOSITE_CHUNK,
            MAX_OPTICAL_DEPTH=MAX_OPTICAL_DEPTH, BLOCK=COMPOSITE_BLOCK)


@triton.jit
def _training_rays_kernel(poses_ptr, images_ptr, uniforms_ptr, aabb_ptr, o_ptr, d_ptr, t_near_ptr, t_far_ptr,
                          target_ptr, bg_ptr, n, n_images, height, width, fx, fy, cx, cy, k1, k2, p1, p2,
                          CHANNELS: tl.constexpr, DISTORTED: tl.constexpr, ITERATIONS: tl.constexpr,
                          BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    image = tl.minimum((tl.load(uniforms_ptr + i * 6, mask=mask, other=0.0) * n_images).to(tl.int64), n_images - 1)
    px = tl.load(uniforms_ptr + i * 6 + 1, mask=mask, other=0.0) * width
    py = tl.load(uniforms_ptr + i * 6 + 2, mask=mask, other=0.0) * height
    x, y = camera_xy(px, py, fx, fy, cx, cy, k1, k2, p1, p2, DISTORTED, ITERATIONS)
    c2w = poses_ptr + image * 16
    # rotated into the world by the ray's own pose (a masked lane's: the identity)
    wx, wy, wz = camera_to_world(
        x, y, tl.load(c2w, mask=mask, other=1.0), tl.load(c2w + 1, mask=mask, other=0.0),
        tl.load(c2w + 2, mask=mask, other=0.0), tl.load(c2w + 4, mask=mask, other=0.0),
        tl.load(c2w + 5, mask=mask, other=1.0), tl.load(c2w + 6, mask=mask, other=0.0),
        tl.load(c2w + 8, mask=mask, other=0.0), tl.load(c2w + 9, mask=mask, other=0.0),
        tl.load(c2w + 10, mask=mask, other=1.0))
    _store_box_ray(i, mask, tl.load(c2w + 3, mask=mask, other=0.0), tl.load(c2w + 7, mask=mask, other=0.0),
                  tl.load(c2w + 11, mask=mask, other=0.0), wx, wy, wz, aabb_ptr, o_ptr, d_ptr, t_near_ptr, t_far_ptr)
    pixel = images_ptr + ((image * height + tl.minimum(py.to(tl.int64), height - 1)) * width
                          + tl.minimum(px.to(tl.int64), width - 1)) * CHANNELS
    if CHANNELS == 4:
        alpha = tl.load(pixel + 3, mask=mask, other=0).to(tl.float32) / 255.0
    for c in tl.static_range(3):
        colour = tl.load(pixel + c, mask=mask, other=0).to(tl.float32) / 255.0
        if CHANNELS == 4:
            background = tl.load(uniforms_ptr + i * 6 + 3 + c, mask=mask, other=0.0)
            colour = colour * alpha + background * (1.0 - alpha)
        else:
            background = 1.0 + 0.0 * colour
        tl.store(target_ptr + i * 3 + c, colour, mask=mask)
        tl.store(bg_ptr + i * 3 + c, background, mask=mask)


def training_rays(poses: torch.Tensor, images: torch.Tensor, k: Intrinsics, aabb: torch.Tensor,
                  uniforms: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Fused twin of :func:`ngfx.render.ops.raymarch.training_rays` (same arguments and results)."""
    n_images, height, width, channels = images.shape
    n, device = uniforms.shape[0], uniforms.device
    origins, dirs, target, background = (torch.empty(n, 3, device=device) for _ in range(4))
    t_near, t_far = torch.empty(n, device=device), torch.empty(n, device=device)
    if n:
        _training_rays_kernel[(triton.cdiv(n, BLOCK),)](
            poses.float().contiguous(), images.contiguous(), uniforms.float().contiguous(), aabb.float().contiguous(),
            origins, dirs, t_near, t_far, target, background, n, n_images, height, width, float(k.fx), float(k.fy),
            float(k.cx), float(k.cy), float(k.k1), float(k.k2), float(k.p1), float(k.p2), CHANNELS=channels,
            DISTORTED=k.distorted, ITERATIONS=UNDISTORT_ITERATIONS, BLOCK=BLOCK)
    return origins, dirs, t_near, t_far, target, background


@triton.jit
def _march_training_kernel(o_ptr, d_ptr, t_near_ptr, t_far_ptr, jitter_ptr, occ_ptr, aabb_ptr, count_ptr, end_ptr,
                           ray_out_ptr, t_out_ptr, delta_out_ptr, n_rays, n_slots, dt, max_steps,
                           R: tl.constexpr, SKIP_MARGIN: tl.constexpr, WRITE: tl.constexpr, BLOCK: tl.constexpr):
    """One ray per lane walks its whole lattice with :func:`lattice_step`. Counting pass (``WRITE`` False): the
    number of occupied samples -> ``count``. Writing pass: a ray whose samples end (``end``, the inclusive scan
    of the counts) within ``n_slots`` writes them from ``end - count`` on."""
    ray = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = ray < n_rays
    t_near = tl.load(t_near_ptr + ray, mask=mask, other=0.0)
    t_far = tl.load(t_far_ptr + ray, mask=mask, other=0.0)
    n_steps = tl.minimum(tl.maximum(tl.ceil((t_far - t_near) / dt), 0.0), max_steps)
    # the jittered lattice t_near + (j + jitter) dt, written as lattice_step's t0 + (j + 0.5) dt
    t0 = t_near + (tl.load(jitter_ptr + ray, mask=mask, other=0.0) - 0.5) * dt
    ox, oy, oz, dx, dy, dz = load_ray(o_ptr, d_ptr, ray, mask)
    lo_x, lo_y, lo_z, size_x, size_y, size_z = load_box(aabb_ptr)
    searching = mask
    if WRITE:
        end = tl.load(end_ptr + ray, mask=mask, other=0)
        start = end - tl.load(count_ptr + ray, mask=mask, other=0)
        searching = mask & (end <= n_slots)
    else:
        start = tl.zeros([BLOCK], dtype=tl.int64)
    j = tl.zeros([BLOCK], dtype=tl.float32)  # lattice index of the ray's next point
    count = tl.zeros([BLOCK], dtype=tl.int64)
    n_searching = tl.sum(searching.to(tl.int32), axis=0)
    while n_searching > 0:  # j grows every iteration and a ray stops at n_steps <= max_steps
        searching = searching & (j < n_steps)
        t, inside, occupied, j = lattice_step(ox, oy, oz, dx, dy, dz, t0, j, t_far, searching, occ_ptr, lo_x, lo_y,
                                              lo_z, size_x, size_y, size_z, dt, R, SKIP_MARGIN, 1)
        if WRITE:
            slot = start + count
            tl.store(ray_out_ptr + slot, ray.to(tl.int64), mask=occupied)
            tl.store(t_out_ptr + slot, t, mask=occupied)
            tl.store(delta_out_ptr + slot, dt + 0.0 * t, mask=occupied)
        count += occupied.to(tl.int64)
        searching = searching & inside
        n_searching = tl.sum(searching.to(tl.int32), axis=0)
    if not WRITE:
        tl.store(count_ptr + ray, count, mask=mask)


def march_training(origins, dirs, t_near, t_far, occupancy, aabb, resolution: int, dt: float, max_steps: int,
                   jitter: torch.Tensor | None = None, max_samples: int | None = None) -> TrainingSamples:
    """Fused twin of :func:`ngfx.render.ops.raymarch.march_training` (same arguments and results). Without
    ``max_samples``, reading the number of slots to allocate is a host sync."""
    n, device = t_near.numel(), t_near.device
    offset = jitter if jitter is not None else torch.full_like(t_near, 0.5)
    counts = torch.empty(n, dtype=torch.long, device=device)
    rays = (origins.contiguous(), dirs.contiguous(), t_near.contiguous(), t_far.contiguous(), offset.contiguous(),
            occupancy.view(torch.uint8), aabb.float().contiguous(), counts)
    grid, constants = (triton.cdiv(n, BLOCK),), {"R": resolution, "SKIP_MARGIN": SKIP_MARGIN, "BLOCK": BLOCK}
    if n:  # counting pass: the output pointers are not used
        _march_training_kernel[grid](*rays, counts, counts, counts, counts, n, 0, float(dt), float(max_steps),
                                     WRITE=False, **constants)
    ray_ends = counts.cumsum(0)
    n_slots = slot_count(ray_ends, max_samples)
    ray_indices, t, deltas = padding(n_slots, n, device)
    if n and n_slots:
        _march_training_kernel[grid](*rays, ray_ends, ray_indices, t, deltas, n, n_slots, float(dt),
                                     float(max_steps), WRITE=True, **constants)
    return TrainingSamples(ray_indices, t, deltas, ray_ends <= n_slots, ray_ends)
