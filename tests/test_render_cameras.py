"""`ngfx render RUN --cameras FILE`: a transforms file's poses at its intrinsics, scored against its images; a
nerfstudio camera path; run folders that render from any directory; evaluation only with --eval."""

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from ngfx.cli import main
from ngfx.io import write_image
from ngfx.cameras import Intrinsics, look_at
from ngfx.render.runs import load_run

FOV_X = math.radians(50.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "nsdf"
    assert main(["train", "nsdf", "--scene", "csg", "--size", "tiny", "--steps", "20", "--out", str(out),
                 "--device", "cpu"]) == 0
    return out


def _poses():
    """Two views from opposite sides: the world-fixed light makes them look different."""
    return [look_at(torch.tensor(eye), torch.zeros(3)) for eye in ((2.5, 0.4, 0.8), (-2.5, -0.4, 0.8))]


def _transforms(folder, images, poses):
    """A Blender transforms file whose frames name ``images`` (PNG, without extension as Blender writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (image, pose) in enumerate(zip(images, poses)):
        write_image(folder / f"f{i}.png", image)
        frames.append({"file_path": f"./f{i}", "transform_matrix": pose.tolist()})
    path = folder / "transforms.json"
    path.write_text(json.dumps({"camera_angle_x": FOV_X, "frames": frames}))
    return path


def test_transforms_file_renders_its_poses_and_scores_them(run_dir, tmp_path):
    app = load_run(run_dir, "cpu")
    k = Intrinsics.from_fov_x(32, 24, FOV_X)
    truth = [app.render(32, 24, (pose, k), fused=False).numpy() for pose in _poses()]
    assert np.abs(truth[0] - truth[1]).mean() > 0.01  # the two views differ
    out = tmp_path / "render"
    assert main(["render", str(run_dir), "--cameras", str(_transforms(tmp_path / "cams", truth, _poses())),
                 "--unfused", "--out", str(out), "--device", "cpu"]) == 0
    frames = sorted(out.glob("frame_*.png"))
    assert len(frames) == 2 and iio.imread(frames[0]).shape == (24, 32, 3)  # the file's size, not 800x800
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["psnr_db"] > 35 and len(metrics["per_frame"]) == 2  # PNG rounding only
    assert "evaluation" not in metrics  # rendering does not re-run the evaluation unasked
    # the images swapped: the scores must notice that each frame is compared with the other view
    swapped = tmp_path / "swapped"
    assert main(["render", str(run_dir), "--cameras", str(_transforms(tmp_path / "cams2", truth[::-1], _poses())),
                 "--unfused", "--out", str(swapped), "--device", "cpu"]) == 0
    assert json.loads((swapped / "metrics.json").read_text())["psnr_db"] < metrics["psnr_db"] - 10
    # --resolution overrides the file's size (the references are resized to it)
    small = tmp_path / "small"
    assert main(["render", str(run_dir), "--cameras", str(tmp_path / "cams" / "transforms.json"), "--resolution",
                 "16x12", "--unfused", "--out", str(small), "--device", "cpu"]) == 0
    assert iio.imread(small / "frame_0000.png").shape == (12, 16, 3)
    assert "psnr_db" in json.loads((small / "metrics.json").read_text())  # against the resized references


def test_nerfstudio_camera_path_uses_its_vertical_fov(run_dir, tmp_path):
    pose = _poses()[0]
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps({"render_width": 20, "render_height": 10, "seconds": 1.0,
                                "camera_path": [{"camera_to_world": pose.flatten().tolist(), "fov": 40.0}] * 3}))
    out = tmp_path / "render"
    assert main(["render", str(run_dir), "--cameras", str(path), "--unfused", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert len(list(out.glob("frame_*.png"))) == 3
    focal = 0.5 * 10 / math.tan(math.radians(20.0))
    expected = load_run(run_dir, "cpu").render(20, 10, (pose, Intrinsics(20, 10, focal, focal, 10, 5)), fused=False)
    written = iio.imread(out / "frame_0001.png").astype(np.float32) / 255
    assert np.abs(written - expected.numpy()).max() <= 1 / 255 + 1e-6
    assert "psnr_db" not in json.loads((out / "metrics.json").read_text())  # no images, no scores


def test_bad_camera_file_is_one_clear_line(run_dir, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"render_width": 20, "render_height": 10,
                                "camera_path": [{"camera_to_world": [1.0] * 15, "fov": 40.0}]}))
    assert main(["render", str(run_dir), "--cameras", str(path), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "camera_path[0].camera_to_world" in err and "bad.json" in err


def test_eval_flag_adds_the_evaluation(run_dir, tmp_path):
    out = tmp_path / "render"
    assert main(["render", str(run_dir), "--resolution", "16x12", "--eval", "--unfused", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "sign_agreement_uniform_pct" in json.loads((out / "metrics.json").read_text())["evaluation"]


def test_run_folder_renders_from_any_directory(tmp_path, monkeypatch):
    from test_first_contact import _tall_box_obj

    monkeypatch.chdir(tmp_path)
    _tall_box_obj(tmp_path / "box.obj")
    assert main(["train", "nsdf", "--scene", "box.obj", "--size", "tiny", "--steps", "3", "--out", "run",
                 "--device", "cpu"]) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["scene"] == str(tmp_path / "box.obj")  # absolute: the folder no longer depends on the cwd
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["render", "../run", "--resolution", "16x12", "--unfused", "--out", "frames", "--device", "cpu"]) == 0
    assert (elsewhere / "frames" / "frame_0000.png").is_file()


def test_render_shows_progress_inside_a_large_frame(run_dir, tmp_path, monkeypatch, capsys):
    from ngfx import progress

    monkeypatch.setitem(progress.LARGE_FRAME_RAYS, "cpu", 0)  # every frame counts as large
    assert main(["render", str(run_dir), "--out", str(tmp_path / "r"), "--resolution", "64x32",
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err  # captured: not a terminal, so the bars are log lines
    assert "render nsdf (64x32): 100%|" in err and "32/32" in err
