"""Volume rendering of packed samples (nerfacc-style): the PyTorch reference of the compositing kernel.

Samples of all rays are packed in one flat array sorted by ray; ``ray_indices[i]`` says which ray sample
``i`` belongs to. Alpha compositing: ``alpha = 1 - exp(-sigma * delta)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)``,
``rgb = sum_i T_i alpha_i c_i + (1 - opacity) * background``.
"""

from __future__ import annotations

import torch


def composite(sigmas: torch.Tensor, rgbs: torch.Tensor, deltas: torch.Tensor, ray_indices: torch.Tensor,
              n_rays: int, background: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite packed samples along their rays.

    Args:
        sigmas: [S] densities >= 0.  rgbs: [S, 3] colours.  deltas: [S] step lengths.
        ray_indices: [S] int64, non-decreasing.  background: [3] colour or scalar.
    Returns:
        rgb [n_rays, 3], opacity [n_rays].
    """
    optical = sigmas * deltas
    # exclusive cumulative optical depth within each ray: global cumsum minus the ray's own start value,
    # in float64 because the global sum over many rays is large and float32 would lose each ray's share
    inclusive = torch.cumsum(optical.double(), dim=0)
    exclusive = inclusive - optical.double()
    first = torch.ones_like(ray_indices, dtype=torch.bool)
    first[1:] = ray_indices[1:] != ray_indices[:-1]
    start_index = torch.cummax(torch.where(first, torch.arange(len(first), device=first.device), 0), dim=0).values
    exclusive = (exclusive - exclusive[start_index]).to(sigmas.dtype)
    weights = torch.exp(-exclusive) * (1.0 - torch.exp(-optical))
    rgb = torch.zeros(n_rays, 3, dtype=rgbs.dtype, device=rgbs.device).index_add_(0, ray_indices, weights[:, None] * rgbs)
    opacity = torch.zeros(n_rays, dtype=rgbs.dtype, device=rgbs.device).index_add_(0, ray_indices, weights)
    rgb = rgb + (1.0 - opacity)[:, None] * torch.as_tensor(background, dtype=rgbs.dtype, device=rgbs.device)
    return rgb, opacity
