"""Volume rendering of packed samples (nerfacc-style): the PyTorch reference of the compositing kernel.

Samples of all rays are packed in one flat array sorted by ray; ``ray_indices[i]`` says which ray sample
``i`` belongs to. Alpha compositing: ``alpha = 1 - exp(-sigma * delta)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)``,
``rgb = sum_i T_i alpha_i c_i + (1 - opacity) * background``.
"""

from __future__ import annotations

import torch

# a sample's optical depth is capped here: exp(-50) ~ 2e-22 of the light gets through, opaque in float32 already
MAX_OPTICAL_DEPTH = 50.0


def composite(sigmas: torch.Tensor, rgbs: torch.Tensor, deltas: torch.Tensor, ray_indices: torch.Tensor,
              n_rays: int, background: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite packed samples along their rays.

    Args:
        sigmas: [S] densities >= 0.  rgbs: [S, 3] colours.  deltas: [S] step lengths.
        ray_indices: [S] int64, non-decreasing.  background: [3] or per-ray [n_rays, 3] colour, or scalar.
    Returns:
        rgb [n_rays, 3], opacity [n_rays].
    """
    optical = capped_optical_depth(sigmas, deltas)
    weights = torch.exp(-exclusive_optical_depth(optical, ray_indices)) * (1.0 - torch.exp(-optical))
    rgb = torch.zeros(n_rays, 3, dtype=rgbs.dtype, device=rgbs.device).index_add_(0, ray_indices, weights[:, None] * rgbs)
    opacity = torch.zeros(n_rays, dtype=rgbs.dtype, device=rgbs.device).index_add_(0, ray_indices, weights)
    rgb = rgb + (1.0 - opacity)[:, None] * torch.as_tensor(background, dtype=rgbs.dtype, device=rgbs.device)
    return rgb, opacity


def capped_optical_depth(sigmas: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """sigma * delta of samples [S], 0 for empty slots (delta 0, whatever their density), capped at
    ``MAX_OPTICAL_DEPTH``: an overflowed (inf) density is opaque rather than NaN in the closed-form compositing."""
    return torch.where(deltas > 0, sigmas * deltas, 0.0).clamp(max=MAX_OPTICAL_DEPTH)


def over_background(rgba: torch.Tensor, background: torch.Tensor | float) -> torch.Tensor:
    """Colours [..., 4] with straight alpha, in [0, 1], composited over ``background`` ([..., 3], [3] or a
    scalar) -> [..., 3]: how an RGBA training or reference image is compared with a render."""
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + background * (1.0 - alpha)


def exclusive_optical_depth(optical: torch.Tensor, ray_indices: torch.Tensor) -> torch.Tensor:
    """Optical depth [S] gathered along each sample's ray before it, of packed samples (``optical`` [S] =
    sigma * delta; ``ray_indices`` [S] non-decreasing): the transmittance at a sample is its ``exp(-.)``."""
    # a global cumsum minus the value at the ray's first sample, in float64: the global sum over many rays is
    # large and float32 would lose each ray's share
    inclusive = torch.cumsum(optical.double(), dim=0)
    exclusive = inclusive - optical.double()
    first = torch.ones_like(ray_indices, dtype=torch.bool)
    first[1:] = ray_indices[1:] != ray_indices[:-1]
    start_index = torch.cummax(torch.where(first, torch.arange(len(first), device=first.device), 0), dim=0).values
    return (exclusive - exclusive[start_index]).to(optical.dtype)


def composite_packed(sigmas: torch.Tensor, rgbs: torch.Tensor, deltas: torch.Tensor, ray_ends: torch.Tensor,
                     background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`composite` of samples packed ray after ray (as :func:`ngfx.render.ops.raymarch.march_training`
    writes them): ray ``r`` holds the slots from ``ray_ends[r - 1]`` (0 for the first) up to ``ray_ends[r]``,
    cut at the last slot; slots after the last ray are not read.

    Args:
        sigmas: [S].  rgbs: [S, 3].  deltas: [S].  ray_ends: [R] int64, non-decreasing.  background: [R, 3].
    Returns:
        rgb [R, 3], opacity [R]; gradients flow to ``sigmas`` and ``rgbs``. The PyTorch twin of
        :func:`ngfx.render.ops.triton_volume.composite_packed`.
    """
    n, ray_indices = _packed_rays(ray_ends, sigmas.numel())
    return composite(sigmas[:n], rgbs[:n], deltas[:n], ray_indices, ray_ends.numel(), background=background)


def transmittance_packed(sigmas: torch.Tensor, deltas: torch.Tensor, ray_ends: torch.Tensor) -> torch.Tensor:
    """Transmittance [S] before each sample along its ray, samples packed as for :func:`composite_packed`
    (slots after the last ray: 1). The PyTorch twin of :func:`ngfx.render.ops.triton_volume.transmittance_packed`."""
    n, ray_indices = _packed_rays(ray_ends, sigmas.numel())
    trans = torch.ones_like(sigmas)
    trans[:n] = torch.exp(-exclusive_optical_depth(capped_optical_depth(sigmas[:n], deltas[:n]), ray_indices))
    return trans


def _packed_rays(ray_ends: torch.Tensor, n_slots: int) -> tuple[int, torch.Tensor]:
    """The slots the rays cover (a host sync) and their ray indices, of samples packed by ``ray_ends``."""
    ends = ray_ends.clamp(max=n_slots)
    counts = torch.diff(ends, prepend=ends.new_zeros(1))
    n = int(ends[-1]) if ends.numel() else 0
    return n, torch.repeat_interleave(torch.arange(ends.numel(), device=ends.device), counts)
