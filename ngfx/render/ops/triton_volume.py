"""Compositing of packed training samples in Triton: forward and backward, one kernel each.

:func:`composite_packed` and :func:`transmittance_packed` are the twins of those of
:mod:`ngfx.render.ops.volume`. Each lane walks one
ray's samples front to back (as instant-ngp's training kernels do): the forward accumulates colour and
transmittance; the backward walks them again with the ray's final colour, so each sample's gradient needs
no scan over the batch: with ``T_i`` the transmittance before sample ``i``, ``w_i = T_i alpha_i`` and
``C = sum_i w_i c_i + T_final b``,

    dC/dc_i = w_i,   dC/dsigma_i = delta_i (T_{i+1} c_i - sum_{j>i} w_j c_j - T_final b),
    d(opacity)/dsigma_i = delta_i T_final.

It replaces the two dozen tensor ops (and as many in autograd's backward) of the scan-based composite in a
training step.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 128


@triton.jit
def composite_step(trans, r, g, b, sigma_ptr, rgb_ptr, delta_ptr, slot, mask):
    """Sample ``slot`` composited front to back onto transmittance ``trans`` and colour ``r, g, b`` -> the four
    after it."""
    alpha = 1.0 - tl.exp(-tl.load(sigma_ptr + slot, mask=mask, other=0.0) * tl.load(delta_ptr + slot, mask=mask, other=0.0))
    w = trans * alpha
    c_r, c_g, c_b = load3(rgb_ptr, slot, mask)
    return trans * (1.0 - alpha), r + w * c_r, g + w * c_g, b + w * c_b


@triton.jit
def load3(ptr, row, mask):
    """Row ``row`` of an [N, 3] float array -> its three values (0 where masked)."""
    return (tl.load(ptr + row * 3, mask=mask, other=0.0), tl.load(ptr + row * 3 + 1, mask=mask, other=0.0),
            tl.load(ptr + row * 3 + 2, mask=mask, other=0.0))


@triton.jit
def _ray_range(ends_ptr, ray, mask, n_slots):
    """First slot and end slot of each ray (the end cut at ``n_slots``)."""
    end = tl.minimum(tl.load(ends_ptr + ray, mask=mask, other=0), n_slots)
    start = tl.minimum(tl.load(ends_ptr + ray - 1, mask=mask & (ray > 0), other=0), n_slots)
    return start, end


@triton.jit
def _composite_forward_kernel(sigma_ptr, rgb_ptr, delta_ptr, ends_ptr, bg_ptr, out_ptr, opacity_ptr, n_rays,
                              n_slots, BLOCK: tl.constexpr):
    ray = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = ray < n_rays
    i, end = _ray_range(ends_ptr, ray, mask, n_slots)
    trans = tl.full([BLOCK], 1.0, tl.float32)
    r = tl.zeros([BLOCK], dtype=tl.float32)
    g = tl.zeros([BLOCK], dtype=tl.float32)
    b = tl.zeros([BLOCK], dtype=tl.float32)
    live = mask & (i < end)
    n_live = tl.sum(live.to(tl.int32), axis=0)
    while n_live > 0:
        trans, r, g, b = composite_step(trans, r, g, b, sigma_ptr, rgb_ptr, delta_ptr, i, live)
        i += 1
        live = live & (i < end)
        n_live = tl.sum(live.to(tl.int32), axis=0)
    bg_r, bg_g, bg_b = load3(bg_ptr, ray, mask)
    tl.store(out_ptr + ray * 3, r + trans * bg_r, mask=mask)
    tl.store(out_ptr + ray * 3 + 1, g + trans * bg_g, mask=mask)
    tl.store(out_ptr + ray * 3 + 2, b + trans * bg_b, mask=mask)
    tl.store(opacity_ptr + ray, 1.0 - trans, mask=mask)


@triton.jit
def _composite_backward_kernel(sigma_ptr, rgb_ptr, delta_ptr, ends_ptr, bg_ptr, out_ptr, opacity_ptr,
                               grad_out_ptr, grad_opacity_ptr, grad_sigma_ptr, grad_rgb_ptr, n_rays, n_slots,
                               BLOCK: tl.constexpr):
    ray = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = ray < n_rays
    i, end = _ray_range(ends_ptr, ray, mask, n_slots)
    final_trans = 1.0 - tl.load(opacity_ptr + ray, mask=mask, other=0.0)
    bg_r, bg_g, bg_b = load3(bg_ptr, ray, mask)
    go_r, go_g, go_b = load3(grad_out_ptr, ray, mask)
    # what the samples after the current one add to the colour: the samples' total, less each one in turn
    out_r, out_g, out_b = load3(out_ptr, ray, mask)
    after_r, after_g, after_b = out_r - final_trans * bg_r, out_g - final_trans * bg_g, out_b - final_trans * bg_b
    # the background's and the opacity's share of dL/dsigma_i, per unit of delta_i: the same for every sample
    tail = tl.load(grad_opacity_ptr + ray, mask=mask, other=0.0) * final_trans \
        - final_trans * (go_r * bg_r + go_g * bg_g + go_b * bg_b)
    trans = tl.full([BLOCK], 1.0, tl.float32)
    live = mask & (i < end)
    n_live = tl.sum(live.to(tl.int32), axis=0)
    while n_live > 0:
        delta = tl.load(delta_ptr + i, mask=live, other=0.0)
        alpha = 1.0 - tl.exp(-tl.load(sigma_ptr + i, mask=live, other=0.0) * delta)
        w = trans * alpha
        c_r, c_g, c_b = load3(rgb_ptr, i, live)
        tl.store(grad_rgb_ptr + i * 3, w * go_r, mask=live)
        tl.store(grad_rgb_ptr + i * 3 + 1, w * go_g, mask=live)
        tl.store(grad_rgb_ptr + i * 3 + 2, w * go_b, mask=live)
        after_r -= w * c_r
        after_g -= w * c_g
        after_b -= w * c_b
        trans = trans * (1.0 - alpha)
        d_colour = go_r * (trans * c_r - after_r) + go_g * (trans * c_g - after_g) + go_b * (trans * c_b - after_b)
        tl.store(grad_sigma_ptr + i, delta * (d_colour + tail), mask=live)
        i += 1
        live = live & (i < end)
        n_live = tl.sum(live.to(tl.int32), axis=0)


@triton.jit
def _transmittance_kernel(sigma_ptr, delta_ptr, ends_ptr, trans_ptr, n_rays, n_slots, BLOCK: tl.constexpr):
    ray = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = ray < n_rays
    i, end = _ray_range(ends_ptr, ray, mask, n_slots)
    trans = tl.full([BLOCK], 1.0, tl.float32)
    live = mask & (i < end)
    n_live = tl.sum(live.to(tl.int32), axis=0)
    while n_live > 0:
        tl.store(trans_ptr + i, trans, mask=live)
        trans = trans * tl.exp(-tl.load(sigma_ptr + i, mask=live, other=0.0) * tl.load(delta_ptr + i, mask=live, other=0.0))
        i += 1
        live = live & (i < end)
        n_live = tl.sum(live.to(tl.int32), axis=0)


def transmittance_packed(sigmas: torch.Tensor, deltas: torch.Tensor, ray_ends: torch.Tensor) -> torch.Tensor:
    """Triton twin of :func:`ngfx.render.ops.volume.transmittance_packed` (no gradients)."""
    sigmas, deltas, ray_ends = sigmas.float().contiguous(), deltas.float().contiguous(), ray_ends.contiguous()
    trans = torch.ones_like(sigmas)
    if ray_ends.numel():
        _transmittance_kernel[(triton.cdiv(ray_ends.numel(), BLOCK),)](sigmas, deltas, ray_ends, trans,
                                                                        ray_ends.numel(), sigmas.numel(), BLOCK=BLOCK)
    return trans


class _CompositePacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sigmas, rgbs, deltas, ray_ends, background):
        sigmas, rgbs, deltas = sigmas.float().contiguous(), rgbs.float().contiguous(), deltas.float().contiguous()
        ray_ends, background = ray_ends.contiguous(), background.float().contiguous()
        n_rays = ray_ends.numel()
        out = torch.empty(n_rays, 3, device=sigmas.device)
        opacity = torch.empty(n_rays, device=sigmas.device)
        if n_rays:
            _composite_forward_kernel[(triton.cdiv(n_rays, BLOCK),)](
                sigmas, rgbs, deltas, ray_ends, background, out, opacity, n_rays, sigmas.numel(), BLOCK=BLOCK)
        ctx.save_for_backward(sigmas, rgbs, deltas, ray_ends, background, out, opacity)
        return out, opacity

    @staticmethod
    def backward(ctx, grad_out, grad_opacity):
        sigmas, rgbs, deltas, ray_ends, background, out, opacity = ctx.saved_tensors
        n_rays = ray_ends.numel()
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out.float().contiguous()
        grad_opacity = torch.zeros_like(opacity) if grad_opacity is None else grad_opacity.float().contiguous()
        grad_sigmas = torch.zeros_like(sigmas)  # slots of no ray get none
        grad_rgbs = torch.zeros_like(rgbs)
        if n_rays:
            _composite_backward_kernel[(triton.cdiv(n_rays, BLOCK),)](
                sigmas, rgbs, deltas, ray_ends, background, out, opacity, grad_out, grad_opacity, grad_sigmas,
                grad_rgbs, n_rays, sigmas.numel(), BLOCK=BLOCK)
        return grad_sigmas, grad_rgbs, None, None, None


def composite_packed(sigmas: torch.Tensor, rgbs: torch.Tensor, deltas: torch.Tensor, ray_ends: torch.Tensor,
                     background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of :func:`ngfx.render.ops.volume.composite_packed` (same arguments and results; gradients
    flow to ``sigmas`` and ``rgbs``, not to ``background``)."""
    return _CompositePacked.apply(sigmas, rgbs, deltas, ray_ends, background)
