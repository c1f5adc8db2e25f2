"""A procedural participating medium: a noise cloud's density and colour in the box [-1, 1]^3.

Density is fractal value noise (hashed lattice, smoothstep-trilinear) shaped by a soft ellipsoid, so it
falls to zero at the box's faces; colour varies with height and a second noise octave. Pure functions of
position, deterministic for a seed.
"""

from __future__ import annotations

import torch

BOUNDS = (-1.0, 1.0)
MAX_DENSITY = 12.0  # peak sigma (per unit length); a ray through the core loses most of its light


def _lattice_hash(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor, seed: int) -> torch.Tensor:
    """Pseudo-random value in [0, 1) per integer lattice point (int64 arithmetic, wraps like a 32-bit hash)."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791) ^ (seed * 2654435761)
    h = h & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return (h & 0xFFFFFF).float() / float(0x1000000)


def value_noise(p: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Smooth noise in [0, 1]: p [N, 3] (lattice units) -> [N]."""
    base = torch.floor(p)
    f = p - base
    f = f * f * (3 - 2 * f)
    i = base.long()
    out = torch.zeros(p.shape[0], device=p.device)
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1 - f[:, 2]
                out = out + wx * wy * wz * _lattice_hash(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def fbm(p: torch.Tensor, octaves: int = 4, seed: int = 0) -> torch.Tensor:
    total, amplitude, norm = torch.zeros(p.shape[0], device=p.device), 1.0, 0.0
    for o in range(octaves):
        total = total + amplitude * value_noise(p * (2.0 ** o), seed + o)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def cloud(x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Density and colour at world points x [N, 3] in [-1, 1]^3 -> (sigma [N] >= 0, rgb [N, 3] in [0, 1])."""
    x = x.float()
    ellipsoid = 1.0 - (x / torch.tensor([0.85, 0.7, 0.55], device=x.device)).norm(dim=1)
    noise = fbm(x * 3.0 + 10.0, seed=seed)
    sigma = MAX_DENSITY * (ellipsoid + 0.6 * (noise - 0.5)).clamp(min=0.0).clamp(max=0.5) * 2.0
    tint = value_noise(x * 2.0 + 5.0, seed + 99)
    height = (x[:, 2] + 1.0) * 0.5
    rgb = torch.stack([0.55 + 0.4 * height, 0.5 + 0.3 * tint, 0.9 - 0.5 * height * tint], dim=1).clamp(0, 1)
    return sigma, rgb
