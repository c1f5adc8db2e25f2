"""A synthetic multi-view NeRF dataset: a few coloured spheres and boxes on a checkered plate, ray traced
analytically (Lambert + ambient, 2x2 supersampling) and written in Blender ``transforms_{train,val}.json``
format with RGBA PNGs (transparent background), like NeRF-synthetic.

Generated on demand into a cache folder (``$NGFX_CACHE`` or ``~/.cache/ngfx``), never committed.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

CAMERA_ANGLE_X = 0.6911112070083618  # Lego's field of view
CAMERA_RADIUS = 4.0
LIGHT_DIR = (0.45, -0.35, 0.82)
AMBIENT = 0.3
SPHERES = (  # centre, radius, albedo
    ((0.45, 0.05, 0.45), 0.42, (0.9, 0.2, 0.15)),
    ((-0.5, 0.4, 0.3), 0.3, (0.2, 0.8, 0.25)),
)
BOXES = (  # centre, half sizes, albedo; the first is the checkered plate
    ((0.0, 0.0, -0.08), (0.9, 0.9, 0.08), (0.95, 0.85, 0.3)),
    ((-0.3, -0.5, 0.25), (0.22, 0.22, 0.25), (0.2, 0.35, 0.9)),
)
VERSION = 1


def cache_root() -> Path:
    return Path(os.environ.get("NGFX_CACHE", Path.home() / ".cache" / "ngfx"))


def _intersect(origins: torch.Tensor, dirs: torch.Tensor):
    """Nearest hit of rays [N, 3] -> t [N] (inf on miss), normal [N, 3], albedo [N, 3], world hit [N, 3]."""
    n = origins.shape[0]
    best_t = torch.full((n,), math.inf)
    normal, albedo = torch.zeros(n, 3), torch.zeros(n, 3)
    for centre, radius, colour in SPHERES:
        c = torch.tensor(centre)
        oc = origins - c
        b = (oc * dirs).sum(1)
        disc = b * b - ((oc * oc).sum(1) - radius * radius)
        t = -b - disc.clamp(min=0).sqrt()
        hit = (disc > 0) & (t > 0) & (t < best_t)
        best_t = torch.where(hit, t, best_t)
        p = origins + t[:, None] * dirs
        normal = torch.where(hit[:, None], (p - c) / radius, normal)
        albedo = torch.where(hit[:, None], torch.tensor(colour), albedo)
    for centre, half, colour in BOXES:
        lo, hi = torch.tensor(centre) - torch.tensor(half), torch.tensor(centre) + torch.tensor(half)
        inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
        t0, t1 = (lo - origins) * inv, (hi - origins) * inv
        t_near_axes = torch.minimum(t0, t1)
        t = t_near_axes.max(1).values
        hit = (t < torch.maximum(t0, t1).min(1).values) & (t > 0) & (t < best_t)
        axis = t_near_axes.argmax(1)
        box_normal = torch.zeros(n, 3).scatter_(1, axis[:, None], -torch.sign(dirs.gather(1, axis[:, None])))
        best_t = torch.where(hit, t, best_t)
        normal = torch.where(hit[:, None], box_normal, normal)
        albedo = torch.where(hit[:, None], torch.tensor(colour), albedo)
    points = origins + best_t.clamp(max=1e3)[:, None] * dirs
    # checkerboard on the plate (the first box) so the field has detail to learn
    lo = torch.tensor(BOXES[0][0]) - torch.tensor(BOXES[0][1])
    hi = torch.tensor(BOXES[0][0]) + torch.tensor(BOXES[0][1])
    on_plate = ((points >= lo - 1e-4) & (points <= hi + 1e-4)).all(1) & torch.isfinite(best_t)
    checker = ((torch.floor(points[:, 0] / 0.3) + torch.floor(points[:, 1] / 0.3)) % 2 == 0)
    albedo = torch.where((on_plate & checker)[:, None], albedo * 0.45, albedo)
    return best_t, normal, albedo


def render_view(c2w: torch.Tensor, width: int, height: int, supersample: int = 2) -> np.ndarray:
    """RGBA float image [H, W, 4] of the scene from camera-to-world pose ``c2w`` (straight alpha)."""
    from ngfx.cameras import Intrinsics, pixel_rays

    k = Intrinsics.from_fov_x(width, height, CAMERA_ANGLE_X)
    s = supersample
    ys, xs = torch.meshgrid(torch.arange(height * s, dtype=torch.float32), torch.arange(width * s, dtype=torch.float32),
                            indexing="ij")
    pixels = (torch.stack([xs.flatten(), ys.flatten()], 1) + 0.5) / s
    origins, dirs = pixel_rays(c2w, k, pixels)
    t, normal, albedo = _intersect(origins, dirs)
    light = torch.tensor(LIGHT_DIR) / torch.tensor(LIGHT_DIR).norm()
    shade = AMBIENT + (1 - AMBIENT) * (normal * light).sum(1).clamp(min=0)
    rgb = (albedo * shade[:, None]).clamp(0, 1)
    hit = torch.isfinite(t).float()
    # average the s x s subpixels: alpha = coverage, colour = mean over covered subpixels
    rgb = (rgb * hit[:, None]).view(height, s, width, s, 3).sum((1, 3))
    alpha = hit.view(height, s, width, s).sum((1, 3))
    rgb = rgb / alpha.clamp(min=1)[..., None]
    return torch.cat([rgb, (alpha / (s * s))[..., None]], -1).numpy()


def camera_poses(n: int, seed: int) -> torch.Tensor:
    """[n, 4, 4] poses on the upper hemisphere (elevation 10-65 degrees) looking at the scene centre."""
    from ngfx.cameras import look_at

    rng = np.random.default_rng(seed)
    poses = []
    for i in range(n):
        azimuth = 2 * math.pi * (i / n + rng.uniform(0, 1 / n))
        elevation = math.radians(rng.uniform(10, 65))
        eye = CAMERA_RADIUS * torch.tensor([math.cos(elevation) * math.cos(azimuth),
                                            math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
        poses.append(look_at(eye, torch.tensor([0.0, 0.0, 0.15])))
    return torch.stack(poses)


def _write_split(folder: Path, split: str, poses: torch.Tensor, resolution: int) -> None:
    from ngfx.io import write_image, write_json

    frames = []
    for i, pose in enumerate(poses):
        write_image(folder / split / f"r_{i}.png", render_view(pose, resolution, resolution))
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
    write_json(folder / f"transforms_{split}.json", {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames})


def synthetic_scene(resolution: int = 96, n_train: int = 48, n_val: int = 8, cache_dir: str | Path | None = None) -> Path:
    """Folder of the synthetic dataset (Blender format), generated on first use; returns its path."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = root / f"nerf_synthetic_v{VERSION}_{resolution}px_{n_train}_{n_val}"
    if (folder / "transforms_val.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".nerf_synthetic.", dir=root))
    try:
        _write_split(tmp, "train", camera_poses(n_train, seed=1), resolution)
        _write_split(tmp, "val", camera_poses(n_val, seed=2), resolution)
        os.replace(tmp, folder)  # the whole folder appears at once
    except OSError:
        if not (folder / "transforms_val.json").is_file():  # not another process winning the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
