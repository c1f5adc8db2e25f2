"""Dense-background emulations of a real capture for ``bench_render.py --dense-seconds``: an RGBA multi-view scene
(Lego) with every transparent pixel filled by a textured wall, so empty-space skipping has little to skip.

* ``walls``: the backdrop painted on the scene box's own walls, at each ray's exit point. Geometrically
  inconsistent: a wall point is the backdrop for cameras on one side and the entry for those on the other, so
  the NeRF learns fog (harsher than any real capture).
* ``room``: the scene inside a large textured box (the room) that holds every camera; each ray ends on a wall
  seen from inside, the same point from every view. Written as an instant-ngp dataset (``transforms.json``,
  ``transforms_val.json``, RGB PNGs, ``aabb_scale`` / ``scale`` / ``offset``) and loaded through the project's
  instant-ngp loader, as a real capture is.

Both colour a wall point by :func:`wall_colour`; :func:`dense_app` builds either's NeRF app for bench_render to
train and time the same way.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch

from ngfx.cameras import Intrinsics, pixel_rays
from ngfx.io import write_image, write_json
from ngfx.render.apps import nerf
from ngfx.render.datasets import load_multiview
from ngfx.render.ops.raymarch import ray_aabb

DENSE_SCENES = ("walls", "room")
ROOM_HALF_SIZE = 5.5  # world units, about the scene box's centre: Lego's cameras sit at radius ~4.03
WALL_PHASE = (0.0, 2.0, 4.0)  # radians per colour channel of the colour waves


def wall_colour(points: torch.Tensor) -> torch.Tensor:
    """RGB [N, 3] in [0, 1] of wall points [N, 3]: a 3D checker of quarter-unit cells plus colour waves, so a
    wall has detail to learn and one colour per point whatever the view."""
    phase = torch.tensor(WALL_PHASE, device=points.device)
    checker = (torch.floor(points * 4.0).sum(-1) % 2)[:, None]
    return (0.2 + 0.35 * checker + 0.4 * (0.5 + 0.5 * torch.sin(2.5 * points + phase))).clamp(0, 1)


def over_walls(images: torch.Tensor, poses: torch.Tensor, k: Intrinsics, box: torch.Tensor) -> torch.Tensor:
    """RGBA views [V, H, W, 4] uint8 composited over the walls of ``box`` [2, 3] (world units), each pixel over
    :func:`wall_colour` at its ray's exit from the box -> RGB [V, H, W, 3] uint8, on ``images``' device."""
    out = []
    snap = 1e-5 * float((box[1] - box[0]).max())
    for image, pose in zip(images, poses):
        origins, dirs = pixel_rays(pose.to(box.device), k)
        _, t_exit = ray_aabb(origins, dirs, box)
        exits = origins + t_exit[:, None] * dirs
        # onto the wall exactly: a wall on a checker border (Lego's box at +-1.5 is 6 quarter cells) would
        # otherwise take either cell's colour by rounding, salt-and-pepper noise on ~14 % of its pixels
        exits = torch.where((exits - box[0]).abs() < snap, box[0], exits)
        exits = torch.where((exits - box[1]).abs() < snap, box[1], exits)
        walls = wall_colour(exits).reshape(k.height, k.width, 3)
        rgba = image.to(box.device).float() / 255.0
        alpha = rgba[..., 3:]
        rgb = rgba[..., :3] * alpha + walls * (1.0 - alpha)
        out.append((rgb * 255.0).round().to(torch.uint8).to(images.device))
    return torch.stack(out)


def scene_folder(scene: str, size: str) -> str:
    """The dataset folder behind ``scene`` (``synthetic``: the generated scene the NeRF app builds at ``size``)."""
    if scene != "synthetic":
        return scene
    from scenes.nerf_synthetic import synthetic_scene

    return str(synthetic_scene(resolution=nerf.SYNTHETIC_RESOLUTION[size]))


def room_box(aabb: torch.Tensor) -> torch.Tensor:
    """The room [2, 3]: a cube of half size ``ROOM_HALF_SIZE`` about the scene box's centre."""
    centre = aabb.mean(0)
    return torch.stack([centre - ROOM_HALF_SIZE, centre + ROOM_HALF_SIZE])


