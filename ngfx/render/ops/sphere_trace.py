"""Sphere tracing of an SDF and Lambertian shading: the PyTorch reference of NSDF's "rest" kernels.

Rays start where they enter the scene box and step by the SDF value until it drops below ``eps`` (hit) or
they leave the box (miss). Each step only evaluates the rays still alive (compaction). Normals come from
four tetrahedral finite differences of the SDF (Quilez), shading is Lambert + ambient. :func:`trace_step` and
:func:`shade` are the PyTorch twins of the kernels of the same names in :mod:`ngfx.render.ops.triton_sphere_trace`;
:func:`trace_and_shade` runs a band of rays through them (or the kernels) stage by stage.
"""

from __future__ import annotations

import torch

from ngfx.render import stages

ALIVE, HIT, MISS = 0, 1, 2
# tetrahedral offsets: normal = sum_k k * sdf(x + h k), four SDF evaluations instead of six
TETRAHEDRON = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])
LIGHT_DIR = (0.4, 0.3, 0.866)
ALBEDO = (0.85, 0.75, 0.6)
AMBIENT = 0.2
NORMAL_PROBE = 1e-3  # the tetrahedron's offset (world units) for normals


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, lo: float = -1.0, hi: float = 1.0):
    """Entry and exit distances of rays [N, 3] through the cube [lo, hi]^3, or the box [lo, hi] for [3] tensors
    -> t_near [N], t_far [N] (t_near >= t_far: miss)."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    t_near = torch.minimum(t0, t1).max(dim=1).values.clamp(min=0.0)
    t_far = torch.maximum(t0, t1).min(dim=1).values
    return t_near, t_far


def to_unit(points: torch.Tensor) -> torch.Tensor:
    """World points in [-1, 1]^3 -> the field's input coordinates in [0, 1]^3."""
    return ((points + 1.0) * 0.5).clamp(0.0, 1.0)


def from_unit(points: torch.Tensor) -> torch.Tensor:
    """The field's input coordinates in [0, 1]^3 -> world points in [-1, 1]^3 (the inverse of :func:`to_unit`)."""
    return points * 2.0 - 1.0


def trace_step(origins, dirs, active, t, raw, t_far, status, eps: float, step_scale: float,
               sphere_radius: float):
    """One sphere-tracing step for the active rays, in place on ``t`` and ``status``.

    Args: origins, dirs [R, 3]; active [A] int64 indices of rays alive; t, t_far [R]; status [R] uint8;
    raw [A] the network's output at the active rays' current points, to which the sphere bias
    ``|x| - sphere_radius`` is added here. Returns the next points in field coordinates [A, 3] (rays
    that stopped keep their last point).
    """
    t_a = t[active]
    sdf = raw + (origins[active] + t_a[:, None] * dirs[active]).norm(dim=1) - sphere_radius
    hit = sdf.abs() < eps * (1.0 + t_a)  # tolerance grows with distance, as a pixel's footprint does
    t_new = torch.where(hit, t_a, t_a + step_scale * sdf)
    miss = ~hit & (t_new > t_far[active])
    t[active] = t_new
    status[active] = torch.where(hit, HIT, torch.where(miss, MISS, ALIVE)).to(status.dtype)
    return to_unit(origins[active] + t_new[:, None] * dirs[active])


def normal_probes(hit_points: torch.Tensor, offset: float = NORMAL_PROBE) -> torch.Tensor:
    """The four tetrahedral probes of hit points [A, 3] -> [4 * A, 3], probe k of point a at row k * A + a."""
    return (hit_points[None] + offset * TETRAHEDRON.to(hit_points.device)[:, None, :]).reshape(-1, 3)


def tetra_sdf(raw: torch.Tensor, probes: torch.Tensor, sphere_radius: float) -> torch.Tensor:
    """The SDF at :func:`normal_probes` [4 * A, 3] from the network's outputs there [4 * A] (plus the sphere bias)
    -> [4, A], as :func:`shade` takes it."""
    return (raw + probes.norm(dim=1) - sphere_radius).reshape(4, -1)


