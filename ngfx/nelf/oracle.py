"""A depth-oracle light field: a network reads a ray once and says where along it the scene is, a small 3D grid
field says what is there (DONeRF, Neff et al. 2021, with this project's grid encodings on both sides).

A ray's segment through the scene box is cut into ``n_bins`` equal bins. The oracle sees the ray as R2L does, as
points along it, one at each bin's centre, but encodes each point with a coarse multi-resolution 3D grid instead
of sines; an MLP over all the points' features gives a distribution over the bins and "misses the scene". The ray
is then sampled in its ``top_bins`` most likely bins only (``samples_per_bin`` each, front to back), an
instant-ngp NeRF field (:class:`NerfField`: hash grid, density MLP, SH colour MLP) gives density and colour there,
and the samples are composited over the background. One oracle pass and a dozen field samples a ray, where the
teacher marches hundreds of steps through its occupancy grid.

Why: a pure light field must learn every ray's colour as a 4D function; on Lego the MobileR2L and the light-slab
students stayed near 22-25 dB after minutes of distillation, and a light-slab oracle (2D grids on the ray's
two-plane coordinates) found the teacher's main bin for only 77 % of the rays (BENCHMARKS.md). Points along the
ray give the oracle the scene's 3D structure to read; texture in 3D is what a hash grid learns in seconds.

Training (``ngfx.nelf.distill``): the teacher gives each ray's colour (its renderer) and its light in every bin
(:func:`teacher_bin_weights`: its density sampled ``TEACHER_POINTS_PER_BIN`` times a bin); the oracle learns the
bins by cross-entropy, and the field the colour through samples in the oracle's bins where they hold the teacher's
main bin (so it learns the empty space the oracle samples around the surface), in the teacher's top bins elsewhere
(so it need not wait for the oracle).

Input (as every student takes it, image-shaped): [B, 6, h, w], each ray's origin and unit direction in world
space; the config carries the scene box.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ngfx.encodings import Encoding, hash_grid_config
from ngfx.errors import NgfxInputError
from ngfx.nelf.network import check_counts, config_dict, config_fields
from ngfx.render.apps.nerf_field import NerfField
from ngfx.render.ops import volume
from ngfx.render.ops.raymarch import ray_aabb, unit_points

TEACHER_POINTS_PER_BIN = 4  # teacher density samples a bin, for the bin weights the oracle learns
RAYS_PER_PASS = 1 << 18  # rays a forward takes at a time (a 400x400 frame is 160 k rays)


@dataclass(frozen=True)
class OracleConfig:
    arch: str = "oracle"
    n_bins: int = 64
    top_bins: int = 3
    samples_per_bin: int = 4
    # the oracle: a coarse 3D grid read at every bin's centre (16 to 256 cells across the box), then an MLP
    oracle_levels: int = 6
    oracle_features: int = 2
    oracle_log2_hashmap_size: int = 18
    oracle_base_resolution: int = 16
    oracle_per_level_scale: float = 1.7411
    oracle_width: int = 256
    oracle_layers: int = 2  # hidden layers
    # the field: instant-ngp's NeRF hash grid (16 to 2048 cells across the box over 16 levels)
    field_levels: int = 16
    field_log2_hashmap_size: int = 19
    field_base_resolution: int = 16
    field_per_level_scale: float = 1.3819
    aabb: tuple[tuple[float, float, float], ...] = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))  # the scene box (the teacher's)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    upscale = 1  # one ray a pixel: no super-resolution head
    in_channels = 6  # origin and direction

    @property
    def n_samples(self) -> int:
        return self.top_bins * self.samples_per_bin

    def oracle_grid_config(self) -> dict:
        return hash_grid_config(self.oracle_levels, self.oracle_features, self.oracle_log2_hashmap_size,
                                self.oracle_base_resolution, self.oracle_per_level_scale)

    def field_grid_config(self) -> dict:
        return hash_grid_config(self.field_levels, 2, self.field_log2_hashmap_size, self.field_base_resolution,
                                self.field_per_level_scale)

    def to_dict(self) -> dict:
        return config_dict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "OracleConfig":
        cfg = cls(**config_fields(cls, d, source))
        check_counts(cfg, source, dict.fromkeys(
            ("n_bins", "top_bins", "samples_per_bin", "oracle_levels", "oracle_features", "oracle_log2_hashmap_size",
             "oracle_base_resolution", "oracle_width", "field_levels", "field_log2_hashmap_size",
             "field_base_resolution"), 1)
            | {"oracle_layers": 0})
        if cfg.top_bins > cfg.n_bins:
            raise NgfxInputError(source, "top_bins", f"must be at most n_bins ({cfg.n_bins}), got {cfg.top_bins}")
        for key in ("oracle_per_level_scale", "field_per_level_scale"):
            value = getattr(cfg, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise NgfxInputError(source, key, f"must be a finite number > 0, got {value!r}")
        if cfg.arch != "oracle":
            raise NgfxInputError(source, "arch", f"expected 'oracle', got {cfg.arch!r}")
        box = _numbers(cfg.aabb, (2, 3), lambda b: bool(torch.isfinite(b).all() and (b[0] < b[1]).all()), source,
                       "aabb", "[[x, y, z], [x, y, z]] (min, max), min below max on every axis")
        colour = _numbers(cfg.background, (3,), lambda c: bool(((c >= 0) & (c <= 1)).all()), source, "background",
                          "an RGB triple in [0, 1]")
        return replace(cfg, aabb=tuple(tuple(corner) for corner in box.tolist()), background=tuple(colour.tolist()))


def _numbers(value, shape: tuple[int, ...], valid, source: str, field: str, expected: str) -> torch.Tensor:
    """Config field ``value`` as a float64 tensor of ``shape`` that ``valid`` accepts, else an error naming it."""
    try:
        numbers = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        numbers = None
    if numbers is None or numbers.shape != shape or not valid(numbers):
        raise NgfxInputError(source, field, f"expected {expected}, got {value!r}")
    return numbers


PRESETS: dict[str, OracleConfig] = {
    "paper": OracleConfig(),
    "quick": OracleConfig(n_bins=32, top_bins=2, oracle_levels=4, oracle_log2_hashmap_size=14, oracle_base_resolution=8,
                          oracle_per_level_scale=2.0, oracle_width=64, field_levels=8, field_log2_hashmap_size=14,
                          field_base_resolution=8, field_per_level_scale=1.5),
    # tests: a field fine enough (8 to 84 cells) that the empty space just past a silhouette can be empty
    "tiny": OracleConfig(n_bins=12, top_bins=2, samples_per_bin=2, oracle_levels=2, oracle_log2_hashmap_size=10,
                         oracle_base_resolution=4, oracle_per_level_scale=2.0, oracle_width=16, oracle_layers=1,
                         field_levels=6, field_log2_hashmap_size=14, field_base_resolution=8,
                         field_per_level_scale=1.6),
}


def ray_bins(origins: torch.Tensor, dirs: torch.Tensor, aabb: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays [R, 3] cross the box: (start [R], bin-span length [R], hit [R] bool). A ray starting inside the box
    starts at its origin; a ray missing it gets a short dummy segment (its colour is the background)."""
    t0, t1 = ray_aabb(origins, dirs, aabb)
    t0 = t0.clamp_min(0.0)
    hit = t1 > t0
    return t0, torch.where(hit, t1 - t0, torch.full_like(t0, 1e-3)), hit