def write_room_scene(scene: str, folder: Path, device: str = "cpu") -> Path:
    """The RGBA multi-view ``scene`` (its train and val splits, e.g. a Blender folder) inside a textured room,
    written to ``folder`` as an instant-ngp dataset -> ``folder``.

    ``scale`` / ``offset`` map the scene's box onto instant-ngp's unit cube (Lego: [-1.5, 1.5]^3 -> [0, 1]^3,
    scale 1/3, offset 0.5) and ``aabb_scale`` is the smallest power of two whose box (the unit cube grown about
    its centre) holds the room (Lego: 4, [-6, 6]^3). Poses are the scene's camera-to-world matrices unchanged
    (OpenGL: the camera looks down -Z), as the loader reads them; the images are RGB, as a capture's are."""
    splits = {split: load_multiview(scene, split) for split in ("train", "val")}
    train = splits["train"]
    if not train.has_alpha:
        raise ValueError(f"--dense-scene room: {scene} has no alpha channel to composite the room behind")
    aabb = train.aabb
    side = float((aabb[1] - aabb[0]).max())
    room = room_box(aabb)
    for split, data in splits.items():
        outside = (data.poses[:, :3, 3] < room[0]) | (data.poses[:, :3, 3] > room[1])
        if outside.any():
            raise ValueError(f"--dense-scene room: a {split} camera of {scene} lies outside the room "
                             f"(half size {ROOM_HALF_SIZE} about {aabb.mean(0).tolist()})")
    scale = 1.0 / side
    offset = (0.5 - aabb.mean(0) * scale).tolist()  # the box's centre -> the unit cube's
    aabb_scale = 2 ** math.ceil(math.log2(2 * ROOM_HALF_SIZE * scale * (1 + 1e-6)))  # the room strictly inside
    shutil.rmtree(folder, ignore_errors=True)  # no stale frames from an earlier build
    k = train.intrinsics
    header = {"fl_x": k.fx, "fl_y": k.fy, "cx": k.cx, "cy": k.cy, "w": k.width, "h": k.height,
              "aabb_scale": aabb_scale, "scale": scale, "offset": offset}
    for split, data in splits.items():
        if data.intrinsics != k:
            raise ValueError(f"--dense-scene room: {scene}'s {split} camera differs from its train camera")
        views = over_walls(data.images.to(device), data.poses.to(device), k, room.to(device)).cpu().numpy()
        frames = []
        for i, (view, pose) in enumerate(zip(views, data.poses)):
            write_image(folder / split / f"{i:04d}.png", view)
            frames.append({"file_path": f"{split}/{i:04d}.png", "transform_matrix": pose.tolist()})
        # the loader reads transforms.json for training and transforms_val.json beside it for the val split
        write_json(folder / ("transforms.json" if split == "train" else "transforms_val.json"),
                   {**header, "frames": frames})
    return folder


def dense_app(name: str, scene: str, size: str, device, work: Path):
    """The untrained NeRF app (``hashgrid`` at ``size``) of dense scene ``name`` built from the RGBA ``scene`` (the
    room's dataset written under ``work``) -> (app, the dataset it reads)."""
    if name == "room":
        scene = str(write_room_scene(scene_folder(scene, size), work / "room_scene", device))
        return nerf.build_app(scene, "hashgrid", size, device=device), scene
    app = nerf.build_app(scene, "hashgrid", size, device=device)
    if app.train_images.shape[-1] != 4:
        raise ValueError(f"--dense-scene walls: {scene} has no alpha channel to composite a backdrop behind")
    app.train_images = over_walls(app.train_images, app.train_poses, app.intrinsics, app.aabb)
    app._val_images = over_walls(app._val_images, app.eval_poses, app.intrinsics, app.aabb)
    return app, scene
