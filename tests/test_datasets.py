"""Dataset loaders: Blender and instant-ngp formats, resizing, and clear errors on bad input."""

import json
import math

import numpy as np
import pytest
import torch

from ngfx.errors import NgfxInputError
from ngfx.io import write_image
from ngfx.render.datasets import load_multiview


def _pose(i: int) -> list:
    pose = np.eye(4)
    pose[:3, 3] = [0.0, -4.0 - 0.1 * i, 0.5]
    return pose.tolist()


def _blender(tmp_path, n=3, size=(8, 6), channels=4):
    for split in ("train", "val"):
        frames = []
        for i in range(n):
            write_image(tmp_path / split / f"r_{i}.png", np.random.rand(size[1], size[0], channels).astype(np.float32))
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": _pose(i)})
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    return tmp_path


def _ngp(tmp_path, n=9, declared=(16, 12), actual=(16, 12), ext=".jpg", **extra):
    frames = []
    for i in range(n):
        write_image(tmp_path / "images" / f"{i:03d}{ext}", np.random.rand(actual[1], actual[0], 3).astype(np.float32))
        frames.append({"file_path": f"images/{i:03d}{ext}", "transform_matrix": _pose(i)})
    meta = {"fl_x": 20.0, "fl_y": 21.0, "cx": 7.5, "cy": 6.5, "w": declared[0], "h": declared[1], "k1": -0.05,
            "k2": 0.01, "p1": 0.001, "p2": -0.002, "aabb_scale": 2, "frames": frames, **extra}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    return tmp_path / "transforms.json"


def test_blender_format(tmp_path):
    data = load_multiview(_blender(tmp_path), "val")
    assert data.images.shape == (3, 6, 8, 4) and data.images.dtype == torch.uint8 and data.has_alpha
    assert data.poses.shape == (3, 4, 4)
    assert data.intrinsics.fx == pytest.approx(4.0 / math.tan(0.4))
    torch.testing.assert_close(data.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    assert 0 < data.near < 4.0 - 2.5 and data.far > 4.2 + 2.5


def test_instant_ngp_format_with_distortion_and_holdout(tmp_path):
    path = _ngp(tmp_path)
    train, val = load_multiview(path, "train"), load_multiview(path, "val")
    assert len(train) == 7 and len(val) == 2  # frames 0 and 8 are held out
    k = train.intrinsics
    assert (k.width, k.height, k.fx, k.fy, k.cx, k.cy) == (16, 12, 20.0, 21.0, 7.5, 6.5)
    assert (k.k1, k.k2, k.p1, k.p2) == (-0.05, 0.01, 0.001, -0.002) and k.distorted
    # aabb_scale 2 around instant-ngp's unit-cube centre, world = (unit - 0.5) / 0.33
    torch.testing.assert_close(train.aabb, torch.tensor([[-1 / 0.33] * 3, [1 / 0.33] * 3]))
    assert train.images.shape == (7, 12, 16, 3)
    assert load_multiview(tmp_path, "train").images.shape == train.images.shape  # the folder works too


def test_instant_ngp_val_file_is_the_val_split_and_every_frame_trains(tmp_path):
    path = _ngp(tmp_path)
    meta = json.loads(path.read_text())
    (tmp_path / "transforms_val.json").write_text(json.dumps({**meta, "frames": meta["frames"][:3]}))
    train, val = load_multiview(path, "train"), load_multiview(path, "val")
    assert len(train) == 9 and len(val) == 3  # no frame of transforms.json is held out
    torch.testing.assert_close(val.poses, train.poses[:3])


def test_images_of_another_size_are_resized(tmp_path):
    data = load_multiview(_ngp(tmp_path, declared=(16, 12), actual=(32, 24), ext=".png"), "train")
    assert data.images.shape == (7, 12, 16, 3)


def test_images_of_another_aspect_are_rejected(tmp_path):
    with pytest.raises(NgfxInputError, match=r"frames\[1\]\.file_path.*aspect"):
        load_multiview(_ngp(tmp_path, declared=(16, 12), actual=(16, 16), ext=".png"), "train")


def test_scale_downsizes_images_and_intrinsics(tmp_path):
    data = load_multiview(_ngp(tmp_path), "train", scale=0.5)
    assert data.images.shape == (7, 6, 8, 3) and data.intrinsics.fx == pytest.approx(10.0)


def test_malformed_json_names_the_file(tmp_path):
    _blender(tmp_path)
    (tmp_path / "transforms_train.json").write_text('{"camera_angle_x": 0.8, "frames": [')
    with pytest.raises(NgfxInputError, match=r"transforms_train\.json.*malformed JSON"):
        load_multiview(tmp_path, "train")


def test_missing_image_names_file_and_field(tmp_path):
    _blender(tmp_path)
    (tmp_path / "train" / "r_1.png").unlink()
    with pytest.raises(NgfxInputError, match=r"transforms_train\.json: field 'frames\[1\]\.file_path'.*not found"):
        load_multiview(tmp_path, "train")


@pytest.mark.parametrize("field,edit", [
    ("camera_angle_x", lambda m: m.pop("camera_angle_x")),
    ("frames", lambda m: m.update(frames=[])),
    ("transform_matrix", lambda m: m["frames"][0].pop("transform_matrix")),
    (r"frames\[2\]\.transform_matrix", lambda m: m["frames"][2].update(transform_matrix=[[1, 0], [0, 1]])),
])
def test_missing_or_bad_field_is_named(tmp_path, field, edit):
    _blender(tmp_path)
    path = tmp_path / "transforms_train.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(NgfxInputError, match=rf"transforms_train\.json: field '{field}'"):
        load_multiview(tmp_path, "train")


def test_missing_focal_in_instant_ngp(tmp_path):
    path = _ngp(tmp_path, n=2)
    meta = json.loads(path.read_text())
    del meta["fl_x"]
    path.write_text(json.dumps(meta))
    with pytest.raises(NgfxInputError, match="field 'fl_x'"):
        load_multiview(path, "train")


def test_not_a_dataset(tmp_path):
    with pytest.raises(NgfxInputError, match="not a NeRF dataset"):
        load_multiview(tmp_path)
    with pytest.raises(NgfxInputError, match="not found"):
        load_multiview(tmp_path / "nowhere")


def test_lego_loads(shared_scenes):
    data = load_multiview(f"{shared_scenes}/lego", "val")
    assert data.images.shape == (100, 400, 400, 4)
    assert data.intrinsics.fx == pytest.approx(555.555, rel=1e-4)
    assert data.poses.shape == (100, 4, 4)
    radius = data.poses[:, :3, 3].norm(dim=1)
    assert float(radius.min()) > 3.9 and float(radius.max()) < 4.1  # NeRF-synthetic cameras sit at about 4.03
