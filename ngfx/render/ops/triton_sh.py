"""The SH basis of view directions as a register tile, for the fused kernels that feed it to ``tl.dot``
(NeRF's field head, :mod:`ngfx.render.ops.triton_nerf_head`; the per-ray volume renderer,
:mod:`ngfx.render.ops.triton_fused_volume`). :func:`sh_basis` is the in-kernel twin of
:func:`ngfx.render.ops.sh.spherical_harmonics`.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _columns4(a0, a1, a2, a3):
    # tl.join adds a minor-most dimension: the last join takes the lowest bit of the column index
    return tl.join(tl.join(a0, a2), tl.join(a1, a3))


@triton.jit
def _columns8(a0, a1, a2, a3, a4, a5, a6, a7):
    return tl.join(_columns4(a0, a2, a4, a6), _columns4(a1, a3, a5, a7))


@triton.jit
def sh_basis(x, y, z):
    """The 16 SH coefficients [BLOCK, 16] float32 of unit directions (x, y, z) [BLOCK], as one tile.

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