def shade(frame_flat: torch.Tensor, pixel: torch.Tensor, tetra_sdf: torch.Tensor) -> None:
    """Lambert + ambient colour of hit pixels ``pixel`` [A] int64 into frame_flat [P, 3]; tetra_sdf [4, A] from
    TETRAHEDRON offsets."""
    k = TETRAHEDRON.to(tetra_sdf.device)
    normal = (tetra_sdf[:, :, None] * k[:, None, :]).sum(0)
    normal = normal / normal.norm(dim=1, keepdim=True).clamp(min=1e-12)
    light = torch.tensor(LIGHT_DIR, device=normal.device)
    lambert = (normal @ light).clamp(min=0.0)
    colour = (AMBIENT + (1 - AMBIENT) * lambert)[:, None] * torch.tensor(ALBEDO, device=normal.device)
    frame_flat[pixel] = colour.clamp(0.0, 1.0)


def trace_and_shade(frame_flat: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, field, box: torch.Tensor,
                    eps: float, step_scale: float, sphere_radius: float, max_steps: int, fused: bool = False) -> None:
    """Sphere-trace rays ``origins``, ``dirs`` [N, 3] (unit directions) through ``box`` [2, 3] stage by stage, each
    stage recorded (:mod:`ngfx.render.stages`), and write the hit rays' colours into ``frame_flat`` [N, 3].

    ``field``: the :class:`~ngfx.render.neural_field.NeuralField` (raw output + sphere bias = SDF), asked once a
    step for the rays still alive; ``fused``: the steps and the shading with the Triton kernels of
    :mod:`ngfx.render.ops.triton_sphere_trace`, otherwise with these PyTorch twins (the baseline).
    """
    if fused:
        from ngfx.render.ops import triton_sphere_trace  # imports triton

        step_fn, shade_fn = triton_sphere_trace.trace_step, triton_sphere_trace.shade
    else:
        step_fn, shade_fn = trace_step, shade
    box = box.to(origins.device)
    n = origins.shape[0]
    with stages.stage("nsdf.ray_box", "rest", n_inputs=n, app="nsdf"):
        t, t_far = ray_box(origins, dirs, box[0], box[1])
        status = torch.where(t < t_far, ALIVE, MISS).to(torch.uint8)
        active = torch.nonzero(status == ALIVE)[:, 0]
        points = to_unit(origins[active] + t[active, None] * dirs[active])
    for _ in range(max_steps):
        if active.numel() == 0:
            break
        raw = field.query(points)[:, 0]
        with stages.stage("nsdf.trace_step", "rest", n_inputs=active.numel(), bytes_read=active.numel() * 40.0,
                          bytes_written=active.numel() * 17.0, app="nsdf", fused=fused):
            points = step_fn(origins, dirs, active, t, raw, t_far, status, eps, step_scale, sphere_radius)
        with stages.stage("nsdf.compact", "rest", n_inputs=active.numel(), app="nsdf"):
            keep = status[active] == ALIVE
            active, points = active[keep], points[keep]
    with stages.stage("nsdf.normal_points", "rest", n_inputs=n, app="nsdf"):
        hit = torch.nonzero(status == HIT)[:, 0]
        probes = normal_probes(origins[hit] + t[hit, None] * dirs[hit])
    raw = field.query(to_unit(probes))[:, 0] if hit.numel() else torch.zeros(0, device=origins.device)
    with stages.stage("nsdf.sdf_bias", "rest", n_inputs=probes.shape[0], app="nsdf"):
        probe_sdf = tetra_sdf(raw, probes, sphere_radius)
    with stages.stage("nsdf.shade", "rest", n_inputs=hit.numel(), bytes_read=hit.numel() * 24.0,
                      bytes_written=hit.numel() * 12.0, app="nsdf", fused=fused):
        shade_fn(frame_flat, hit, probe_sdf)
