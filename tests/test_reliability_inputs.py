"""Hostile inputs give one clear line naming the file and field: meshes, images, datasets and cameras."""

import json
import warnings

import numpy as np
import pytest

from ngfx.cli import main
from ngfx.errors import NgfxInputError, NgfxWarning
from ngfx.io import write_image
from ngfx.render.datasets import load_multiview
from ngfx.render.ops.mesh_sdf import load_obj

TETRAHEDRON = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"


def _train_refused(tmp_path, capsys, app: str, scene) -> str:
    out = tmp_path / "run"
    assert main(["train", app, "--scene", str(scene), "--size", "tiny", "--steps", "1", "--out", str(out),
                 "--device", "cpu"]) == 2
    assert not out.exists()  # refused before anything was written
    err = capsys.readouterr().err
    assert str(scene) in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("obj, field, problem", [
    ("v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n", "v", "all vertices are the same point"),
    ("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "f", "every triangle has zero area"),
    ("v 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "line 1", "malformed vertex"),
])
def test_meshes_without_area_are_refused(tmp_path, capsys, obj, field, problem):
    mesh = tmp_path / "bad.obj"
    mesh.write_text(obj)
    err = _train_refused(tmp_path, capsys, "nsdf", mesh)
    assert f"field '{field}'" in err and problem in err


def test_an_open_mesh_warns_and_a_closed_one_does_not(tmp_path):
    closed, plane = tmp_path / "closed.obj", tmp_path / "plane.obj"
    closed.write_text(TETRAHEDRON)
    plane.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3\nf 1 3 4\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_obj(closed)
    with pytest.warns(NgfxWarning, match=r"plane\.obj: the mesh is not closed \(4 of 5 edges"):
        load_obj(plane)


def _float_tiff(path):
    import imageio.v3 as iio

    iio.imwrite(path, np.full((32, 32, 3), 2.5, np.float32))


@pytest.mark.parametrize("name, write, problem", [
    ("text.png", lambda p: p.write_text("hello, not a picture\n"), "not an image"),
    ("empty.jpg", lambda p: p.write_bytes(b""), "empty file"),
    ("dot.png", lambda p: write_image(p, np.zeros((1, 1, 3), np.float32)), "image too small: 1x1 pixels"),
    ("hdr.tiff", _float_tiff, "float image with values in [2.5, 2.5]"),
    ("folder.png", lambda p: p.mkdir(), "is a folder, expected an image"),
])
def test_bad_images_say_what_is_wrong_with_the_file(tmp_path, capsys, name, write, problem):
    image = tmp_path / name
    write(image)
    err = _train_refused(tmp_path, capsys, "gia", image)
    assert problem in err and "backend" not in err and "per_level_scale" not in err


def _dataset(tmp_path, **changes) -> str:
    """A 3-frame instant-ngp dataset; ``changes`` edit frame 1 (file_path, transform_matrix) or the header."""
    root = tmp_path / "data"
    frames = []
    for i in range(3):
        write_image(root / "images" / f"{i}.png", np.random.rand(12, 16, 3).astype(np.float32))
        pose = np.eye(4)
        pose[:3, 3] = [0.0, -4.0 - 0.1 * i, 0.5]
        frames.append({"file_path": f"images/{i}.png", "transform_matrix": pose.tolist()})
    meta = {"fl_x": 20.0, "w": 16, "h": 12, "frames": frames}
    for key, value in changes.items():
        (frames[1] if key in ("file_path", "transform_matrix") else meta)[key] = value
    (root / "transforms.json").write_text(json.dumps(meta))
    return str(root / "transforms.json")


def test_file_paths_leaving_the_dataset_are_refused_unless_allowed(tmp_path, monkeypatch):
    write_image(tmp_path / "secret.png", np.random.rand(12, 16, 3).astype(np.float32))
    for outside in ("../secret.png", str(tmp_path / "secret.png")):
        monkeypatch.delenv("NGFX_ALLOW_OUTSIDE_PATHS", raising=False)
        path = _dataset(tmp_path, file_path=outside)
        with pytest.raises(NgfxInputError, match=r"field 'frames\[1\]\.file_path'.*outside the dataset folder"):
            load_multiview(path, "train")
        monkeypatch.setenv("NGFX_ALLOW_OUTSIDE_PATHS", "1")
        assert len(load_multiview(path, "train")) == 2


@pytest.mark.parametrize("changes, field, problem", [
    ({"transform_matrix": np.zeros((4, 4)).tolist()}, r"frames\[1\]\.transform_matrix", "not orthonormal"),
    ({"transform_matrix": [[1, 0, 0, 1e30], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
     r"frames\[1\]\.transform_matrix", "beyond"),
    ({"transform_matrix": np.diag([1.0, 1.0, -1.0, 1.0]).tolist()}, r"frames\[1\]\.transform_matrix", "determinant"),
    ({"k1": 1e6}, "k1", r"must be in \[-10.0, 10.0\]"),
    ({"w": 16.5}, "w", "whole number"),
    ({"offset": [0.5, "middle", 0.5]}, "offset", "expected int or float"),
    ({"aabb_scale": 1e30}, "aabb_scale", "must be in"),
    ({"w": 10 ** 9}, "w", "must be in"),
    ({"fl_x": 1e-9}, "fl_x", "absurd"),
    ({"cx": 1e30}, "cx", "must be in"),
])
def test_absurd_cameras_are_refused_with_the_frame(tmp_path, changes, field, problem):
    with pytest.raises(NgfxInputError, match=rf"transforms\.json: field '{field}': .*{problem}"):
        load_multiview(_dataset(tmp_path, **changes), "train")


def test_a_cmyk_jpeg_is_read_as_rgb_not_rgba(tmp_path):
    from PIL import Image

    from ngfx.io import read_image

    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).convert("CMYK").save(tmp_path / "print.jpg")
    img = read_image(tmp_path / "print.jpg")
    assert img.shape == (16, 16, 3) and img[..., 0].min() > 0.9 and img[..., 1:].max() < 0.1


def test_a_dataset_frame_that_is_not_an_image_names_the_frame_and_the_file(tmp_path):
    path = _dataset(tmp_path)
    (tmp_path / "data" / "images" / "1.png").write_text("not pixels")
    with pytest.raises(NgfxInputError, match=r"transforms\.json: field 'frames\[1\]\.file_path': .*1\.png: not an image"):
        load_multiview(path, "train")

