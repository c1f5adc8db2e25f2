"""Views of a scene in the cube [-1, 1]^3 for NSDF and NVR: orbit cameras and rays of a band of pixel rows."""

from __future__ import annotations

import math

import torch

from ngfx.cameras import Intrinsics, orbit_poses, pixel_rays, posed_view


def orbit_camera(width: int, height: int, view, n_views: int, radius: float, elevation_deg: float,
                 fov_x_deg: float, device, target: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 ) -> tuple[torch.Tensor, Intrinsics]:
    """``view``: an index into ``n_views`` orbit poses around ``target``, or a camera-to-world [4, 4] pose
    -> (c2w, intrinsics); a (c2w, Intrinsics) pair is used as given (:func:`ngfx.cameras.posed_view`)."""
    posed = posed_view(view, width, height, device)
    if posed is not None:
        return posed
    if isinstance(view, torch.Tensor) and view.shape == (4, 4):
        c2w = view.float()
    else:
        c2w = orbit_poses(n_views, radius, elevation_deg=elevation_deg, target=target)[int(view) % n_views]
    return c2w.to(device), Intrinsics.from_fov_x(width, height, math.radians(fov_x_deg))


def fov_x_for_short_side(width: int, height: int, fov_deg: float) -> float:
    """The horizontal field of view (degrees) that gives the frame's shorter side ``fov_deg``: what fits in a
    square frame then fits in any frame, wide or tall."""
    if height >= width:
        return fov_deg
    return math.degrees(2.0 * math.atan(math.tan(math.radians(fov_deg) / 2.0) * width / height))


def framing_radius(points: torch.Tensor, target: tuple[float, float, float], elevation_deg: float, fov_deg: float,
                   margin: float = 1.05, n_azimuths: int = 36) -> float:
    """Orbit distance from ``target`` at which all ``points`` [N, 3] (e.g. surface samples) lie inside a square
    view cone of ``fov_deg``, from every azimuth of an orbit at ``elevation_deg``, with ``margin`` to spare."""
    offsets = points.float() - torch.tensor(target, dtype=torch.float32)
    tan_half = math.tan(math.radians(fov_deg) / 2.0) / margin
    radius = 0.0
    for pose in orbit_poses(n_azimuths, 1.0, elevation_deg=elevation_deg):
        right, up, back = pose[:3, 0], pose[:3, 1], pose[:3, 2]
        # a point at depth (radius - offset . back) must see its lateral offsets within the cone
        lateral = torch.maximum((offsets @ right).abs(), (offsets @ up).abs())
        radius = max(radius, float((offsets @ back + lateral / tan_half).max()))
    return radius


def band_rays(c2w: torch.Tensor, k: Intrinsics, row0: int, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the pixel centres of rows [row0, row0 + n_rows) -> origins, dirs [n_rows * width, 3]."""
    device = c2w.device
    ys, xs = torch.meshgrid(torch.arange(row0, row0 + n_rows, device=device),
                            torch.arange(k.width, device=device), indexing="ij")
    origins, dirs = pixel_rays(c2w, k, torch.stack([xs.flatten(), ys.flatten()], 1).float() + 0.5)
    return origins.contiguous(), dirs.contiguous()
