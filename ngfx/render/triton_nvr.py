"""NVR's "rest" kernels, each beside its PyTorch twin: sample generation along rays and segment compositing.

Rays are marched in segments of K fixed-size steps. ``sample_segment`` places the K sample points of each
active ray's current segment (points past the ray's exit get a zero step, so they contribute nothing);
``composite_segment`` folds the segment's densities and colours into each ray's running colour and
transmittance, front to back. The PyTorch twin composites with :func:`ngfx.render.volume.composite`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.render.volume import composite

BLOCK = 256


def sample_segment_torch(origins, dirs, active, t_segment, t_far, k: int, dt: float):
    """Points [A * K, 3] and steps [A * K] of the active rays' segments (sample j at t_segment + (j + 0.5) dt)."""
    t = t_segment[active, None] + (torch.arange(k, device=origins.device, dtype=torch.float32) + 0.5) * dt
    deltas = torch.where(t < t_far[active, None], dt, 0.0)
    points = origins[active, None, :] + t[..., None] * dirs[active, None, :]
    return points.reshape(-1, 3), deltas.reshape(-1)


@triton.jit
def _sample_kernel(o_ptr, d_ptr, active_ptr, t_seg_ptr, t_far_ptr, points_ptr, deltas_ptr, n, dt,
                   K: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    ray = tl.load(active_ptr + i // K, mask=mask, other=0)
    t = tl.load(t_seg_ptr + ray, mask=mask, other=0.0) + ((i % K).to(tl.float32) + 0.5) * dt
    t_far = tl.load(t_far_ptr + ray, mask=mask, other=0.0)
    tl.store(deltas_ptr + i, tl.where(t < t_far, dt, 0.0), mask=mask)
    for axis in tl.static_range(3):
        o = tl.load(o_ptr + ray * 3 + axis, mask=mask, other=0.0)
        d = tl.load(d_ptr + ray * 3 + axis, mask=mask, other=0.0)
        tl.store(points_ptr + i * 3 + axis, o + t * d, mask=mask)


def sample_segment_triton(origins, dirs, active, t_segment, t_far, k: int, dt: float):
    n = active.numel() * k
    points = torch.empty(n, 3, device=origins.device, dtype=torch.float32)
    deltas = torch.empty(n, device=origins.device, dtype=torch.float32)
    if n:
        _sample_kernel[(triton.cdiv(n, BLOCK),)](origins.contiguous(), dirs.contiguous(), active, t_segment, t_far,
                                                 points, deltas, n, float(dt), K=k, BLOCK=BLOCK)
    return points, deltas


def composite_segment_torch(colour, transmittance, active, sigmas, rgbs, deltas, k: int) -> None:
    """colour [R, 3], transmittance [R] updated in place with the active rays' segments (sigmas, deltas [A*K], rgbs [A*K, 3])."""
    n_active = active.numel()
    ray_indices = torch.arange(n_active, device=sigmas.device).repeat_interleave(k)
    seg_rgb, seg_opacity = composite(sigmas, rgbs, deltas, ray_indices, n_active)
    colour[active] += transmittance[active, None] * seg_rgb
    transmittance[active] *= 1.0 - seg_opacity


@triton.jit
def _composite_kernel(colour_ptr, trans_ptr, active_ptr, sigma_ptr, rgb_ptr, delta_ptr, n_active,
                      K: tl.constexpr, BLOCK: tl.constexpr):
    a = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = a < n_active
    ray = tl.load(active_ptr + a, mask=mask, other=0)
    trans = tl.load(trans_ptr + ray, mask=mask, other=0.0)
    r = tl.load(colour_ptr + ray * 3, mask=mask, other=0.0)
    g = tl.load(colour_ptr + ray * 3 + 1, mask=mask, other=0.0)
    b = tl.load(colour_ptr + ray * 3 + 2, mask=mask, other=0.0)
    for j in tl.static_range(K):
        s = a * K + j
        alpha = 1.0 - tl.exp(-tl.load(sigma_ptr + s, mask=mask, other=0.0) * tl.load(delta_ptr + s, mask=mask, other=0.0))
        w = trans * alpha
        r += w * tl.load(rgb_ptr + s * 3, mask=mask, other=0.0)
        g += w * tl.load(rgb_ptr + s * 3 + 1, mask=mask, other=0.0)
        b += w * tl.load(rgb_ptr + s * 3 + 2, mask=mask, other=0.0)
        trans = trans * (1.0 - alpha)
    tl.store(trans_ptr + ray, trans, mask=mask)
    tl.store(colour_ptr + ray * 3, r, mask=mask)
    tl.store(colour_ptr + ray * 3 + 1, g, mask=mask)
    tl.store(colour_ptr + ray * 3 + 2, b, mask=mask)


def composite_segment_triton(colour, transmittance, active, sigmas, rgbs, deltas, k: int) -> None:
    n_active = active.numel()
    if n_active:
        _composite_kernel[(triton.cdiv(n_active, BLOCK),)](colour, transmittance, active, sigmas.contiguous(),
                                                           rgbs.contiguous(), deltas.contiguous(), n_active,
                                                           K=k, BLOCK=BLOCK)
