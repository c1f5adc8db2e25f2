"""A tiny analytic stand-in for a NeRF teacher (the App attributes distillation reads), for fast CPU tests."""

from __future__ import annotations

import math

import torch

from ngfx.render.cameras import Intrinsics, orbit_poses, pixel_rays


class SphereTeacher:
    """A unit sphere coloured by its normal on a white background, seen by orbit cameras."""

    name = "nerf"

    def __init__(self, size: int = 32):
        self.intrinsics = Intrinsics.from_fov_x(size, size, math.radians(40))
        self.train_poses = orbit_poses(12, 4.0, elevation_deg=25.0)
        self.eval_poses = orbit_poses(5, 4.0, elevation_deg=35.0)[1:]
        self.near, self.far = 2.0, 6.0
        self.aabb = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
        self.background = torch.ones(3)
        self.eval_images = torch.stack([self.render(size, size, p) for p in self.eval_poses])

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        b = (origins * dirs).sum(1)
        disc = b * b - ((origins * origins).sum(1) - 1.0)
        t = -b - disc.clamp_min(0).sqrt()
        normal = origins + t[:, None] * dirs
        colour = 0.5 + 0.5 * normal
        return torch.where((disc > 0)[:, None], colour, self.background.expand_as(colour))

    def render(self, width: int, height: int, view: torch.Tensor) -> torch.Tensor:
        origins, dirs = pixel_rays(view, self.intrinsics.scaled(width, height))
        return self.render_rays(origins, dirs).reshape(height, width, 3)

    def eval(self):
        return self
