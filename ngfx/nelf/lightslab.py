"""A grid-encoded light-slab student, in the spirit of LightSpeed (Gupta et al., NeurIPS 2023).

A ray is given by where it crosses two parallel planes (a light slab): (u, v) on the near plane, (s, t) on the
far one. Its features come from multi-resolution 2D grids (this project's :class:`ngfx.encodings.Encoding`) on
the six 2D sub-spaces of (u, v, s, t), concatenated; a small 1x1-conv decoder and (one x2 stage of) MobileR2L's
super-resolution head (:func:`ngfx.nelf.network.super_resolution_head`) turn them into the frame, as the
MobileR2L student does from positionally encoded points. The idea is that a grid learns far faster than a deep
MLP; on Lego it did not: both students reached ~22 dB in 3-6 minutes on the H200 (BENCHMARKS.md).

360-degree scenes are divided among ``n_slabs`` slabs, each facing a group of the teacher's cameras: the
normals are a spherical k-means of the cameras' viewing directions (:func:`place_slabs`, the divide-and-conquer
of LightSpeed), so every ray crosses some slab's planes nearly head-on. (A fixed ring of horizontal normals
left the rays of cameras looking down from above at grazing angles, their plane coordinates clamped at the
border: on Lego, up to every ray of a view.) Each ray is encoded in every slab and the features are blended
with weights ``relu(d . n) ** BLEND_POWER`` (normalised), so there are no seams. Without cameras (a config
made by hand) the normals default to a ring around +z; one slab uses the +z normal.

Network input, computed on the host like MobileR2L's ray encoding: [B, n_slabs * 5, h, w], per slab
(u, v, s, t) in [0, 1] and the blend weight.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ngfx.encodings import Encoding, hash_grid_config
from ngfx.errors import NgfxInputError
from ngfx.nelf.network import ResidualBlock, check_counts, config_dict, config_fields, super_resolution_head

PLANES = ((0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2))  # the 2D sub-spaces of (u, v, s, t)
# one x2 stage of MobileR2L's head: with its x8 head (50x50 rays for a 400x400 frame) the student over-fitted
# Lego's pseudo views after ~4 minutes at 19.5 dB; with x2 it reached 22.35 dB and was still rising (BENCHMARKS.md)
_SR_X2 = ((64, 4, 2),)


@dataclass(frozen=True)
class LightSlabConfig:
    arch: str = "lightslab"
    n_slabs: int = 6
    n_levels: int = 10  # per 2D grid: 16 to 615 cells across a plane
    n_features: int = 2
    log2_hashmap_size: int = 14
    base_resolution: int = 16
    per_level_scale: float = 1.5
    width: int = 128  # decoder channels
    n_blocks: int = 4  # decoder residual blocks (1x1 convs)
    sr_stages: tuple[tuple[int, int, int], ...] = _SR_X2
    sr_blocks: int = 2
    norm: str = "batch"
    slab_normals: tuple[tuple[float, float, float], ...] = ()  # () -> the default ring (slab_frames)

    @property
    def in_channels(self) -> int:
        return self.n_slabs * 5

    @property
    def feature_channels(self) -> int:
        return len(PLANES) * self.n_levels * self.n_features

    @property
    def upscale(self) -> int:
        return math.prod(s for _, _, s in self.sr_stages)

    def grid_config(self) -> dict:
        return hash_grid_config(self.n_levels, self.n_features, self.log2_hashmap_size, self.base_resolution,
                                self.per_level_scale)

    def to_dict(self) -> dict:
        return config_dict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "LightSlabConfig":
        cfg = cls(**config_fields(cls, d, source))
        check_counts(cfg, source, {**dict.fromkeys(("n_slabs", "n_levels", "n_features", "width", "log2_hashmap_size",
                                                    "base_resolution"), 1), "n_blocks": 0, "sr_blocks": 0})
        scale = cfg.per_level_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise NgfxInputError(source, "per_level_scale", f"must be a finite number > 0, got {scale!r}")
        if cfg.arch != "lightslab" or cfg.norm not in ("batch", "none"):
            raise NgfxInputError(source, "arch/norm", f"expected arch 'lightslab', norm batch|none, got "
                                 f"{cfg.arch!r}, {cfg.norm!r}")
        return replace(cfg, slab_normals=_normals(cfg.slab_normals, cfg.n_slabs, source))


PRESETS: dict[str, LightSlabConfig] = {
    "paper": LightSlabConfig(),
    "quick": LightSlabConfig(n_slabs=4, n_levels=4, log2_hashmap_size=12, base_resolution=8, per_level_scale=1.6,
                             width=32, n_blocks=2, sr_stages=((32, 4, 2), (16, 4, 2)), sr_blocks=1),
    "tiny": LightSlabConfig(n_slabs=4, n_levels=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0,
                            width=16, n_blocks=1, sr_stages=((16, 4, 2),), sr_blocks=1),
}


BLEND_POWER = 8  # weight relu(d . n) ** 8: a slab's weight halves 23 degrees off its normal
PLANE_EXTENT = 4.0  # plane coordinates / (PLANE_EXTENT x R): a ray within ~50 degrees of a normal stays inside


def _normals(value, n_slabs, source: str) -> tuple[tuple[float, float, float], ...]:
    """Config ``slab_normals``: [] or ``n_slabs`` finite non-zero 3-vectors, each made unit length."""
    try:
        normals = torch.tensor(value, dtype=torch.float64).reshape(-1, 3) if len(value) else torch.zeros(0, 3)
    except (TypeError, ValueError, RuntimeError):
        raise NgfxInputError(source, "slab_normals", f"expected a list of [x, y, z], got {value!r}") from None
    lengths = normals.norm(dim=1)
    if len(normals) and (len(normals) != n_slabs or not torch.isfinite(normals).all() or (lengths < 1e-6).any()):
        raise NgfxInputError(source, "slab_normals", f"expected {n_slabs} finite non-zero [x, y, z] (one a slab), "
                             f"got {value!r}")
    return tuple(tuple(float(c) for c in n / n.norm()) for n in normals)


def place_slabs(view_dirs: torch.Tensor, n_slabs: int, iterations: int = 50) -> tuple[tuple[float, float, float], ...]:
    """Slab normals for cameras viewing along ``view_dirs`` [N, 3]: a spherical k-means of the directions into
    ``n_slabs`` groups (farthest-point start, so it is deterministic), each normal its group's mean direction.
    A camera at the scene's centre has no direction and is left out."""
    lengths = view_dirs.double().norm(dim=1)
    if not bool((lengths > 1e-9).any()):
        raise NgfxInputError("teacher", "train_poses", "every camera sits at the scene's centre: no direction to "
                             "face a light slab towards")
    dirs = view_dirs.double()[lengths > 1e-9] / lengths[lengths > 1e-9, None]
    centres = [dirs[(dirs @ dirs.mean(0)).argmax()]]
    while len(centres) < min(n_slabs, len(dirs)):
        nearest = torch.stack([dirs @ c for c in centres], dim=1).amax(dim=1)
        centres.append(dirs[nearest.argmin()])
    while len(centres) < n_slabs:  # fewer cameras than slabs: repeat, the spare slabs share a direction
        centres.append(centres[len(centres) % len(dirs)])
    centres = torch.stack(centres)
    for _ in range(iterations):
        group = (dirs @ centres.T).argmax(dim=1)
        means = torch.stack([dirs[group == j].mean(0) if (group == j).any() else centres[j] for j in range(n_slabs)])
        norms = means.norm(dim=1, keepdim=True)
        centres = torch.where(norms > 1e-9, means / norms.clamp_min(1e-12), centres)  # opposite views cancel: keep
    return tuple(tuple(float(c) for c in n) for n in centres)


