"""A large procedural image, a pure function of pixel coordinates, evaluated per tile on demand.

The image is never held whole: :meth:`ProceduralImage.sample` evaluates any continuous coordinates and
:meth:`ProceduralImage.tile` any pixel window, so a gigapixel image (e.g. 40000 x 25000) costs only the
memory of the tile asked for. The content is smooth colour fields, soft-edged discs at several scales and
fine stripes, so coarse and fine grid levels both have something to learn.
"""

from __future__ import annotations

import math

import torch

# (centre x, centre y, radius, r, g, b) of soft discs in normalised coordinates, at three scales
_DISCS = (
    (0.30, 0.35, 0.22, 0.95, 0.30, 0.20), (0.72, 0.60, 0.18, 0.15, 0.55, 0.90), (0.55, 0.25, 0.08, 0.95, 0.85, 0.20),
    (0.20, 0.75, 0.10, 0.25, 0.85, 0.35), (0.82, 0.20, 0.05, 0.90, 0.20, 0.80), (0.45, 0.80, 0.04, 0.10, 0.10, 0.10),
    (0.62, 0.45, 0.025, 1.00, 1.00, 1.00), (0.12, 0.12, 0.03, 0.60, 0.20, 0.90),
)


class ProceduralImage:
    """RGB image of ``width`` x ``height`` pixels; pixel (i, j) has centre ((i + 0.5) / W, (j + 0.5) / H)."""

    def __init__(self, width: int = 40000, height: int = 25000):
        if width <= 0 or height <= 0:
            raise ValueError(f"procedural image size must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, 3

    def sample(self, uv: torch.Tensor) -> torch.Tensor:
        """Colour at normalised coordinates: uv [N, 2] (x right, y down, in [0, 1]) -> [N, 3] in [0, 1]."""
        u, v = uv[:, 0].float(), uv[:, 1].float()
        two_pi = 2.0 * math.pi
        rgb = torch.stack([0.45 + 0.25 * torch.sin(two_pi * (u + 0.3 * v)),
                           0.45 + 0.25 * torch.cos(two_pi * (1.3 * v - 0.4 * u)),
                           0.50 + 0.20 * torch.sin(two_pi * (u * v + 0.25))], dim=1)
        aspect = self.width / self.height  # discs stay round whatever the image's aspect ratio
        for cx, cy, radius, r, g, b in _DISCS:
            dist = torch.sqrt(((u - cx) * aspect) ** 2 + (v - cy) ** 2)
            edge = radius * 0.08
            alpha = torch.sigmoid((radius - dist) / edge)[:, None]
            rgb = rgb * (1 - alpha) + alpha * torch.tensor([r, g, b], device=uv.device)
        stripes = 0.08 * torch.sin(two_pi * 24.0 * (u + v)) * torch.exp(-((u - 0.5) ** 2 + (v - 0.5) ** 2) / 0.05)
        return (rgb + stripes[:, None]).clamp(0.0, 1.0)

    def pixel_centres(self, x0: int, y0: int, w: int, h: int, device=None) -> torch.Tensor:
        """Normalised centres of pixels [x0, x0+w) x [y0, y0+h), row by row -> [h * w, 2]."""
        xs = (torch.arange(x0, x0 + w, device=device, dtype=torch.float64) + 0.5) / self.width
        ys = (torch.arange(y0, y0 + h, device=device, dtype=torch.float64) + 0.5) / self.height
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx.flatten(), gy.flatten()], dim=1).float()

    def tile(self, x0: int, y0: int, w: int, h: int, device=None) -> torch.Tensor:
        """Pixels [y0, y0+h) x [x0, x0+w) at native resolution -> [h, w, 3]."""
        if x0 < 0 or y0 < 0 or w <= 0 or h <= 0 or x0 + w > self.width or y0 + h > self.height:
            raise ValueError(f"tile ({x0}, {y0}, {w}, {h}) is outside the {self.width}x{self.height} image")
        return self.sample(self.pixel_centres(x0, y0, w, h, device)).reshape(h, w, 3)
