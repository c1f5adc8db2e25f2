"""NeRF's field head: density and colour from the grid encoding's features (PyTorch).

:func:`field_head` runs instant-ngp's density MLP on the features, takes the density from its first output
(:func:`trunc_exp`) and runs the colour MLP on [the density outputs, SH of the view direction]. It is the twin of
:func:`ngfx.render.ops.triton_nerf_head.field_head`, which does all of it in one kernel.
"""

from __future__ import annotations

import torch

from ngfx.encodings import Network
from ngfx.render.ops.sh import colour_input


class _TruncExp(torch.autograd.Function):
    """exp with its gradient clamped (instant-ngp): large log-densities do not blow up the update."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


def field_head(features: torch.Tensor, dirs: torch.Tensor, density_mlp: Network,
               colour_net: Network) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded features [N, F] and unit directions [N, 3] -> (density [N], colour [N, 3]) float32:
    ``h = density_mlp(features)``, ``trunc_exp(h[:, 0])`` and the colour network on [h, SH(dirs)] (differentiable).

    The PyTorch twin of :func:`ngfx.render.ops.triton_nerf_head.field_head`.
    """
    h = density_mlp(features).float()
    return trunc_exp(h[:, 0]), colour_net(colour_input(h, dirs)).float()
