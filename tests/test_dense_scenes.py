"""benchmarks/dense_scenes.py: the room emulation of a real capture is written as an instant-ngp dataset that the
project's loader reads back with the intended box, and each pixel shows the scene over the room wall its ray ends on."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ngfx.cameras import look_at
from ngfx.io import write_image
from ngfx.render.datasets import load_multiview

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import dense_scenes  # noqa: E402

CAMERA_ANGLE_X = 0.9
WIDTH, HEIGHT = 12, 8  # not square: a swapped axis or principal point shows


def _camera(i: int, radius: float = 4.0) -> torch.Tensor:
    azimuth, elevation = 2.1 * i + 0.3, math.radians(-20 + 35 * i)  # one camera below the scene's equator
    eye = radius * torch.tensor([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                                 math.sin(elevation)])
    return look_at(eye, torch.tensor([0.1, -0.2, 0.3]))


def _rgba_scene(folder: Path, n: int = 2, channels: int = 4, radius: float = 4.0) -> Path:
    """A Blender folder of random images: alpha 0 (wall only), half and 1 (scene only) on most pixels."""
    rng = np.random.default_rng(0)
    for split, first in (("train", 0), ("val", n)):
        frames = []
        for i in range(n):
            image = rng.integers(0, 256, (HEIGHT, WIDTH, channels), dtype=np.uint8)
            if channels == 4:
                image[..., 3] = rng.choice([0, 0, 0, 128, 255], (HEIGHT, WIDTH))
            write_image(folder / split / f"r_{i}.png", image)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": _camera(first + i, radius).tolist()})
        (folder / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": CAMERA_ANGLE_X,
                                                                      "frames": frames}))
    return folder


def _room_exits(pose: np.ndarray, half: float) -> np.ndarray:
    """[H * W, 3] points where each pixel's ray leaves the cube [-half, half]^3, from the Blender convention
    itself (pixel centres, +y up, the camera looking down -Z), on the exit face exactly."""
    focal = 0.5 * WIDTH / math.tan(0.5 * CAMERA_ANGLE_X)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    camera_dirs = np.stack([(xs - WIDTH / 2) / focal, -(ys - HEIGHT / 2) / focal, -np.ones_like(xs)], -1)
    dirs = camera_dirs.reshape(-1, 3) @ pose[:3, :3].T
    origin = pose[:3, 3]
    t_faces = (np.sign(dirs) * half - origin) / dirs  # each axis' far face
    axis = t_faces.argmin(1)
    rows = np.arange(len(dirs))
    exits = origin + t_faces[rows, axis][:, None] * dirs
    exits[rows, axis] = np.sign(dirs[rows, axis]) * half
    return exits


def test_room_loads_as_instant_ngp_with_the_box_holding_room_and_cameras(tmp_path):
    source = _rgba_scene(tmp_path / "rgba")
    room = dense_scenes.write_room_scene(str(source), tmp_path / "room")
    assert not (room / "transforms_train.json").exists()  # else load_multiview would read it as Blender
    meta = json.loads((room / "transforms.json").read_text())
    assert meta["aabb_scale"] == 4 and meta["scale"] == pytest.approx(1 / 3) and meta["offset"] == [0.5] * 3
    val = load_multiview(room, "val")
    assert val.source.endswith("transforms_val.json") and not val.has_alpha
    torch.testing.assert_close(val.aabb, torch.tensor([[-6.0] * 3, [6.0] * 3]))  # instant-ngp's box at aabb_scale 4
    half = dense_scenes.ROOM_HALF_SIZE
    assert (val.aabb[0] < -half).all() and (val.aabb[1] > half).all()
    blender = load_multiview(source, "val")
    torch.testing.assert_close(val.poses, blender.poses)
    assert (val.poses[:, :3, 3].abs() < half).all() and val.intrinsics == blender.intrinsics
    train = load_multiview(room, "train")  # with transforms_val.json beside it, every frame of transforms.json trains
    torch.testing.assert_close(train.poses, load_multiview(source, "train").poses)


def test_every_val_pixel_is_the_scene_over_the_wall_its_ray_leaves_the_room_by(tmp_path):
    source = _rgba_scene(tmp_path / "rgba")
    room = load_multiview(dense_scenes.write_room_scene(str(source), tmp_path / "room"), "val")
    rgba = load_multiview(source, "val")
    for image, scene, pose in zip(room.images, rgba.images, rgba.poses.double().numpy()):
        walls = dense_scenes.wall_colour(torch.from_numpy(_room_exits(pose, dense_scenes.ROOM_HALF_SIZE)))
        colour, alpha = scene[..., :3].double() / 255, scene[..., 3:].double() / 255
        expected = (colour * alpha + walls.reshape(HEIGHT, WIDTH, 3) * (1 - alpha)) * 255
        assert (alpha == 0).any() and (image.double() - expected).abs().max() <= 0.51


@pytest.mark.parametrize("problem, scene", [("no alpha channel", {"channels": 3}),
                                            ("outside the room", {"radius": 7.0})])
def test_room_refuses_a_scene_it_cannot_hold(tmp_path, problem, scene):
    with pytest.raises(ValueError, match=problem):
        dense_scenes.write_room_scene(str(_rgba_scene(tmp_path / "rgba", **scene)), tmp_path / "room")
