"""NSDF's fused "rest" kernels: the sphere-tracing step (sphere bias + update + next point in field
coordinates) and the shading (normal + Lambert + write), each one Triton launch; twins of the PyTorch
functions of the same names in :mod:`ngfx.render.ops.sphere_trace`."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.render.ops.sphere_trace import ALBEDO, AMBIENT, LIGHT_DIR
from ngfx.render.ops.triton_raymarch import load_ray

BLOCK = 256


@triton.jit
def field_coordinate(p):
    """A world coordinate in [-1, 1] -> the field's input coordinate in [0, 1] (as sphere_trace.to_unit)."""
    return tl.minimum(tl.maximum((p + 1.0) * 0.5, 0.0), 1.0)


@triton.jit
def store_shade(frame_ptr, pixel, nx, ny, nz, mask, lx, ly, lz, ar, ag, ab, ambient):
    """The Lambert + ambient colour of normals (nx, ny, nz), of any length, into frame rows ``pixel`` [P, 3] (as
    sphere_trace.shade)."""
    norm = tl.maximum(tl.sqrt(nx * nx + ny * ny + nz * nz), 1e-12)
    shade = ambient + (1.0 - ambient) * tl.maximum((nx * lx + ny * ly + nz * lz) / norm, 0.0)
    tl.store(frame_ptr + pixel * 3, tl.minimum(shade * ar, 1.0), mask=mask)
    tl.store(frame_ptr + pixel * 3 + 1, tl.minimum(shade * ag, 1.0), mask=mask)
    tl.store(frame_ptr + pixel * 3 + 2, tl.minimum(shade * ab, 1.0), mask=mask)


@triton.jit
def _trace_step_kernel(o_ptr, d_ptr, active_ptr, t_ptr, raw_ptr, t_far_ptr, status_ptr, next_ptr, n_active,
                       eps, step_scale, sphere_radius, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n_active
    ray = tl.load(active_ptr + i, mask=mask, other=0)
    t = tl.load(t_ptr + ray, mask=mask, other=0.0)
    ox, oy, oz, dx, dy, dz = load_ray(o_ptr, d_ptr, ray, mask)
    px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
    sdf = tl.load(raw_ptr + i, mask=mask, other=0.0) + tl.sqrt(px * px + py * py + pz * pz) - sphere_radius
    hit = tl.abs(sdf) < eps * (1.0 + t)
    t_new = tl.where(hit, t, t + step_scale * sdf)
    miss = (t_new > tl.load(t_far_ptr + ray, mask=mask, other=0.0)) & (hit == 0)
    tl.store(t_ptr + ray, t_new, mask=mask)
    tl.store(status_ptr + ray, tl.where(hit, 1, tl.where(miss, 2, 0)).to(tl.uint8), mask=mask)
    # the next points, already in the field's [0, 1]^3 coordinates
    tl.store(next_ptr + i * 3, field_coordinate(ox + t_new * dx), mask=mask)
    tl.store(next_ptr + i * 3 + 1, field_coordinate(oy + t_new * dy), mask=mask)
    tl.store(next_ptr + i * 3 + 2, field_coordinate(oz + t_new * dz), mask=mask)


def trace_step(origins, dirs, active, t, raw, t_far, status, eps: float, step_scale: float,
               sphere_radius: float):
    """Same contract as :func:`ngfx.render.ops.sphere_trace.trace_step`."""
    n = active.numel()
    nxt = torch.empty(n, 3, device=origins.device, dtype=torch.float32)
    if n:
        _trace_step_kernel[(triton.cdiv(n, BLOCK),)](origins.contiguous(), dirs.contiguous(), active, t,
                                                     raw.contiguous(), t_far, status, nxt, n, float(eps),
                                                     float(step_scale), float(sphere_radius), BLOCK=BLOCK)
    return nxt


@triton.jit
def _shade_kernel(frame_ptr, pixel_ptr, sdf_ptr, n, lx, ly, lz, ar, ag, ab, ambient, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    s0 = tl.load(sdf_ptr + i, mask=mask, other=0.0)  # offsets (1,-1,-1), (-1,-1,1), (-1,1,-1), (1,1,1)
    s1 = tl.load(sdf_ptr + n + i, mask=mask, other=0.0)
    s2 = tl.load(sdf_ptr + 2 * n + i, mask=mask, other=0.0)
    s3 = tl.load(sdf_ptr + 3 * n + i, mask=mask, other=0.0)
    nx = s0 - s1 - s2 + s3
    ny = -s0 - s1 + s2 + s3
    nz = -s0 + s1 - s2 + s3
    store_shade(frame_ptr, tl.load(pixel_ptr + i, mask=mask, other=0), nx, ny, nz, mask, lx, ly, lz, ar, ag, ab,
                ambient)


def shade(frame_flat: torch.Tensor, pixel: torch.Tensor, tetra_sdf: torch.Tensor) -> None:
    """Same contract as :func:`ngfx.render.ops.sphere_trace.shade`."""
    n = pixel.numel()
    if n:
        _shade_kernel[(triton.cdiv(n, BLOCK),)](frame_flat, pixel, tetra_sdf.contiguous(), n, *LIGHT_DIR, *ALBEDO,
                                                AMBIENT, BLOCK=BLOCK)
