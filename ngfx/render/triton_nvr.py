"""Segment compositing, the fused kernel beside its PyTorch twin, for the segment loop NeRF and NVR share.

Rays are marched in segments of K sample slots (:func:`ngfx.render.raymarch.render_segments`);
``composite_segment`` folds a segment's densities and colours into each ray's running colour and
transmittance, front to back (slots with a zero step contribute nothing). The PyTorch twin composites with
:func:`ngfx.render.volume.composite`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.render.volume import composite

BLOCK = 256


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
