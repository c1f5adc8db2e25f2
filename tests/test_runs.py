"""Run folders through the CLI: train, resume, render; corrupt checkpoints give one clear line."""

import json

import pytest
import torch

from ngfx.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import os

    os.environ.setdefault("NGFX_CACHE", str(tmp_path_factory.mktemp("cache")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "nerf"
    assert main(["train", "nerf", "--scene", "synthetic", "--size", "tiny", "--steps", "20", "--out", str(out),
                 "--device", "cpu"]) == 0
    yield out
    torch.set_num_threads(threads)


def test_train_writes_a_run_folder(run_dir):
    for name in ("run.json", "checkpoint.safetensors", "metrics.json", "curve.json", "preview.png"):
        assert (run_dir / name).is_file(), name
    run = json.loads((run_dir / "run.json").read_text())
    assert run["app"] == "nerf" and run["scene"] == "synthetic" and run["size"] == "tiny"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["psnr_db"] > 5
    assert len(json.loads((run_dir / "curve.json").read_text())["loss"]) == 20


def test_a_run_trained_again_is_the_same_run(tmp_path):
    from ngfx.io import load_checkpoint

    weights = []
    for name in ("a", "b"):
        torch.rand(7)  # whatever the process drew before: the run's seed decides
        out = tmp_path / name
        assert main(["train", "gia", "--scene", "image", "--size", "tiny", "--steps", "5", "--out", str(out),
                     "--device", "cpu"]) == 0
        weights.append(load_checkpoint(out / "checkpoint.safetensors")[0])
    model = [name for name in weights[0] if not name.startswith("optim")]
    assert model and weights[0].keys() == weights[1].keys()
    for name in model:
        torch.testing.assert_close(weights[0][name], weights[1][name], atol=0, rtol=0)


def test_resume_continues_from_the_checkpoint(run_dir):
    assert main(["train", "nerf", "--scene", "synthetic", "--size", "tiny", "--steps", "30", "--out", str(run_dir),
                 "--device", "cpu", "--resume"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 30
    curve = json.loads((run_dir / "curve.json").read_text())["loss"]
    assert [step for step, _ in curve] == list(range(1, 31))


def test_render_writes_frames_video_and_metrics(run_dir, tmp_path):
    out = tmp_path / "frames"
    assert main(["render", str(run_dir), "--resolution", "20x16", "--camera-path", "orbit", "--frames", "3",
                 "--video", "--unfused", "--out", str(out), "--device", "cpu"]) == 0
    import imageio.v3 as iio

    frames = sorted(out.glob("frame_*.png"))
    assert len(frames) == 3 and iio.imread(frames[0]).shape == (16, 20, 3)
    assert not (iio.imread(frames[0]) == iio.imread(frames[1])).all()  # the camera moved
    assert (out / "video.mp4").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 3 and (metrics["width"], metrics["height"]) == (20, 16)
    assert "evaluation" not in metrics  # the val split is evaluated only with --eval


def test_corrupt_checkpoint_is_one_clear_line(run_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    data = (broken / "checkpoint.safetensors").read_bytes()
    (broken / "checkpoint.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["render", str(broken), "--resolution", "8x8", "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.safetensors" in err and "corrupt or truncated" in err and "Traceback" not in err


def test_bad_scene_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "nerf", "--scene", str(tmp_path / "nowhere"), "--size", "tiny", "--out",
                 str(tmp_path / "r"), "--device", "cpu"]) == 2
    assert "nowhere: scene not found" in capsys.readouterr().err


def test_learning_rate_decays_over_the_budget():
    from ngfx.render.apps.gia import build_app
    from ngfx.render.neural_field import LR_DECAY, learning_rate_scale, optimisation_step, training_progress

    assert learning_rate_scale(0.0) == 1.0 and learning_rate_scale(0.49) == 1.0
    assert learning_rate_scale(0.5) == pytest.approx(LR_DECAY)
    assert learning_rate_scale(0.95) == pytest.approx(LR_DECAY ** 3)
    # whichever budget ends first sets the progress
    assert training_progress(10, 100, 9.0, 10.0) == pytest.approx(0.9)
    assert training_progress(50, 100, 1.0, None) == pytest.approx(0.5)
    app = build_app("image", "hashgrid", "tiny", device="cpu")
    optimizer = app.optimizer()
    base = optimizer.param_groups[0]["lr"]
    optimisation_step(app, optimizer, 0, progress=0.95)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(base * LR_DECAY ** 3)
    optimisation_step(app, optimizer, 1, progress=0.1)  # the base rate is remembered, not compounded
    assert optimizer.param_groups[0]["lr"] == pytest.approx(base)


def test_trace_records_fused_or_unfused_rest_kernels(run_dir, tmp_path):
    from ngfx.ngpc_sim.trace import read_trace

    for flag, rest in (([], "unfused"), (["--fused"], "fused")):
        out = tmp_path / f"{rest}.json"
        assert main(["trace", str(run_dir), "--resolution", "16x12", "--out", str(out), "--device", "cpu", *flag]) == 0
        trace = read_trace(out)
        assert trace.rest == rest and {"nerf.march", "nerf.composite"} <= {k.name for k in trace.kernels}
