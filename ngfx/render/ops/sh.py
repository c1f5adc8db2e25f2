"""The colour network's input: spherical harmonics of view directions beside the density features.
:func:`spherical_harmonics` is the twin of the fused kernels' :func:`ngfx.render.ops.triton_sh.sh_basis`."""

from __future__ import annotations

import torch


def spherical_harmonics(dirs: torch.Tensor) -> torch.Tensor:
    """Real SH basis of degree 4 (16 coefficients, tiny-cuda-nn's order) of unit directions [N, 3] -> [N, 16]."""
    x, y, z = dirs.float().unbind(-1)
    xy, xz, yz, x2, y2, z2 = x * y, x * z, y * z, x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
        1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * z2 - 0.31539156525251999,
        -1.0925484305920792 * xz, 0.54627421529603959 * (x2 - y2),
        0.59004358992664352 * y * (-3.0 * x2 + y2), 2.8906114426405538 * xy * z,
        0.45704579946446572 * y * (1.0 - 5.0 * z2), 0.3731763325901154 * z * (5.0 * z2 - 3.0),
        0.45704579946446572 * x * (1.0 - 5.0 * z2), 1.4453057213202769 * z * (x2 - y2),
        0.59004358992664352 * x * (-x2 + 3.0 * y2),
    ], dim=-1)


def colour_input(h: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """The colour network's input: features [N, P] beside the SH encoding of unit directions [N, 3]
    -> float32 [N, P + 16] (the stage-by-stage path; the fused field head builds it in registers)."""
    return torch.cat([h.float(), spherical_harmonics(dirs)], dim=1)
