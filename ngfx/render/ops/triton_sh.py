"""Fused colour-network input of NeRF: density features beside the SH encoding of the view direction.

:func:`colour_input` is the Triton twin of :func:`ngfx.render.ops.sh.colour_input`
(``torch.cat([h, spherical_harmonics(dirs)], 1)``). The PyTorch form builds 16 temporaries and stacks them;
on an H200 that stack took half of a 1080p frame (26 of 72 ms), so the kernel computes each row's 16
coefficients in registers and writes each row with two contiguous stores. Inference only: it has no backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 128


@triton.jit
def _columns4(a0, a1, a2, a3):
    # tl.join adds a minor-most dimension: the last join takes the lowest bit of the column index
    return tl.join(tl.join(a0, a2), tl.join(a1, a3))


@triton.jit
def _columns8(a0, a1, a2, a3, a4, a5, a6, a7):
    return tl.join(_columns4(a0, a2, a4, a6), _columns4(a1, a3, a5, a7))


@triton.jit
def sh_basis(x, y, z):
    """The 16 SH coefficients [BLOCK, 16] float32 of unit directions (x, y, z) [BLOCK], as one tile: the colour
    input kernel writes each row with one contiguous store, the fused kernels feed it to ``tl.dot``.

    The tile is joined from 16 per-row columns, so each row's values stay in its thread; a chain of 15 ``tl.where``
    over the [BLOCK, 16] tile instead computes every coefficient for every element and selects one (NeRF's head on
    the H200: 182 registers against 120, :mod:`ngfx.render.ops.triton_nerf_head`)."""
    x = x.to(tl.float32)
    y = y.to(tl.float32)
    z = z.to(tl.float32)
    xy, xz, yz, x2, y2, z2 = x * y, x * z, y * z, x * x, y * y, z * z
    # tiny-cuda-nn's order and constants, as sh.spherical_harmonics: columns 0, 2, ..., 14, then 1, 3, ..., 15
    even = _columns8(0.28209479177387814 + 0.0 * x,
                     0.48860251190291987 * z,
                     1.0925484305920792 * xy,
                     0.94617469575755997 * z2 - 0.31539156525251999,
                     0.54627421529603959 * (x2 - y2),
                     2.8906114426405538 * xy * z,
                     0.3731763325901154 * z * (5.0 * z2 - 3.0),
                     1.4453057213202769 * z * (x2 - y2))
    odd = _columns8(-0.48860251190291987 * y,
                    -0.48860251190291987 * x,
                    -1.0925484305920792 * yz,
                    -1.0925484305920792 * xz,
                    0.59004358992664352 * y * (-3.0 * x2 + y2),
                    0.45704579946446572 * y * (1.0 - 5.0 * z2),
                    0.45704579946446572 * x * (1.0 - 5.0 * z2),
                    0.59004358992664352 * x * (-x2 + 3.0 * y2))
    return tl.reshape(tl.join(even, odd), (x.shape[0], 16))


@triton.jit
def _colour_input_kernel(h_ptr, dirs_ptr, out_ptr, n, P: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < n
    cols = tl.arange(0, P)
    width = P + 16
    tile = tl.load(h_ptr + rows[:, None] * P + cols[None, :], mask=mask[:, None], other=0.0)
    tl.store(out_ptr + rows[:, None] * width + cols[None, :], tile.to(tl.float32), mask=mask[:, None])
    x = tl.load(dirs_ptr + rows * 3, mask=mask, other=0.0)
    y = tl.load(dirs_ptr + rows * 3 + 1, mask=mask, other=0.0)
    z = tl.load(dirs_ptr + rows * 3 + 2, mask=mask, other=0.0)
    c = tl.arange(0, 16)[None, :]
    tl.store(out_ptr + rows[:, None] * width + P + c, sh_basis(x, y, z), mask=mask[:, None])


def colour_input(h: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """[N, P] features (P a power of two) and unit directions [N, 3] -> float32 [N, P + 16]."""
    n, p = h.shape
    if p & (p - 1):
        raise ValueError(f"colour_input: the feature width must be a power of two, got {p}")
    out = torch.empty(n, p + 16, device=h.device, dtype=torch.float32)
    if n:
        _colour_input_kernel[(triton.cdiv(n, BLOCK),)](h.contiguous(), dirs.contiguous(), out, n, P=p, BLOCK=BLOCK)
    return out