def slab_frames(cfg: LightSlabConfig) -> torch.Tensor:
    """[n_slabs, 3, 3]: each slab's (normal, e1, e2), orthonormal: the config's normals, else a ring of
    horizontal normals around +z (one slab: +z)."""
    if cfg.slab_normals:
        normal = torch.tensor(cfg.slab_normals, dtype=torch.float32)
    elif cfg.n_slabs == 1:
        normal = torch.tensor([[0.0, 0.0, 1.0]])
    else:
        az = torch.arange(cfg.n_slabs, dtype=torch.float32) * (2 * math.pi / cfg.n_slabs)
        normal = torch.stack([az.cos(), az.sin(), torch.zeros_like(az)], dim=1)
    normal = normal / normal.norm(dim=1, keepdim=True)
    up = torch.tensor([0.0, 0.0, 1.0]).expand_as(normal).clone()
    up[(normal[:, 2]).abs() > 0.9] = torch.tensor([1.0, 0.0, 0.0])  # a normal near +-z takes x as its "up"
    e1 = torch.linalg.cross(up, normal)
    e1 = e1 / e1.norm(dim=1, keepdim=True)
    return torch.stack([normal, e1, torch.linalg.cross(normal, e1)], dim=1)


@functools.lru_cache(maxsize=8)
def slab_frames_on(cfg: LightSlabConfig, device: torch.device) -> torch.Tensor:
    """:func:`slab_frames` on ``device``, made once per config and device (read-only: every training step and
    frame reads them)."""
    return slab_frames(cfg).to(device)


