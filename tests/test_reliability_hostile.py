"""A second hostile pass (issue 12's goal, fresh inputs): each case is one clear line naming the flag or file
and field, exit 2, and nothing written or lost."""

import json
import warnings

import numpy as np
import pytest
from test_reliability_runs import TRAIN, _records, run, trained  # noqa: F401 (fixtures: a trained tiny gia run)

from ngfx.cli import main
from ngfx.errors import NgfxInputError, NgfxWarning
from ngfx.io import atomic_folder, read_image
from ngfx.render.datasets import load_cameras
from ngfx.render.ops.mesh_sdf import load_obj

IDENTITY_POSE = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]


def _refused(capsys, argv, *expected) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(text in err for text in expected), err
    return err


# --- data loss: outputs never replace a run or the user's files ------------------------------------
def test_trace_and_export_refuse_to_write_over_a_run_record(run, capsys):
    before = _records(run)
    _refused(capsys, ["trace", str(run), "--out", str(run / "checkpoint.safetensors"), "--device", "cpu"],
             "--out", "checkpoint.safetensors", "record of the run")
    link = run.parent / "link.json"
    link.symlink_to(run / "curve.json")  # through a link too
    _refused(capsys, ["nelf", "export", str(run), "--out", str(link)], "--out", "record of the run")
    assert _records(run) == before


def test_a_report_refuses_a_run_folder_and_keeps_the_users_files(run, tmp_path, capsys):
    before = _records(run)
    _refused(capsys, ["mobile-report", "paper", "--out", str(run)], str(run), "run folder")
    assert _records(run) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with atomic_folder(mine) as tmp:
        (tmp / "report.md").write_text("new")
    assert (mine / "notes.txt").read_text() == "precious" and (mine / "report.md").read_text() == "new"
    for version in ("v1", "v2"):  # a folder of this output's earlier files only is still replaced whole
        with atomic_folder(tmp_path / "fresh") as tmp:
            (tmp / "report.md").write_text(version)
    assert (tmp_path / "fresh" / "report.md").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "mine", "run"]  # no temp folder left


# --- silent wrong answers: a run that trained nothing, absurd saved options --------------------------
def test_a_budget_that_ends_before_the_first_step_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    _refused(capsys, [*TRAIN, "--seconds", "1e-300", "--out", str(out)], "--seconds", "before the first training step")
    assert not out.exists()


@pytest.mark.parametrize("key, value, expected", [
    ("lr", -0.5, "field 'options.lr': expected a finite number > 0"),
    ("image_size", [64, 48, 3], "field 'options.image_size': expected [int, int]"),
    ("image_size", [0, 5], "field 'options': procedural image size must be positive"),  # the app's own check
])
def test_saved_options_the_app_cannot_use_name_run_json(run, capsys, key, value, expected):
    saved = json.loads((run / "run.json").read_text())
    saved["options"][key] = value
    (run / "run.json").write_text(json.dumps(saved))
    before = _records(run)
    _refused(capsys, [*TRAIN, "--resume", "--steps", "4", "--out", str(run)], str(run / "run.json"), expected)
    assert _records(run) == before


def test_a_malformed_curve_entry_is_refused_not_carried_on(run, capsys):
    (run / "curve.json").write_text(json.dumps({"loss": [[1, 0.5], [2, "x"]]}))
    before = _records(run)
    _refused(capsys, [*TRAIN, "--resume", "--steps", "4", "--out", str(run)], "curve.json", "field 'loss[1]'")
    assert _records(run) == before


@pytest.mark.parametrize("argv, flag", [
    (["nelf", "distill", "teacher", "--out", "x", "--steps", "-3"], "--steps"),
    (["nelf", "distill", "teacher", "--out", "x", "--finetune-steps", "-1"], "--finetune-steps"),
    (["nelf", "distill", "teacher", "--out", "x", "--device", "tpu"], "--device"),
    (["trace", "run", "--frames", "0"], "--frames"),
    (["sim", "sweep", "--workers", "0"], "--workers"),
])
def test_flags_out_of_range_are_refused_at_parse_time(tmp_path, monkeypatch, capsys, argv, flag):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# --- cameras, images, meshes -------------------------------------------------------------------------
@pytest.mark.parametrize("change, field, problem", [
    ({"camera_angle_x": 0.0}, "camera_angle_x", "must be in (0, pi) radians"),  # was a ZeroDivisionError
    ({"frames": [{"transform_matrix": [*IDENTITY_POSE[:3], [0, 0, 1, 1]]}]}, "frames[0].transform_matrix",
     "the last row must be [0, 0, 0, 1]"),
    ({"frames": [{"transform_matrix": [*IDENTITY_POSE[:3], [0, 0, float("nan"), 1]]}]}, "frames[0].transform_matrix",
     "NaN or inf"),
])
def test_cameras_files_with_impossible_cameras_are_refused(tmp_path, change, field, problem):
    cameras = tmp_path / "cameras.json"
    cameras.write_text(json.dumps({"camera_angle_x": 0.7, "w": 16, "h": 16,
                                   "frames": [{"transform_matrix": IDENTITY_POSE}], **change}))
    with pytest.raises(NgfxInputError) as error:
        load_cameras(cameras)
    assert error.value.source == str(cameras) and error.value.field == field and problem in error.value.problem


