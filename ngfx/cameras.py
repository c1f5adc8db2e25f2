"""Pinhole cameras (OpenGL convention: the camera looks down -Z, +Y up), ray generation, camera paths.

Poses are camera-to-world [4, 4] matrices as in Blender/NeRF-synthetic ``transforms.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Intrinsics:
    """Pixel-space pinhole intrinsics, with optional OpenCV radial-tangential distortion (instant-ngp's k1 k2 p1 p2)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    @classmethod
    def from_fov_x(cls, width: int, height: int, camera_angle_x: float) -> "Intrinsics":
        focal = 0.5 * width / math.tan(0.5 * camera_angle_x)
        return cls(width, height, focal, focal, 0.5 * width, 0.5 * height)

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another image size (focal and principal point scale with it)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                          self.k1, self.k2, self.p1, self.p2)

    @property
    def distorted(self) -> bool:
        return any(v != 0.0 for v in (self.k1, self.k2, self.p1, self.p2))


def posed_view(view, width: int, height: int, device) -> tuple[torch.Tensor, Intrinsics] | None:
    """A view given as (c2w [4, 4], Intrinsics) (a camera file's frame) -> (c2w on ``device``, the intrinsics at
    ``width`` x ``height``); None for any other kind of view (an index, a bare pose, a window)."""
    if not (isinstance(view, tuple) and len(view) == 2 and isinstance(view[1], Intrinsics)):
        return None
    c2w, k = view
    if (k.width, k.height) != (width, height):
        k = k.scaled(width, height)
    return c2w.float().to(device), k


def undistort(xy: torch.Tensor, k: Intrinsics, iterations: int = 10) -> torch.Tensor:
    """Invert OpenCV radial-tangential distortion of normalised image points [N, 2] by fixed-point iteration."""
    undist = xy.clone()
    for _ in range(iterations):
        x, y = undist[:, 0], undist[:, 1]
        r2 = x * x + y * y
        radial = 1 + k.k1 * r2 + k.k2 * r2 * r2
        dx = 2 * k.p1 * x * y + k.p2 * (r2 + 2 * x * x)
        dy = k.p1 * (r2 + 2 * y * y) + 2 * k.p2 * x * y
        undist = torch.stack([(xy[:, 0] - dx) / radial, (xy[:, 1] - dy) / radial], dim=1)
    return undist


def pixel_rays(c2w: torch.Tensor, k: Intrinsics, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres.

    Args:
        c2w: [4, 4] camera-to-world pose, or [N, 4, 4]: one pose per pixel (training batches over many images).
        pixels: [N, 2] float pixel coordinates (x right, y down; centres at +0.5); all pixels row by row if None.
    Returns:
        origins [N, 3], unit directions [N, 3], on ``c2w``'s device.
    """
    device = c2w.device
    if pixels is None:
        ys, xs = torch.meshgrid(torch.arange(k.height, device=device, dtype=torch.float32),
                                torch.arange(k.width, device=device, dtype=torch.float32), indexing="ij")
        pixels = torch.stack([xs.flatten(), ys.flatten()], dim=1) + 0.5
    xy = torch.stack([(pixels[:, 0] - k.cx) / k.fx, (pixels[:, 1] - k.cy) / k.fy], dim=1)
    if k.distorted:
        xy = undistort(xy, k)
    # camera space: +x right, +y up, looking down -z
    dirs_cam = torch.stack([xy[:, 0], -xy[:, 1], -torch.ones_like(xy[:, 0])], dim=1)
    if c2w.ndim == 3:
        rotation = c2w[:, :3, :3].to(dirs_cam.dtype)
        dirs = (rotation @ dirs_cam[:, :, None])[:, :, 0]
        origins = c2w[:, :3, 3].to(dirs.dtype)
    else:
        dirs = dirs_cam @ c2w[:3, :3].t().to(dirs_cam.dtype)
        origins = c2w[:3, 3].to(dirs.dtype).expand_as(dirs)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    return origins, dirs


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-world [4, 4] pose at ``eye`` looking at ``target`` (OpenGL convention)."""
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else up
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-6:  # looking along 'up': pick another
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0]))
    right = right / right.norm()
    true_up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, eye
    return c2w


def orbit_poses(n_frames: int, radius: float, elevation_deg: float = 30.0,
                target: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """[n_frames, 4, 4] poses circling ``target`` (z up) at ``radius``, a camera path for videos."""
    target_t = torch.tensor(target, dtype=torch.float32)
    elev = math.radians(elevation_deg)
    poses = []
    for i in range(n_frames):
        azim = 2 * math.pi * i / n_frames
        eye = target_t + radius * torch.tensor([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim),
                                                math.sin(elev)])
        poses.append(look_at(eye, target_t))
    return torch.stack(poses)