def sample_weights(sigma: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Each front-to-back sample's share of its ray's light: densities [R, K], spacing [R] -> [R, K]."""
    tau = volume.capped_optical_depth(sigma, delta[:, None].expand_as(sigma))
    # the light reaching a sample: exp of the (exclusive) sum of the optical depths in front of it
    return torch.exp(-(torch.cumsum(tau, dim=1) - tau)) * (1 - torch.exp(-tau))


class DepthOracle(nn.Module):
    """Rays [B, 6, h, w] (origin, direction) -> RGB [B, 3, h, w] in [0, 1]."""

    def __init__(self, cfg: OracleConfig, backend: str = "auto"):
        super().__init__()
        self.cfg = cfg
        self.points_grid = Encoding(3, cfg.oracle_grid_config(), backend)
        layers, width = [], cfg.n_bins * self.points_grid.n_output_dims
        for _ in range(cfg.oracle_layers):
            layers += [nn.Linear(width, cfg.oracle_width), nn.ReLU()]
            width = cfg.oracle_width
        self.oracle = nn.Sequential(*layers, nn.Linear(width, cfg.n_bins + 1))  # the last logit: the ray misses
        self.field = NerfField(cfg.field_grid_config())
        self.register_buffer("aabb", torch.tensor(cfg.aabb, dtype=torch.float32), persistent=False)
        self.register_buffer("background", torch.tensor(cfg.background, dtype=torch.float32), persistent=False)

    def bin_logits(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """Rays [R, 3] -> [R, n_bins + 1] logits: the bins front to back, then "misses the scene"."""
        n = self.cfg.n_bins
        start, span, _ = ray_bins(origins, dirs, self.aabb)
        centres = (torch.arange(n, device=origins.device, dtype=origins.dtype) + 0.5) / n
        t = start[:, None] + centres * span[:, None]
        features = self.points_grid(unit_points(origins[:, None] + t[..., None] * dirs[:, None], self.aabb).reshape(-1, 3))
        return self.oracle(features.reshape(-1, self.oracle[0].in_features)).float()  # no ray count: ONNX-exportable

    def shade(self, origins: torch.Tensor, dirs: torch.Tensor, bins: torch.Tensor, jitter: torch.Tensor | None = None
              ) -> torch.Tensor:
        """Colour [R, 3] of rays [R, 3] sampled in ``bins`` [R, top_bins] (any order): ``samples_per_bin`` a bin at
        the centres of equal sub-bins, or at ``jitter`` [R, top_bins, samples_per_bin] in [0, 1) within them."""
        cfg = self.cfg
        start, span, hit = ray_bins(origins, dirs, self.aabb)
        width = span / cfg.n_bins
        # front to back: the smallest top_bins in order (sort would export its k read from the shape, which ONNX
        # shape inference cannot follow to the field's layers)
        bins = bins.topk(cfg.top_bins, dim=1, largest=False).values.to(origins.dtype)
        offsets = (torch.arange(cfg.samples_per_bin, device=origins.device, dtype=origins.dtype)
                   + (0.5 if jitter is None else jitter)) / cfg.samples_per_bin
        t = start[:, None] + ((bins[..., None] + offsets) * width[:, None, None]).flatten(1)  # [R, K]
        points = origins[:, None] + t[..., None] * dirs[:, None]
        k = t.shape[1]
        # a render (no gradients) on a GPU runs the field's fused head, as the teacher's renderer does
        field = self.field if torch.is_grad_enabled() else functools.partial(self.field.query, fused=origins.is_cuda)
        sigma, rgb = field(unit_points(points, self.aabb).reshape(-1, 3), dirs[:, None].expand(-1, k, -1).reshape(-1, 3))
        weights = sample_weights(sigma.reshape(-1, k).float(), width / cfg.samples_per_bin)
        colour = (weights[..., None] * rgb.reshape(-1, k, 3).float()).sum(1)
        colour = colour + (1 - weights.sum(1, keepdim=True)) * self.background
        return torch.where(hit[:, None], colour, self.background)

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """Colour [R, 3] of rays [R, 3], sampled in the oracle's ``top_bins`` bins."""
        bins = self.bin_logits(origins, dirs)[:, :self.cfg.n_bins].topk(self.cfg.top_bins, dim=1).indices
        return self.shade(origins, dirs, bins)

    def forward(self, rays: torch.Tensor) -> torch.Tensor:
        b, _, h, w = rays.shape
        x = rays.permute(0, 2, 3, 1).reshape(-1, 6).float()
        if torch.jit.is_tracing():  # an ONNX export: one pass, no row bounds traced, so the graph fits any frame size
            rgb = self.render_rays(x[:, :3], x[:, 3:])
        else:
            rgb = torch.cat([self.render_rays(x[i:i + RAYS_PER_PASS, :3], x[i:i + RAYS_PER_PASS, 3:])
                             for i in range(0, len(x), RAYS_PER_PASS)])
        return rgb.reshape(b, h, w, 3).permute(0, 3, 1, 2)


@torch.no_grad()
def teacher_bin_weights(teacher, origins: torch.Tensor, dirs: torch.Tensor, aabb: torch.Tensor, n_bins: int,
                        points_per_bin: int = TEACHER_POINTS_PER_BIN, rays_per_pass: int = 1 << 14) -> torch.Tensor:
    """The teacher's bin weights [R, n_bins + 1] of world rays [R, 3]: the share of each ray's light from each bin
    of its segment through ``aabb`` (as :func:`ray_bins` cuts it), the teacher's density sampled at
    ``points_per_bin`` bin fractions, then the share that reaches the background. Each row sums to 1."""
    start, span, hit = ray_bins(origins, dirs, aabb)
    m = n_bins * points_per_bin
    frac = (torch.arange(m, device=origins.device, dtype=origins.dtype) + 0.5) / m
    weights = []
    for i in range(0, len(origins), rays_per_pass):
        o, d = origins[i:i + rays_per_pass], dirs[i:i + rays_per_pass]
        t = start[i:i + rays_per_pass, None] + frac * span[i:i + rays_per_pass, None]
        sigma = teacher.density_world((o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3)).reshape(len(o), m)
        w = sample_weights(sigma.float(), span[i:i + rays_per_pass] / m) * hit[i:i + rays_per_pass, None]
        binned = w.reshape(len(o), n_bins, points_per_bin).sum(-1)
        weights.append(torch.cat([binned, (1 - binned.sum(1, keepdim=True)).clamp_min(0)], dim=1))
    weights = torch.cat(weights)
    return weights / weights.sum(1, keepdim=True)
