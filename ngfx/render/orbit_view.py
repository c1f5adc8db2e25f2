"""Views of a scene in the cube [-1, 1]^3 for NSDF and NVR: orbit cameras and rays of a band of pixel rows."""

from __future__ import annotations

import math

import torch

from ngfx.render.cameras import Intrinsics, orbit_poses, pixel_rays


def orbit_camera(width: int, height: int, view, n_views: int, radius: float, elevation_deg: float,
                 fov_x_deg: float, device) -> tuple[torch.Tensor, Intrinsics]:
    """``view``: an index into ``n_views`` orbit poses, or a camera-to-world [4, 4] pose -> (c2w, intrinsics)."""
    if isinstance(view, torch.Tensor) and view.shape == (4, 4):
        c2w = view.float()
    else:
        c2w = orbit_poses(n_views, radius, elevation_deg=elevation_deg)[int(view) % n_views]
    return c2w.to(device), Intrinsics.from_fov_x(width, height, math.radians(fov_x_deg))


def band_rays(c2w: torch.Tensor, k: Intrinsics, row0: int, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the pixel centres of rows [row0, row0 + n_rows) -> origins, dirs [n_rows * width, 3]."""
    device = c2w.device
    ys, xs = torch.meshgrid(torch.arange(row0, row0 + n_rows, device=device),
                            torch.arange(k.width, device=device), indexing="ij")
    origins, dirs = pixel_rays(c2w, k, torch.stack([xs.flatten(), ys.flatten()], 1).float() + 0.5)
    return origins.contiguous(), dirs.contiguous()
