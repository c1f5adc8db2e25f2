"""An analytic signed distance scene of a few CSG primitives, inside the box [-1, 1]^3.

A rounded box with a sphere carved out of its top, unioned with a torus around it and a capsule through
it. Negative inside. Union and difference use min/max, so the result is an exact distance outside and a
bound inside (good enough for sign tests and as a regression target).
"""

from __future__ import annotations

import torch

BOUNDS = (-1.0, 1.0)  # the cube holding the scene, for cameras and uniform samples


def sphere(p: torch.Tensor, centre: tuple[float, float, float], radius: float) -> torch.Tensor:
    return (p - torch.tensor(centre, device=p.device)).norm(dim=-1) - radius


def rounded_box(p: torch.Tensor, half_size: tuple[float, float, float], rounding: float) -> torch.Tensor:
    q = p.abs() - torch.tensor(half_size, device=p.device) + rounding
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0) - rounding


def torus(p: torch.Tensor, major: float, minor: float) -> torch.Tensor:
    ring = torch.stack([p[..., :2].norm(dim=-1) - major, p[..., 2]], dim=-1)
    return ring.norm(dim=-1) - minor


def capsule(p: torch.Tensor, a: tuple[float, float, float], b: tuple[float, float, float], radius: float) -> torch.Tensor:
    a_t, b_t = torch.tensor(a, device=p.device), torch.tensor(b, device=p.device)
    pa, ba = p - a_t, b_t - a_t
    h = ((pa * ba).sum(-1) / (ba * ba).sum()).clamp(0, 1)
    return (pa - h[..., None] * ba).norm(dim=-1) - radius


def csg_sdf(p: torch.Tensor) -> torch.Tensor:
    """Signed distance of the CSG scene: p [N, 3] -> [N] (negative inside)."""
    p = p.float()
    body = torch.maximum(rounded_box(p, (0.45, 0.45, 0.35), 0.08), -sphere(p, (0.0, 0.0, 0.45), 0.3))
    ring = torus(p, 0.68, 0.1)
    rod = capsule(p, (-0.75, 0.0, -0.5), (0.75, 0.0, -0.5), 0.12)
    return torch.minimum(torch.minimum(body, ring), rod)

# the scene's tight bounding box (min, max corners), for errors as a fraction of its diagonal
BOX = ((-0.87, -0.78, -0.62), (0.87, 0.78, 0.35))
