"""Ray marching through an occupancy grid with fixed steps: the PyTorch references of NeRF's "rest" kernels.

* :func:`ray_gen` -- rays of a band of pixel rows and their entry/exit distances through the scene box;
* :func:`march_segment` -- for each active ray, the next ``K`` sample points in occupied cells (at most
  ``max_scan`` iterations, each taking one step or jumping over one empty cell), advancing the ray;
* :func:`pack_segment` -- a marched segment packed for the network (:class:`PackedSegment`): the occupied
  samples' positions (in the unit cube of the box, the field's input) and directions ray after ray, each ray's
  first sample and count, and the rays with lattice left; :func:`march_packed` is both at once (the twin of the
  one fused kernel);
* :func:`composite_segment` -- fold a packed segment's densities and colours into each ray's running colour and
  transmittance, front to back, and send a ray whose light is used up to its exit (early termination);
* :func:`render_segments` -- the render loop NeRF and NVR share: march a segment, evaluate the samples,
  composite them, until rays leave the box or their transmittance drops (early termination);
* :func:`training_rays` -- a training batch's rays through random pixels, their colours and backgrounds;
* :func:`march_training` -- all occupied samples of a batch of rays at once, packed (for training), into a
  fixed number of slots if asked; :func:`compact_training` packs a chosen subset of them again.

Samples sit at the midpoints ``t + (j + 0.5) dt`` of fixed steps of length ``dt``. Cells of the occupancy
grid are indexed x-fastest: ``cx + cy R + cz R^2``. The render marchers also take a two-level grid (``sub`` > 1,
:func:`ngfx.render.ops.occupancy.refine_occupancy`): int64 ``bits`` [R^3] in place of the mask, bit
``sx + S sy + S^2 sz`` of a coarse cell set where its fine cell (``S = sub`` per axis) is occupied; a walk jumps
over an empty coarse cell whole and over an empty fine cell of an occupied one. Either grid may come with a
macro level (``macro``, :func:`ngfx.render.ops.occupancy.macro_occupancy`): a bool mask [M^3] over the same box,
a macro cell (``R / M`` coarse cells per axis) occupied where any of its coarse cells is; a walk first jumps over
an empty macro cell whole, so crossing empty space costs an iteration per macro cell, not per coarse cell. Such a
jump only passes lattice points of empty coarse cells: the samples are the same with it or without.
The Triton twins live in :mod:`ngfx.render.ops.triton_raymarch` and compute exactly the same thing; its packed
segments may hold the rays in another order (each ray's samples stay together and in order), so compare them ray
by ray.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, NamedTuple

import torch

from ngfx.render import stages
from ngfx.cameras import Intrinsics, pixel_rays
from ngfx.render.orbit_view import band_rays
from ngfx.render.ops.sphere_trace import ray_box
from ngfx.render.ops.volume import composite, over_background

# Empty-space jumps stop this fraction of a cell short of the exit face: far above float32 rounding of
# positions, so a jump never passes an occupied lattice point; at worst it lands one point early.
SKIP_MARGIN = 1e-3
# Coarse cells per macro cell along an axis of the empty-space level NeRF's render marches through first (its
# macro mask, built and cached with the render grid, nerf.NerfApp.macro_grid; it must divide the grid's resolution):
# a ray crosses an empty macro cell in one iteration. 0 or 1: no macro level (the walk goes cell by cell). The
# samples, so the image, are the same either way; only the iterations (and the passes MAX_SCAN cuts) drop. 8: a
# 16^3 level over Lego's 128^3 grid. H200, Lego 60 s, one run (7969013, bench_render --knobs): off 10.43 / 35.11 ms
# at 1080p / 4K, 8: 10.02 / 34.22, 4: 10.41 / 35.89; with the joined SH head 9.14 / 31.00 ms against 10.47 / 32.78,
# PSNR equal to 0.002 dB. A pass then fills more rays' segments, so it evaluates a few more samples past the point
# where a ray turns opaque (22.3 against 20.5 M at 1080p) and still takes less time (BENCHMARKS.md, issue 14)
MACRO = 8
# Samples per ray in render_segments' first pass (NeRF's and NVR's); a pass's segment (and its scan budget) then grows
# as rays finish: SEGMENT x (rays at the start / rays left), a power of two up to SEGMENT_GROWTH, so the few long
# rays of a frame's tail take few passes (each costs launches and a host sync whatever its size) while no pass holds
# more slots than the first. H200, Lego 60 s, one run (ca42c9e): 16 / no growth 30.3 ms at 1080p, 75.0 ms at 4K;
# 16 / x8 22.7 / 83.5 ms; 8 / x8 24.6 / 71.4 ms; 8 / x16 21.1 / 68.6 ms, val PSNR equal to 0.003 dB
# (BENCHMARKS.md, issue 14)
SEGMENT = 8
SEGMENT_GROWTH = 16
# Bands of rays render_segments takes at once: every pass of its loop costs launches and host syncs whatever the
# band's size, so a GPU with the memory takes a whole 4K frame (8.3 M rays) at once. H200, Lego 4K, 2^21-ray bands:
# 127.4 ms, one 2^23-ray band: 87.5 ms (BENCHMARKS.md, issue 14). A ray's slots of a pass (at most the first
# pass's: segments grow as rays finish) took ~5 KB of encoding and MLP activations at 16 slots before passes were
# packed; packed, 8 slots take under 1 KB (scratch, samples, fp16 features, field outputs): a conservative bound.
MAX_BAND_RAYS = 2 ** 23
BAND_BYTES_PER_RAY = 5 << 10
# lanes of rays that take turns in render_segments on a GPU: with one lane the device idles while the host waits for a
# pass's sizes and launches the next pass's kernels. H200, Lego, dd41f92 (BENCHMARKS.md, issue 14): 1 lane 12.08 /
# 42.77 ms at 1080p / 4K, 2 lanes 12.25 / 41.42, 3 lanes 12.47 / 41.29 (the frame is device-bound at 4K)
LANES = 2
# samples per field query: the encoding and MLP kernels index their [samples, width <= 64] arrays with int32, and a
# whole-frame band's pass can hold 67 M samples (2^23 rays x 8)
QUERY_SAMPLES = 2 ** 24


def band_size(rays: int, device: torch.device) -> int:
    """Rays per band for :func:`render_segments`: ``rays`` (the app's size default), doubled on a CUDA device while
    a third of its free memory holds the band, up to ``MAX_BAND_RAYS``. Memory PyTorch holds cached but unused
    counts as free: otherwise the band would shrink after a large frame or training, and timings with it."""
    if device.type != "cuda":
        return rays
    free_bytes, _ = torch.cuda.mem_get_info(device)
    free_bytes += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    while rays * 2 <= MAX_BAND_RAYS and rays * 2 * BAND_BYTES_PER_RAY * 3 <= free_bytes:
        rays *= 2
    return rays


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


def band_ray_gen(c2w: torch.Tensor, k: Intrinsics, row0: int, n_rows: int, aabb: torch.Tensor, *, app: str,
                 fused: bool):
    """:func:`ray_gen` as the stage ``{app}.ray_gen`` of a render: its Triton twin when ``fused``."""
    n = n_rows * k.width
    with stages.stage(f"{app}.ray_gen", "rest", n_inputs=n, bytes_written=n * 32.0, app=app, fused=fused):
        if fused:
            from ngfx.render.ops import triton_raymarch  # imports triton

            return triton_raymarch.ray_gen(c2w, k, row0, n_rows, aabb)
        return ray_gen(c2w, k, row0, n_rows, aabb)


def cell_exit(origins, dirs, cells, aabb, resolution) -> torch.Tensor:
    """Ray distance [A] where each ray leaves its cell, pulled ``SKIP_MARGIN`` of a cell back inside.

    ``cells`` [A, 3] float are the cell coordinates of a point on each ray (origins, dirs [A, 3]) in a grid of
    ``resolution`` cells per axis (an int, or [A, 1] float: each ray's own grid level). The
    margin is in position, not in ``t``: a lattice point before the returned distance lies inside the cell
    on every axis even for a ray nearly parallel to a face, whatever the rounding of ``t`` and of the point.
    """
    size = aabb[1] - aabb[0]
    cell = size / resolution
    margin = SKIP_MARGIN * cell
    face = torch.where(dirs > 0, aabb[0] + (cells + 1.0) * cell - margin, aabb[0] + cells * cell + margin)
    per_axis = torch.where(dirs == 0, float("inf"), (face - origins) / torch.where(dirs == 0, 1.0, dirs))
    return per_axis.amin(dim=1)


def march_segment(origins, dirs, active, t, t_far, occupancy, aabb, resolution: int, dt: float, k: int,
                  max_scan: int, sub: int = 1, macro: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next ``k`` occupied samples of each active ray, skipping empty cells; ``t`` [R] is advanced in place.

    Args:
        origins, dirs: [R, 3]; active: [A] int64 ray ids; t, t_far: [R]; occupancy: [resolution^3] bool, or
        with ``sub`` > 1 the two-level grid's int64 bits; ``macro``: its macro mask or None (module docstring).
    Returns:
        t_samples [A, k] (sample distances), deltas [A, k] (``dt`` for a sample, 0 for an empty slot).

    Each ray walks the lattice ``t + (j + 0.5) dt``, at most ``max_scan`` iterations: a lattice point in an
    occupied cell is taken (if before ``t_far``) and the walk moves one step; a point in an empty cell makes
    the walk jump to the first lattice point past the cell's exit (DDA), so crossing an empty cell costs one
    iteration however many steps it spans (an empty macro cell too, with ``macro``). The ray resumes after its
    ``k``-th sample, after its last iteration, or one step past ``t_far`` (so it leaves the render loop). The samples
    over a whole render are those of plain fixed-step marching: a jump only passes points of the same empty cell.
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
        occupied, exit_cells, exit_resolution = occupancy_lookup(o + t_point[:, None] * d, cells, occupancy, lo, size,
                                                                 resolution, sub, strides, macro)
        occupied = searching & inside & occupied
        slot = count.clamp(max=k - 1)  # a ray that is done writes its last slot back unchanged
        t_samples[rows, slot] = torch.where(occupied, t_point, t_samples[rows, slot])
        deltas[rows, slot] = torch.where(occupied, dt, deltas[rows, slot])
        count += occupied.long()
        j_past_cell = ((cell_exit(o, d, exit_cells, aabb, exit_resolution) - t0) / dt - 0.5).ceil()
        step = torch.where(occupied | ~inside, j + 1.0, torch.maximum(j + 1.0, j_past_cell))
        j = torch.where(searching, step, j)
        searching = searching & inside & (count < k)
    t[active] = t0 + j * dt
    return t_samples, deltas


def occupancy_lookup(points, cells, occupancy, lo, size, resolution: int, sub: int, strides, macro=None):
    """Whether points [A, 3] (in coarse cells [A, 3] float) are occupied, and the cell a walk from an empty one
    jumps past: (occupied [A], that cell's coordinates [A, 3] float, its grid's resolution, an int or [A, 1]).
    ``sub`` 1: ``occupancy`` is the mask; else the two-level grid's bits; ``macro``: its macro mask, whose empty
    cells are jumped past whole, or None (module docstring)."""
    occupied, exit_cells, exit_resolution = _grid_lookup(points, cells, occupancy, lo, size, resolution, sub, strides)
    if macro is None:
        return occupied, exit_cells, exit_resolution
    macro_res = macro_resolution(macro, resolution)
    macro_cells = (cells / (resolution // macro_res)).floor()  # the macro cell of the coarse cell looked up
    mx, my, mz = macro_cells.long().unbind(1)  # x-fastest, as the mask (no strides tensor each iteration)
    macro_empty = ~macro[mx + macro_res * (my + macro_res * mz)]
    return (occupied & ~macro_empty, torch.where(macro_empty[:, None], macro_cells, exit_cells),
            torch.where(macro_empty[:, None], float(macro_res), exit_resolution))


def macro_resolution(macro: torch.Tensor, resolution: int) -> int:
    """Cells per axis ``M`` of a macro mask [M^3] over a ``resolution``^3 grid; M must divide the resolution."""
    macro_res = round(macro.numel() ** (1 / 3))
    if macro_res ** 3 != macro.numel() or resolution % macro_res:
        raise ValueError(f"a macro mask of {macro.numel()} cells is not M^3 cells with M dividing the grid's "
                         f"{resolution} per axis")
    return macro_res


def _grid_lookup(points, cells, occupancy, lo, size, resolution: int, sub: int, strides):
    """:func:`occupancy_lookup` without a macro level."""
    coarse = occupancy[(cells.long() * strides).sum(dim=1)]
    if sub == 1:
        return coarse, cells, resolution
    fine_resolution = resolution * sub
    fine = ((points - lo) / size * fine_resolution).floor().clamp(0.0, fine_resolution - 1.0)
    within = (fine - cells * sub).clamp(0.0, sub - 1.0).long()  # the fine cell's place inside its coarse cell
    bit = within[:, 0] + within[:, 1] * sub + within[:, 2] * (sub * sub)
    coarse_occupied = coarse != 0
    occupied = coarse_occupied & (((coarse >> bit) & 1) != 0)
    exit_cells = torch.where(coarse_occupied[:, None], fine, cells)
    exit_resolution = torch.where(coarse_occupied, float(fine_resolution), float(resolution))[:, None]
    return occupied, exit_cells, exit_resolution


class PackedSegment(NamedTuple):
    """A marched segment packed for the network: active ray ``a``'s samples are ``points[starts[a]:starts[a] +
    counts[a]]``, in order along the ray (the rays' blocks may come in any order)."""

    points: torch.Tensor  # [S, 3] sample positions in the unit cube of the marched box (the fields' input), clamped
    dirs: torch.Tensor  # [S, 3] their rays' directions
    starts: torch.Tensor  # [A] int64, the first sample of each active ray
    counts: torch.Tensor  # [A] int64, its samples
    next_rays: torch.Tensor  # [N] int64, the active rays with lattice left after the march (in any order)

    def result(self) -> "PackedSegment":
        """The segment itself (it is complete; a fused march's pending segment has the same method)."""
        return self


def pack_segment(origins, dirs, active, t, t_far, aabb, t_samples, deltas) -> PackedSegment:
    """The occupied slots of a marched segment (``t_samples``, ``deltas`` [A, K] from :func:`march_segment`, ``t``
    advanced by it) packed ray after ray; the rays with lattice left are the active ones with ``t < t_far``."""
    occupied = deltas > 0
    counts = occupied.sum(dim=1)
    rows, cols = torch.nonzero(occupied, as_tuple=True)
    ray = active[rows]
    points = unit_points(origins[ray] + t_samples[rows, cols, None] * dirs[ray], aabb)
    return PackedSegment(points, dirs[ray], counts.cumsum(0) - counts, counts, active[t[active] < t_far[active]])


def march_packed(origins, dirs, active, t, t_far, occupancy, aabb, resolution: int, dt: float, k: int,
                 max_scan: int, sub: int = 1, macro: torch.Tensor | None = None) -> PackedSegment:
    """:func:`march_segment` then :func:`pack_segment`: the twin of the fused kernel that does both."""
    t_samples, deltas = march_segment(origins, dirs, active, t, t_far, occupancy, aabb, resolution, dt, k, max_scan,
                                      sub, macro)
    return pack_segment(origins, dirs, active, t, t_far, aabb, t_samples, deltas)


def unit_points(points: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """World points [..., 3] -> the unit cube of ``aabb`` [2, 3], clamped (a field's input coordinates)."""
    return ((points - aabb[0]) / (aabb[1] - aabb[0])).clamp(0.0, 1.0)


def composite_segment(colour, transmittance, active, starts, counts, sigmas, rgbs, dt: float, t, t_far,
                      min_transmittance: float) -> None:
    """Fold a packed segment into the active rays' colour [R, 3] and transmittance [R] in place, composited with
    :func:`ngfx.render.ops.volume.composite` (every sample one step ``dt`` long); a ray whose transmittance is no
    longer above ``min_transmittance`` goes to its exit: ``t`` [R] set to ``t_far`` (early termination).
    ``starts``, ``counts`` [A] as :class:`PackedSegment`; sigmas [S], rgbs [S, 3] of its samples."""
    n_active = active.numel()
    ray_indices = torch.repeat_interleave(torch.arange(n_active, device=counts.device), counts)
    # each ray's samples in order, wherever the segment put the ray's block
    first = counts.cumsum(0) - counts
    order = starts[ray_indices] + torch.arange(ray_indices.numel(), device=counts.device) - first[ray_indices]
    deltas = torch.full_like(sigmas, dt)
    seg_rgb, seg_opacity = composite(sigmas[order], rgbs[order], deltas, ray_indices, n_active)
    colour[active] += transmittance[active, None] * seg_rgb
    transmittance[active] *= 1.0 - seg_opacity
    t[active] = torch.where(transmittance[active] > min_transmittance, t[active], t_far[active])


def query_samples(query: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                  points: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``query`` on the samples [S, 3], ``QUERY_SAMPLES`` at a time -> sigma [S], rgb [S, 3]."""
    n = points.shape[0]
    if n <= QUERY_SAMPLES:
        return query(points, dirs) if n else (points.new_zeros(0), points.new_zeros(0, 3))
    parts = [query(points[start:start + QUERY_SAMPLES], dirs[start:start + QUERY_SAMPLES])
             for start in range(0, n, QUERY_SAMPLES)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def render_segments(origins, dirs, t_start, t_far, occupancy, aabb, resolution: int, dt: float,
                    query: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                    background: torch.Tensor, *, app: str, fused: bool, max_scan: int,
                    min_transmittance: float, segment: int | None = None, sub: int = 1,
                    macro: torch.Tensor | None = None, lanes: int | None = None) -> torch.Tensor:
    """Colour [n, 3] of rays marched segment by segment through the occupancy grid, over ``background`` [3].

    Each pass takes the next ``segment`` (default ``SEGMENT``, grown by up to ``SEGMENT_GROWTH`` as rays finish)
    occupied samples of every active ray, packed (:func:`march_packed`),
    evaluates ``query(points [S, 3] in the unit cube of aabb, dirs [S, 3]) -> (sigma [S], rgb [S, 3])`` on them,
    composites them front to back and drops rays that left the box or whose transmittance fell below
    ``min_transmittance`` (early termination). ``occupancy`` with ``sub`` and ``macro`` (None: no macro level): as
    :func:`march_segment`.
    ``fused`` picks the Triton kernels: one kernel marches and packs (stage ``{app}.march``, ``fused`` "march+compact");
    the PyTorch twins run as the stages ``{app}.march`` and ``{app}.compact``. Compositing is ``{app}.composite``.
    A fused pass makes one host sync, the packed segment's sizes, waited for only once the other ``lanes``' work is
    queued (default ``LANES`` for the fused kernels on a GPU; 1 elsewhere: the twins sync within a pass, and on a CPU
    nothing runs ahead of the host, so a lane would only add passes).
    """
    if fused:
        from ngfx.render.ops import triton_raymarch  # imports triton

        composite = triton_raymarch.composite_segment
    else:
        composite = composite_segment
    segment = segment or SEGMENT
    n, device = origins.shape[0], origins.device
    t = t_start.clone().contiguous()
    colour = torch.zeros(n, 3, device=device)
    transmittance = torch.ones(n, device=device)

    def march(rays: torch.Tensor, n_started: int):
        """Start the pass of a lane's ``rays`` (of ``n_started`` at its first pass) -> what the pass waits on."""
        growth = min(SEGMENT_GROWTH, 1 << ((n_started // rays.numel()).bit_length() - 1))
        k, scan = segment * growth, max_scan * growth
        n_slots = rays.numel() * k
        march_args = (origins, dirs, rays, t, t_far, occupancy, aabb, resolution, dt, k, scan, sub, macro)
        if fused:
            with stages.stage(f"{app}.march", "rest", n_inputs=rays.numel() * scan, bytes_read=rays.numel() * 32.0,
                              bytes_written=n_slots * 28.0, app=app, fused="march+compact"):
                return triton_raymarch.march_packed(*march_args, wait=False)
        with stages.stage(f"{app}.march", "rest", n_inputs=rays.numel() * scan, bytes_read=rays.numel() * 32.0,
                          bytes_written=n_slots * 8.0, app=app, fused=False):
            t_samples, deltas = march_segment(*march_args)
        with stages.stage(f"{app}.compact", "rest", n_inputs=n_slots, bytes_read=n_slots * 8.0, app=app):
            return pack_segment(origins, dirs, rays, t, t_far, aabb, t_samples, deltas)

    # the rays a pass marches: those with lattice left after the last march; a ray the last composite made
    # opaque is among them once more, moved to its exit so it takes no sample, and gone from the pass after.
    # The rays are split into LANES that take turns: while the host waits for one lane's packed sizes, the
    # device works through the other lanes' passes already queued.
    queue = deque()
    for rays in torch.nonzero(t < t_far)[:, 0].tensor_split(lanes or (LANES if fused and origins.is_cuda else 1)):
        if rays.numel():
            queue.append((rays, rays.numel(), march(rays, rays.numel())))
    while queue:
        rays, n_started, pending = queue.popleft()
        packed = pending.result()
        sigmas, rgbs = query_samples(query, packed.points, packed.dirs)
        with stages.stage(f"{app}.composite", "rest", n_inputs=sigmas.numel(), bytes_read=sigmas.numel() * 16.0,
                          bytes_written=rays.numel() * 16.0, app=app, fused=fused):
            composite(colour, transmittance, rays, packed.starts, packed.counts, sigmas, rgbs, dt, t, t_far,
                      min_transmittance)
        if packed.next_rays.numel():
            queue.append((packed.next_rays, n_started, march(packed.next_rays, n_started)))
    return colour + transmittance[:, None] * background


def training_rays(poses: torch.Tensor, images: torch.Tensor, k: Intrinsics, aabb: torch.Tensor,
                  uniforms: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rays through random points of random pixels of training images, for a training batch.

    Args:
        poses: [N, 4, 4] camera-to-world.  images: [N, H, W, C] uint8, C = 3 or 4 (RGBA).
        uniforms: [n, 6] in [0, 1): the image, x and y in it, and the background colour of an RGBA image.
    Returns:
        origins, dirs [n, 3]; t_near, t_far [n] through ``aabb``; the pixels' colours [n, 3] over the
        backgrounds [n, 3] (white for RGB images). A random background teaches the network empty space:
        it cannot explain it.
    """
    n_images, height, width, channels = images.shape
    image = (uniforms[:, 0] * n_images).long().clamp(max=n_images - 1)
    pixels = uniforms[:, 1:3] * torch.tensor([width, height], device=uniforms.device, dtype=torch.float32)
    origins, dirs = pixel_rays(poses[image], k, pixels)
    t_near, t_far = ray_aabb(origins, dirs, aabb)
    colour = images[image, pixels[:, 1].long().clamp(max=height - 1), pixels[:, 0].long().clamp(max=width - 1)]
    colour = colour.float() / 255.0
    if channels == 4:
        background = uniforms[:, 3:6]
        return origins, dirs, t_near, t_far, over_background(colour, background), background
    return origins, dirs, t_near, t_far, colour, torch.ones_like(colour)


class TrainingSamples(NamedTuple):
    """The packed samples of a training batch of ``R`` rays (:func:`march_training`, :func:`compact_training`)."""

    ray_indices: torch.Tensor  # [S] int64, non-decreasing; a padding slot repeats the last ray
    t: torch.Tensor  # [S] sample distances (0 in padding)
    deltas: torch.Tensor  # [S] step lengths (0 in padding: the slot composites to nothing)
    kept: torch.Tensor  # [R] bool: all the ray's samples fitted (a ray that did not fit has none)
    ray_ends: torch.Tensor  # [R] int64: inclusive scan of the rays' sample counts, kept or not

    @property
    def n_needed(self) -> torch.Tensor:
        """0-d int64: the slots all the rays' samples would take."""
        return self.ray_ends[-1] if self.ray_ends.numel() else torch.zeros((), dtype=torch.long,
                                                                            device=self.ray_ends.device)


def march_training(origins, dirs, t_near, t_far, occupancy, aabb, resolution: int, dt: float, max_steps: int,
                   jitter: torch.Tensor | None = None, max_samples: int | None = None) -> TrainingSamples:
    """All occupied samples of rays [R] (at most ``max_steps`` each), packed ray after ray.

    ``jitter`` [R] in [0, 1) shifts each ray's lattice (training); by default samples sit at step midpoints.
    With ``max_samples`` the arrays have exactly that many slots whatever the rays hold, so a training step
    needs no host sync: rays are kept in order while their samples fit, the rest are dropped whole (``kept``
    False), and the slots left over are padding. Without it, the arrays hold every sample.
    """
    n_steps = ((t_far - t_near) / dt).ceil().clamp(0, max_steps)
    n_scan = max(1, int(n_steps.max())) if n_steps.numel() else 1
    offset = jitter if jitter is not None else torch.full_like(t_near, 0.5)
    j = torch.arange(n_scan, device=origins.device, dtype=torch.float32)
    t = (t_near + (offset - 0.5) * dt)[:, None] + (j + 0.5) * dt  # [R, n_scan]: t_near + (j + offset) dt
    points = origins[:, None, :] + t[..., None] * dirs[:, None, :]
    valid = occupancy[cell_index(points, aabb, resolution)] & (j < n_steps[:, None]) & (t < t_far[:, None])
    ray_ends = valid.sum(dim=1).cumsum(0)
    n_slots = slot_count(ray_ends, max_samples)
    kept = ray_ends <= n_slots
    ray_indices, cols = torch.nonzero(valid & kept[:, None], as_tuple=True)  # the kept rays: a prefix
    n = ray_indices.numel()
    padded_rays, t_samples, deltas = padding(n_slots, t_near.numel(), t.device)
    padded_rays[:n] = ray_indices
    t_samples[:n] = t[ray_indices, cols]
    deltas[:n] = dt
    return TrainingSamples(padded_rays, t_samples, deltas, kept, ray_ends)


def slot_count(ray_ends: torch.Tensor, max_samples: int | None) -> int:
    """The slots :func:`march_training` allocates: ``max_samples``, or without it every sample (a host sync)."""
    return int(ray_ends[-1]) if max_samples is None and ray_ends.numel() else (max_samples or 0)


def padding(n_slots: int, n_rays: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ray_indices, t, deltas [n_slots] all padding (the last ray, 0, 0), for the samples to be written into."""
    return (torch.full((n_slots,), max(n_rays - 1, 0), dtype=torch.long, device=device),
            torch.zeros(n_slots, device=device), torch.zeros(n_slots, device=device))


def compact_training(samples: TrainingSamples, keep: torch.Tensor, max_samples: int) -> TrainingSamples:
    """The samples of ``samples`` where ``keep`` [S] holds, packed again into ``max_samples`` slots.

    Rays stay in order and are kept while all their remaining samples fit (padding as in
    :func:`march_training`); ``ray_ends`` counts the remaining samples of the rays ``samples`` kept. Tensor
    ops on the device only, no host sync (training drops the samples behind opaque ones with it).
    """
    keep = keep & (samples.deltas > 0)
    position = keep.long().cumsum(0)  # inclusive: a kept sample goes to slot position - 1
    n_slots, n_rays, device = keep.numel(), samples.kept.numel(), keep.device
    if n_slots:
        ray_ends = torch.where(samples.ray_ends > 0, position[(samples.ray_ends - 1).clamp(max=n_slots - 1)], 0)
    else:
        ray_ends = torch.zeros_like(samples.ray_ends)
    # a sample not kept, or past the slots, goes to one extra slot that is cut off at the end
    slot = torch.where(keep & (position <= max_samples), position - 1, max_samples)
    ray_indices, t, deltas = padding(max_samples + 1, n_rays, device)
    ray_indices.scatter_(0, slot, samples.ray_indices)
    t.scatter_(0, slot, samples.t)
    deltas.scatter_(0, slot, samples.deltas)
    return TrainingSamples(ray_indices[:max_samples], t[:max_samples], deltas[:max_samples],
                           samples.kept & (ray_ends <= max_samples), ray_ends)
