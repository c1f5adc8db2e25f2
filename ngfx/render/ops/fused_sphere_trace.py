"""NSDF's fused sphere tracer: the PyTorch twin of :func:`ngfx.render.ops.triton_fused_sphere_trace.trace_and_shade`.

The fused path traces the same SDF as the stage-by-stage path (:mod:`ngfx.render.ops.sphere_trace`) and shades
the same way, with fewer network evaluations: a coarse distance grid, baked from the trained network once
(:func:`bake_distance_grid`), gives a safe step through empty space (:func:`coarse_bound`), and the network is
asked only where that bound falls below ``near``, about a grid cell from the surface.

Per ray: start where the ray enters the trace box; then rounds of (up to ``COARSE_SUBSTEPS`` coarse steps, each
``step_scale`` times the bound, while the bound exceeds ``near``) followed by one network step exactly as
:func:`~ngfx.render.ops.sphere_trace.trace_step` takes it; at most ``max_steps`` network steps; a hit is shaded
from the four tetrahedral probes, as the stage path shades. The kernel keeps these per-ray semantics, so this
twin and the kernel agree up to float rounding, and both agree with the stage path up to where within the hit
tolerance a ray stops.
"""

from __future__ import annotations

import dataclasses

import torch

from ngfx.cameras import Intrinsics
from ngfx.render.ops import sphere_trace
from ngfx.render.orbit_view import band_rays
from ngfx.render.ops.sphere_trace import ALIVE, HIT, MISS, ray_box, to_unit

COARSE_SUBSTEPS = 16  # coarse steps per round before the network is asked anyway (its step is as valid)
# the corners of a grid cell as (x, y, z) offsets, bit 0 = x
CELL_CORNERS = torch.tensor([[(b >> 0) & 1, (b >> 1) & 1, (b >> 2) & 1] for b in range(8)])


@dataclasses.dataclass
class TraceScene:
    """What the fused tracer needs of a trained NSDF.

    ``field``: the :class:`~ngfx.render.neural_field.NeuralField` (input [0, 1]^3, raw output + sphere bias =
    SDF); ``box`` [2, 3]: the trace box (rays start where they enter it and miss where they leave it);
    ``distance_grid`` [G, G, G]: the SDF at the box's grid corners (:func:`bake_distance_grid`); ``near``:
    below this coarse bound the network is asked. ``kernel_inputs``: the kernel's packed copies of the network,
    made once per scene (a scene is rebuilt when the weights change).
    """

    field: torch.nn.Module
    box: torch.Tensor
    distance_grid: torch.Tensor
    near: float
    sphere_radius: float
    hit_eps: float
    step_scale: float
    max_steps: int
    normal_probe: float
    kernel_inputs: dict = dataclasses.field(default_factory=dict, repr=False)


def grid_cell(box: torch.Tensor, resolution: int) -> torch.Tensor:
    """Spacing [3] of a ``resolution``^3 corner grid over ``box`` [2, 3]."""
    return (box[1] - box[0]) / (resolution - 1)


@torch.no_grad()
def bake_distance_grid(sdf, box: torch.Tensor, resolution: int, chunk: int = 2 ** 20) -> torch.Tensor:
    """The SDF ``sdf(world points [N, 3]) -> [N]`` at the ``resolution``^3 corners of ``box`` -> [G, G, G] (x, y, z)."""
    axes = [torch.linspace(float(box[0, d]), float(box[1, d]), resolution, device=box.device) for d in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    values = torch.cat([sdf(points[i:i + chunk]) for i in range(0, len(points), chunk)])
    return values.float().reshape(resolution, resolution, resolution).contiguous()


def coarse_bound(distance_grid: torch.Tensor, box: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """A lower bound of the SDF at world ``points`` [N, 3] -> [N]: max over the 8 corners c of the points' grid
    cell of SDF(c) - |p - c| (exact for a 1-Lipschitz SDF; the steps taken on it keep ``step_scale``'s margin)."""
    g = distance_grid.shape[0]
    cell = grid_cell(box, g)
    base = ((points - box[0]) / cell).clamp(0.0, g - 1.0).floor().clamp(max=g - 2).long()
    bound = torch.full(points.shape[:1], -float("inf"), device=points.device)
    for corner in CELL_CORNERS.to(points.device):
        index = base + corner
        position = box[0] + index * cell
        value = distance_grid[index[:, 0], index[:, 1], index[:, 2]]
        bound = torch.maximum(bound, value - (points - position).norm(dim=1))
    return bound


def coarse_march(origins, dirs, active, t, t_far, status, scene: TraceScene) -> None:
    """Up to COARSE_SUBSTEPS safe steps of the ``active`` rays while their coarse bound exceeds ``near``, in
    place on ``t`` and ``status`` (a ray that leaves the box misses). origins, dirs [R, 3]; active [A] int64
    indices of rays alive; t, t_far [R]; status [R] uint8."""
    box = scene.box.to(origins.device)
    for _ in range(COARSE_SUBSTEPS):
        points = origins[active] + t[active, None] * dirs[active]
        bound = coarse_bound(scene.distance_grid, box, points)
        advance = bound > scene.near
        if not bool(advance.any()):
            return
        active, bound = active[advance], bound[advance]
        t[active] = t[active] + scene.step_scale * bound
        leaves = t[active] > t_far[active]
        status[active[leaves]] = MISS
        active = active[~leaves]


@torch.no_grad()
def trace_and_shade(frame_flat: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, scene: TraceScene) -> None:
    """Sphere-trace rays ``origins``, ``dirs`` [N, 3] (unit directions) and write the hit rays' Lambert colours
    into ``frame_flat`` [N, 3] (misses are left as they are)."""
    box = scene.box.to(origins.device)
    t, t_far = ray_box(origins, dirs, box[0], box[1])
    status = torch.where(t < t_far, ALIVE, MISS).to(torch.uint8)
    for _ in range(scene.max_steps):
        active = torch.nonzero(status == ALIVE)[:, 0]
        if active.numel() == 0:
            break
        coarse_march(origins, dirs, active, t, t_far, status, scene)
        active = active[status[active] == ALIVE]
        raw = scene.field.query(to_unit(origins[active] + t[active, None] * dirs[active]))[:, 0]
        sphere_trace.trace_step(origins, dirs, active, t, raw, t_far, status, scene.hit_eps, scene.step_scale,
                                scene.sphere_radius)
    hit = torch.nonzero(status == HIT)[:, 0]
    if hit.numel():
        probes = sphere_trace.normal_probes(origins[hit] + t[hit, None] * dirs[hit], scene.normal_probe)
        raw = scene.field.query(to_unit(probes))[:, 0]
        sphere_trace.shade(frame_flat, hit, sphere_trace.tetra_sdf(raw, probes, scene.sphere_radius))


def trace_band(frame_band: torch.Tensor, c2w: torch.Tensor, k: Intrinsics, row0: int, n_rows: int,
               scene: TraceScene) -> None:
    """:func:`trace_and_shade` of the rays through the pixel centres of rows [row0, row0 + n_rows) of the camera
    (``c2w`` [4, 4], ``k``), written into ``frame_band`` [n_rows * width, 3]."""
    trace_and_shade(frame_band, *band_rays(c2w, k, row0, n_rows), scene)