def test_an_integer_image_outside_8_and_16_bits_is_named_by_its_type(tmp_path):
    import imageio.v3 as iio

    path = tmp_path / "counts.tiff"
    iio.imwrite(path, np.full((20, 30), 99, np.int32))
    with pytest.raises(NgfxInputError, match=r"counts\.tiff: int32 image with values in \[99, 99\]"):
        read_image(path)


def test_meshes_binary_tiny_and_with_duplicated_faces(tmp_path):
    binary = tmp_path / "photo.obj"
    binary.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100))
    with pytest.raises(NgfxInputError, match=r"photo\.obj: not an OBJ mesh \(binary data"):
        load_obj(binary)
    tiny = tmp_path / "tiny.obj"  # a closed tetrahedron 1e-30 across: its areas underflow float32 unless scaled
    tiny.write_text("v 0 0 0\nv 1e-30 0 0\nv 0 1e-30 0\nv 0 0 1e-30\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_obj(tiny)
    doubled = tmp_path / "doubled.obj"  # a face three times: the winding number's sign is wrong beside it
    doubled.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\nf 1 3 2\nf 1 3 2\n")
    with pytest.warns(NgfxWarning, match=r"doubled\.obj: the mesh is not manifold \(3 of 6 edges"):
        load_obj(doubled)


@pytest.mark.parametrize("meta, field", [
    ({"camera_type": "fisheye", "render_width": 16, "render_height": 16,
      "camera_path": [{"camera_to_world": sum(IDENTITY_POSE, []), "fov": 50}]}, "camera_type"),
    ({"camera_model": "OPENCV_FISHEYE", "fl_x": 10, "w": 16, "h": 16, "frames": [{"transform_matrix": IDENTITY_POSE}]},
     "camera_model"),
    ({"is_fisheye": True, "fl_x": 10, "w": 16, "h": 16, "frames": [{"transform_matrix": IDENTITY_POSE}]}, "is_fisheye"),
    ({"k3": 0.2, "fl_x": 10, "w": 16, "h": 16, "frames": [{"transform_matrix": IDENTITY_POSE}]}, "k3"),
])
def test_lenses_ngfx_does_not_model_are_refused_not_rendered_as_pinholes(tmp_path, meta, field):
    cameras = tmp_path / "cameras.json"
    cameras.write_text(json.dumps(meta))
    with pytest.raises(NgfxInputError) as error:
        load_cameras(cameras)
    assert error.value.source == str(cameras) and error.value.field == field


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    import errno
    import os

    from ngfx.io import write_json

    target = tmp_path / "metrics.json"
    write_json(target, {"psnr": 30})

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as error:
        write_json(target, {"psnr": 5})
    assert error.value.filename == str(target) and error.value.errno == errno.ENOSPC
    assert json.loads(target.read_text()) == {"psnr": 30} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with pytest.raises(OSError) as error, atomic_folder(tmp_path / "report"):
        raise OSError(errno.ENOSPC, "No space left on device")  # as matplotlib's savefig raises it
    assert error.value.filename == str(tmp_path / "report") and not (tmp_path / "report").exists()


@pytest.mark.parametrize("argv", [["nelf", "distill", "teacher", "--out"], ["demo", "--smoke", "--out"]])
def test_an_out_that_is_a_file_is_named_with_its_flag_before_any_work(tmp_path, capsys, argv):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    _refused(capsys, [*argv, str(taken)], f"--out {taken}: is a file, expected a folder")
    _refused(capsys, [*argv, str(taken / "sub")], f"--out {taken / 'sub'}: lies under {taken}")
    assert taken.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_one_image_under_two_poses_is_refused(tmp_path):
    from ngfx.io import write_image

    write_image(tmp_path / "a.png", np.zeros((16, 16, 3), np.float32))
    moved = [row[:] for row in IDENTITY_POSE]
    moved[0][3] = 1.0
    cameras = tmp_path / "transforms.json"
    cameras.write_text(json.dumps({"fl_x": 12, "frames": [{"file_path": "a.png", "transform_matrix": IDENTITY_POSE},
                                                          {"file_path": "./a.png", "transform_matrix": moved}]}))
    with pytest.raises(NgfxInputError, match=r"field 'frames\[1\]\.file_path': a\.png is also the image of frames\[0\]"):
        load_cameras(cameras)


def test_resuming_with_fewer_steps_than_done_is_refused(run, capsys):
    before = _records(run)  # the fixture's run has trained 2 steps
    _refused(capsys, [*TRAIN, "--resume", "--steps", "1", "--out", str(run)], "--steps", "fewer than the 2 steps")
    assert _records(run) == before