def slab_coordinates(origins: torch.Tensor, dirs: torch.Tensor, aabb: torch.Tensor,
                     frames: torch.Tensor) -> torch.Tensor:
    """Rays [..., 3] -> [..., n_slabs * 5]: per slab of ``frames`` (:func:`slab_frames`) (u, v, s, t) in [0, 1]
    and the blend weight.

    The slab's planes lie at -R and +R along its normal from the aabb's centre (R: half the aabb diagonal);
    plane coordinates are scaled by ``PLANE_EXTENT`` x R so that rays through the scene land inside [0, 1]."""
    aabb = aabb.to(origins)
    centre, radius = aabb.mean(0), (aabb[1] - aabb[0]).norm() / 2
    frames = frames.to(origins)  # [S, 3, 3]
    q = origins - centre
    q_n = q @ frames[:, 0].T  # [..., S]
    d_n = dirs @ frames[:, 0].T
    d_safe = torch.where(d_n.abs() < 1e-3, torch.full_like(d_n, 1e-3).copysign(d_n), d_n)
    out = []
    for plane in (-radius, radius):
        t = (plane - q_n) / d_safe  # [..., S]
        hit = q[..., None, :] + t[..., None] * dirs[..., None, :]  # [..., S, 3]
        out += [(hit * frames[:, 1]).sum(-1), (hit * frames[:, 2]).sum(-1)]
    uvst = (torch.stack(out, dim=-1) / (PLANE_EXTENT * radius) + 0.5).clamp(0, 1)
    weight = d_n.clamp_min(0) ** BLEND_POWER + 1e-4
    weight = weight / weight.sum(-1, keepdim=True)
    return torch.cat([uvst, weight[..., None]], dim=-1).flatten(-2)


class LightSlab(nn.Module):
    """Slab coordinates [B, n_slabs * 5, h, w] -> RGB [B, 3, h * upscale, w * upscale] in (0, 1)."""

    def __init__(self, cfg: LightSlabConfig, backend: str = "auto"):
        super().__init__()
        self.cfg = cfg
        self.grids = nn.ModuleList(Encoding(2, cfg.grid_config(), backend) for _ in range(cfg.n_slabs * len(PLANES)))
        self.stem = nn.Sequential(nn.Conv2d(cfg.feature_channels, cfg.width, 1), nn.GELU())
        self.body = nn.Sequential(*[ResidualBlock(cfg.width, cfg.norm) for _ in range(cfg.n_blocks)])
        self.upsample, self.to_rgb = super_resolution_head(cfg.width, cfg.sr_stages, cfg.sr_blocks, cfg.norm)

    def features(self, slabs: torch.Tensor) -> torch.Tensor:
        """[B, n_slabs * 5, h, w] -> blended grid features [B, feature_channels, h, w]."""
        b, _, h, w = slabs.shape
        x = slabs.permute(0, 2, 3, 1).reshape(-1, self.cfg.n_slabs, 5).float()
        blended = 0
        for i in range(self.cfg.n_slabs):
            planes = [torch.stack([x[:, i, a], x[:, i, c]], dim=1) for a, c in PLANES]
            grids = self.grids[i * len(PLANES):(i + 1) * len(PLANES)]
            blended = blended + x[:, i, 4:5] * torch.cat([g(p) for g, p in zip(grids, planes)], dim=1)
        return blended.reshape(b, h, w, -1).permute(0, 3, 1, 2).to(slabs.dtype)

    def forward(self, slabs: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.features(slabs).contiguous(memory_format=torch.channels_last))
        x = x + self.body(x)
        return torch.sigmoid(self.to_rgb(self.upsample(x)))
