"""Distillation, NeLF runs and ONNX export on CPU, with a tiny analytic teacher (and R1's NeRF when present)."""

import json
import math
import os
import signal

import numpy as np
import pytest
import torch

from ngfx.cli import main
from ngfx.errors import NgfxInputError
from ngfx.nelf import distill as distill_module
from ngfx.nelf.distill import distill_from_app, sample_poses
from ngfx.nelf.network import PRESETS, NeLF
from ngfx.nelf.onnx_export import export_model, export_run, onnx_max_error
from ngfx.nelf.runs import load_nelf_run, render_nelf_run
from ngfx.cameras import Intrinsics, orbit_poses, pixel_rays


pytestmark = pytest.mark.usefixtures("one_thread")


class SphereTeacher:
    """The App attributes distillation reads: a unit sphere coloured by its normal, white background."""

    name = "nerf"

    def __init__(self, size: int = 32):
        self.intrinsics = Intrinsics.from_fov_x(size, size, math.radians(40))
        self.train_poses = orbit_poses(12, 4.0, elevation_deg=25.0)
        self.eval_poses = orbit_poses(5, 4.0, elevation_deg=35.0)[1:]
        self.near, self.far = 2.0, 6.0
        self.aabb = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
        self.background = torch.ones(3)
        self.eval_images = torch.stack([self.render_rays(*pixel_rays(p, self.intrinsics)).reshape(size, size, 3)
                                        for p in self.eval_poses])

    def eval(self) -> "SphereTeacher":  # as a loaded NeRF App is put in eval mode
        return self

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        b = (origins * dirs).sum(1)
        disc = b * b - ((origins * origins).sum(1) - 1.0)
        normal = origins + (-b - disc.clamp_min(0).sqrt())[:, None] * dirs
        return torch.where((disc > 0)[:, None], 0.5 + 0.5 * normal, self.background.expand_as(normal))


def test_pseudo_views_rendered_several_at_a_time_keep_their_poses(monkeypatch):
    """Views batched into one render call (3 a call over 7 poses: a short last call) come out in pose order,
    each equal to that view rendered alone."""
    teacher = SphereTeacher(16)
    poses = orbit_poses(7, 4.0, elevation_deg=30.0)
    monkeypatch.setitem(distill_module.RAYS_PER_RENDER, "cpu", 3 * 16 * 16)
    frames = list(distill_module._teacher_frames(teacher, poses, teacher.intrinsics))
    assert len(frames) == 7
    for frame, c2w in zip(frames, poses):
        alone = teacher.render_rays(*pixel_rays(c2w, teacher.intrinsics)).reshape(16, 16, 3)
        assert np.abs(frame.astype(np.float32) / 255 - alone.numpy()).max() <= 0.5 / 255 + 1e-6
    assert not np.array_equal(frames[0], frames[1])  # the views differ, so a shuffled order would fail


def test_an_interrupt_saves_the_distillation_and_the_same_call_continues(tmp_path, monkeypatch):
    """SIGINT during a step: the step finishes, the checkpoint is written at it (no periodic checkpoint is due),
    TrainingInterrupted says where; the same call then resumes there and finishes the budget."""
    from ngfx.errors import TrainingInterrupted
    from ngfx.io import load_checkpoint

    step_of = distill_module._Frames.training_step

    def interrupted_at_the_fourth(self, step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return step_of(self, step)

    monkeypatch.setattr(distill_module._Frames, "training_step", interrupted_at_the_fourth)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 4 of the distill phase"):
        distill_from_app(SphereTeacher(), tmp_path / "run", "tiny", steps=30, checkpoint_every=1000)
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert (meta["phase"], meta["step"]) == ("distill", 4)
    assert not (tmp_path / "run" / "run.json").exists()  # no result of an unfinished run
    monkeypatch.setattr(distill_module._Frames, "training_step", step_of)
    assert distill_from_app(SphereTeacher(), tmp_path / "run", "tiny", steps=30, checkpoint_every=1000)["steps"] == 30


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("nelf_run")
    run = distill_from_app(SphereTeacher(), out, "tiny", steps=120, checkpoint_every=60)
    return out, run


def test_student_beats_constant_colour(tiny_run):
    _, run = tiny_run
    m = run["metrics"]
    assert m["teacher_psnr_db"] > 40  # the analytic teacher is its own reference, up to uint8 rounding
    assert m["student_psnr_db"] > m["constant_colour_psnr_db"] + 5.0
    assert run["resolution"] == [32, 32] and run["pseudo_views"] == 24


def test_quality_curve_tracks_the_student_by_minutes(tiny_run):
    out, run = tiny_run
    curve = json.loads((out / "curve.json").read_text())
    steps = [s for s, _ in curve["loss"]]
    assert steps == sorted(set(steps)) and steps[-1] <= run["steps"]
    losses = [v for _, v in curve["loss"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # it learned
    probes = curve["psnr_by_minutes"]
    assert len(probes) >= 3 and probes[-1][1] == run["steps"] + run["finetune_steps"]
    minutes = [m for m, *_ in probes]
    assert minutes == sorted(minutes) and minutes[0] >= 0 and minutes[-1] < 5
    assert probes[-1][2] > probes[0][2] + 1.0  # better against the ground truth after training than at its start


def test_a_damaged_curve_is_refused_on_resume_naming_the_entry(tiny_run, tmp_path):
    out, _ = tiny_run
    for name in ("run.json", "checkpoint.safetensors"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    curve = json.loads((out / "curve.json").read_text())
    curve["psnr_by_minutes"][1][2] = "NaN"
    (tmp_path / "curve.json").write_text(json.dumps(curve))
    with pytest.raises(NgfxInputError, match=r"psnr_by_minutes\[1\]"):
        distill_from_app(SphereTeacher(), tmp_path, "tiny", steps=130, checkpoint_every=60)
    assert json.loads((tmp_path / "curve.json").read_text()) == curve  # left as it was


def test_comparison_image_is_truth_teacher_student_side_by_side(tiny_run):
    import imageio.v3 as iio

    out, _ = tiny_run
    image = iio.imread(out / "comparison.png").astype(np.float32) / 255
    assert image.shape == (32, 96, 3)
    truth, teacher, student = image[:, :32], image[:, 32:64], image[:, 64:]
    mse = lambda a, b: float(((a - b) ** 2).mean())  # noqa: E731
    assert mse(truth, teacher) < 1e-4  # the analytic teacher renders its own ground truth
    assert mse(student, teacher) > 0.0  # the student's own render, not a copy of the teacher's
    assert mse(student, truth) < mse(truth.mean(axis=(0, 1), keepdims=True), truth)  # and a picture of the scene


def test_resume_continues_from_the_checkpoint(tiny_run, tmp_path):
    out, _ = tiny_run
    for name in ("run.json", "checkpoint.safetensors", "pseudo", "curve.json"):
        src = out / name
        if src.is_dir():
            (tmp_path / name).mkdir()
            for f in src.iterdir():
                (tmp_path / name / f.name).write_bytes(f.read_bytes())
        else:
            (tmp_path / name).write_bytes(src.read_bytes())
    run = distill_from_app(SphereTeacher(), tmp_path, "tiny", steps=130, checkpoint_every=60)
    from ngfx.io import load_checkpoint

    _, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 130 and meta["phase"] == "distill"
    before = json.loads((out / "curve.json").read_text())["psnr_by_minutes"]
    after = json.loads((tmp_path / "curve.json").read_text())["psnr_by_minutes"]
    assert after[:len(before) - 1] == before[:-1] and after[-1][1] == 130  # the curve continues, no step repeated
    assert after[-1][0] >= before[-1][0]
    assert run["metrics"]["student_psnr_db"] > run["metrics"]["constant_colour_psnr_db"] + 5.0


def test_sampled_poses_start_with_training_views_and_look_at_the_centre():
    train = orbit_poses(6, 4.0)
    poses = sample_poses(train, torch.zeros(3), 20)
    assert torch.equal(poses[:6], train)
    forward = -poses[6:, :3, 2]
    to_centre = -poses[6:, :3, 3] / poses[6:, :3, 3].norm(dim=1, keepdim=True)
    assert torch.allclose(forward, to_centre, atol=1e-5)
    assert torch.allclose(poses[6:, :3, 3].norm(dim=1), torch.full((14,), 4.0), atol=1e-4)


def test_render_run_frames_and_errors(tiny_run, tmp_path):
    out, _ = tiny_run
    paths = render_nelf_run(out, tmp_path / "frames", (48, 40), n_frames=2)
    from ngfx.io import read_image

    assert len(paths) == 2 and read_image(paths[0]).shape == (40, 48, 3)
    metrics = json.loads((tmp_path / "frames" / "metrics.json").read_text())
    assert metrics["frames"] == 2 and metrics["resolution"] == [48, 40] and metrics["ms_per_frame_median"] > 0
    records = (out / "metrics.json").read_bytes()
    with pytest.raises(NgfxInputError, match="run folder itself"):
        render_nelf_run(out, out, (48, 40), n_frames=1)
    assert (out / "metrics.json").read_bytes() == records
    with pytest.raises(NgfxInputError, match="impossible"):
        render_nelf_run(out, tmp_path / "bad", (33, 32), n_frames=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text((out / "run.json").read_text())
    (broken / "checkpoint.safetensors").write_bytes((out / "checkpoint.safetensors").read_bytes()[:500])
    with pytest.raises(NgfxInputError, match="corrupt or truncated"):
        load_nelf_run(broken)


def test_onnx_matches_pytorch(tiny_run, tmp_path):
    model = NeLF(PRESETS["tiny"])
    for m in model.modules():  # non-trivial BatchNorm statistics, folded by the exporter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    path = export_model(model, tmp_path / "m.onnx", (32, 24))
    rays = torch.randn(1, model.cfg.in_channels, 12, 16)
    assert onnx_max_error(model, path, rays) < 1e-4
    import onnx

    graph = onnx.load(str(path))
    assert not [n for n in graph.graph.node if n.op_type == "BatchNormalization"]
    props = {p.key: p.value for p in graph.metadata_props}
    assert props["ngfx.input_shape"].startswith(f"[1, {model.cfg.in_channels}, 12, 16]")
    assert json.loads(props["ngfx.nelf_config"]) == model.cfg.to_dict() and "sin(2^(j-1) pi x)" in props[
        "ngfx.input_layout"]
    out, _ = tiny_run
    summary = export_run(out, tmp_path / "run.onnx")
    assert summary["max_abs_error_vs_pytorch"] < 1e-4 and summary["resolution"] == [32, 32]


def test_cli_export_and_errors(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    assert main(["nelf", "export", str(out), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "max |onnxruntime - PyTorch|" in capsys.readouterr().out
    assert main(["nelf", "export", str(tmp_path), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "run.json" in capsys.readouterr().err
    assert main(["mobile-report", str(out), "--resolution", "64x64", "--out", str(tmp_path / "rep")]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["totals"]["params"] == sum(layer["params"] for layer in report["layers"])


def test_student_distils_from_the_project_nerf(tmp_path):
    nerf = pytest.importorskip("ngfx.render.apps.nerf")
    from ngfx.render.neural_field import fit

    torch.manual_seed(0)
    teacher = nerf.build_app("synthetic", "hashgrid", "tiny", device="cpu")
    fit(teacher, steps=150)
    teacher.eval()
    m = distill_from_app(teacher, tmp_path, "tiny", n_pseudo=12, steps=120)["metrics"]
    assert m["teacher_psnr_db"] > m["constant_colour_psnr_db"]
    assert m["student_psnr_db"] > m["constant_colour_psnr_db"] + 2.0


def test_time_budget_stops_distillation_early(tmp_path):
    from ngfx.nelf.distill import cosine_lr_scale

    assert cosine_lr_scale(0.0) == pytest.approx(1.0) and cosine_lr_scale(1.0) == pytest.approx(0.1)
    run = distill_from_app(SphereTeacher(), tmp_path, "tiny", steps=10 ** 6, seconds=3.0, checkpoint_every=10 ** 6)
    assert 0 < run["steps"] < 10 ** 6  # the clock, not the step count, ended it
    from ngfx.io import load_checkpoint

    _, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == run["steps"]  # the last step is checkpointed even between checkpoint intervals


def test_resume_refuses_another_arch_size_or_teacher(tmp_path):
    distill_from_app(SphereTeacher(), tmp_path, "tiny", n_pseudo=4, steps=2, teacher_run="teacherA")
    for options, flag in (({"arch": "lightslab"}, "--arch"), ({"size": "quick"}, "--size"),
                          ({"teacher_run": "teacherB"}, "teacher run")):
        args = {"size": "tiny", "teacher_run": "teacherA", **options}
        with pytest.raises(NgfxInputError, match=f"distilled with {flag} "):
            distill_from_app(SphereTeacher(), tmp_path, n_pseudo=4, steps=4, **args)
    for options, field in (({"batch": 3}, "batch"), ({"lr": 1e-4}, "lr")):  # another student: not resumed silently
        with pytest.raises(NgfxInputError, match=f"field '{field}'.*trained with {field}"):
            distill_from_app(SphereTeacher(), tmp_path, "tiny", n_pseudo=4, steps=4, teacher_run="teacherA", **options)
    # the pseudo views alone (no checkpoint yet) also say whose they are
    (tmp_path / "run.json").unlink()
    (tmp_path / "checkpoint.safetensors").unlink()
    with pytest.raises(NgfxInputError, match="progress.json: field 'teacher'"):
        distill_from_app(SphereTeacher(), tmp_path, "tiny", n_pseudo=4, steps=4, teacher_run="teacherB")


def test_distill_refuses_an_out_folder_that_is_not_a_nelf_run(tmp_path):
    (tmp_path / "nerf").mkdir()
    (tmp_path / "nerf" / "run.json").write_text(json.dumps({"app": "nerf"}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for folder, problem in (("nerf", "not a NeLF run"), ("other", "holds no NeLF run")):
        with pytest.raises(NgfxInputError, match=problem):
            distill_from_app(SphereTeacher(), tmp_path / folder, "tiny", n_pseudo=4, steps=2)
    assert json.loads((tmp_path / "nerf" / "run.json").read_text()) == {"app": "nerf"}
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("edit, problem", [
    (lambda run: run["intrinsics"].update(fx=float("nan")), "intrinsics: field 'fx'"),
    (lambda run: run["intrinsics"].update(width=0), "intrinsics: field 'width'"),
    (lambda run: run.update(far=run["near"]), "field 'far'"),
    (lambda run: run.update(aabb=run["aabb"][::-1]), "field 'aabb'"),
    (lambda run: run.update(orbit_radius=float("inf")), "field 'orbit_radius'"),
    (lambda run: run.update(resolution=[32]), "field 'resolution'"),
])
def test_a_nelf_run_json_with_bad_numbers_is_refused(tiny_run, tmp_path, edit, problem):
    out, _ = tiny_run
    run = json.loads((out / "run.json").read_text())
    edit(run)
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "checkpoint.safetensors").write_bytes((out / "checkpoint.safetensors").read_bytes())
    with pytest.raises(NgfxInputError, match=problem):
        load_nelf_run(tmp_path)


def test_export_names_the_resolution_flag(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    assert main(["nelf", "export", str(out), "--out", str(tmp_path / "m.onnx"), "--resolution", "33x32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ngfx nelf: error: --resolution: 33x32 is impossible") and not (tmp_path / "m.onnx").exists()


def test_distill_and_render_progress_are_lines_in_a_log(tmp_path, monkeypatch):
    import io

    from ngfx import progress

    log = io.StringIO()  # not a terminal, as a redirected stderr
    monkeypatch.setattr(progress.sys, "stderr", log)
    distill_from_app(SphereTeacher(), tmp_path / "run", "tiny", n_pseudo=4, steps=3)
    render_nelf_run(tmp_path / "run", tmp_path / "frames", n_frames=2, device="cpu")
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    for desc in ("pseudo views", "distill", "nelf frames"):
        assert any(line.startswith(f"{desc}: 100%") for line in lines), desc


@pytest.mark.parametrize("done", [2, "2", 999])
def test_damaged_pseudo_views_are_rendered_again(tmp_path, done):
    distill_from_app(SphereTeacher(), tmp_path, "tiny", n_pseudo=4, steps=2)
    pseudo = tmp_path / "pseudo"
    progress = json.loads((pseudo / "progress.json").read_text())
    (pseudo / "progress.json").write_text(json.dumps({**progress, "done": done}))
    (pseudo / "images.npy").write_bytes((pseudo / "images.npy").read_bytes()[:100])  # killed mid-write
    distill_from_app(SphereTeacher(), tmp_path, "tiny", n_pseudo=4, steps=3)
    images = np.load(pseudo / "images.npy")
    assert images.shape == (4, 32, 32, 3) and images.min() < 128 < images.max()  # sphere on white, not zeros
    assert json.loads((pseudo / "progress.json").read_text())["done"] == 4


def test_a_busy_run_folder_is_refused_and_a_refused_new_one_leaves_no_trace(tmp_path):
    import os

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / ".lock").write_text(f"{os.getppid()}\n")  # a live process other than this one
    with pytest.raises(NgfxInputError, match="in use by process"):
        distill_from_app(SphereTeacher(), busy, "tiny", n_pseudo=4, steps=2)
    with pytest.raises(NgfxInputError, match="size"):
        distill_from_app(SphereTeacher(), tmp_path / "new", "huge")
    assert not (tmp_path / "new").exists()


def test_long_side_sets_the_student_frame_size(tmp_path, capsys):
    run = distill_from_app(SphereTeacher(), tmp_path / "run", "tiny", steps=5, long_side=16)
    assert run["resolution"] == [16, 16] and run["metrics"]["eval_resolution"] == [16, 16]
    with pytest.raises(SystemExit) as exit_:
        main(["nelf", "distill", str(tmp_path / "run"), "--out", str(tmp_path / "x"), "--long-side", "0"])
    assert exit_.value.code == 2
    assert "--long-side" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_inference_runs_the_fused_kernels_where_their_widths_fit():
    import copy

    from ngfx.nelf.network import NeLFConfig
    from ngfx.nelf.runs import inference_model
    from ngfx.nelf.triton_nelf import DEFAULT_LAUNCH
    from test_nelf_triton import _with_gelu

    cpu = torch.device("cpu")  # with TRITON_INTERPRET=1 (conftest) the kernels run interpreted, in fp32
    for width, expected in ((32, "fused triton"), (48, "pytorch")):  # 48: not a power of two, the kernels refuse it
        cfg = NeLFConfig(n_points=2, n_freqs=2, width=width, n_blocks=1, sr_stages=((16, 4, 2),), sr_blocks=0)
        model = NeLF(cfg).eval()
        with torch.no_grad():
            model.to_rgb.weight.mul_(8.0)  # colours away from the sigmoid's flat middle
            rays = torch.randn(1, cfg.in_channels, 3, 4)
            # the fused kernels compute the GELU their default launch names (the tanh form), PyTorch the exact one
            gelu = DEFAULT_LAUNCH["gelu"] if expected == "fused triton" else "erf"
            reference = _with_gelu(copy.deepcopy(model), gelu)(rays)
            forward, dtype, name = inference_model(model, cpu)
            out = forward(rays)
        assert name == expected and dtype == torch.float32
        assert out.shape == reference.shape and (out - reference).abs().max() < 1e-5
        assert reference.std() > 0.05  # a frame with content, so the comparison means something


def test_batch_and_lr_reach_the_training_loop(tmp_path, monkeypatch):
    seen = []
    loop = distill_module.training_loop

    def recording_loop(app, optimizer, *args, **kwargs):
        seen.append((app.batch, [group["lr"] for group in optimizer.param_groups]))
        return loop(app, optimizer, *args, **kwargs)

    monkeypatch.setattr(distill_module, "training_loop", recording_loop)
    run = distill_from_app(SphereTeacher(), tmp_path / "run", "tiny", n_pseudo=8, steps=2, batch=3, lr=7e-4)
    assert seen == [(3, [7e-4])]  # the tiny size's own batch and lr are 4 and 3e-3
    assert (run["batch"], run["lr"], run["compiled"]) == (3, 7e-4, False)


def test_compiled_student_trains_as_the_eager_one(tmp_path):
    runs = {compiled: distill_from_app(SphereTeacher(), tmp_path / str(compiled), "tiny", n_pseudo=8, steps=3,
                                       compiled=compiled) for compiled in (False, True)}
    assert runs[True]["compiled"] and not runs[False]["compiled"]
    losses = [json.loads((tmp_path / str(c) / "curve.json").read_text())["loss"] for c in (False, True)]
    assert losses[0][0][0] == losses[1][0][0] == 1 and losses[0][0][1] == pytest.approx(losses[1][0][1], rel=1e-4)


@pytest.mark.parametrize("flag,value", [("--lr", "nan"), ("--lr", "0"), ("--lr", "-1e-3"), ("--batch", "0")])
def test_bad_batch_or_lr_exits_2_naming_the_flag(tmp_path, capsys, flag, value):
    try:
        code = main(["nelf", "distill", str(tmp_path / "teacher"), "--out", str(tmp_path / "x"), flag, value])
    except SystemExit as exit_:  # argparse refuses what its type refuses
        code = exit_.code
    assert code == 2 and flag in capsys.readouterr().err and not (tmp_path / "x").exists()
    with pytest.raises(NgfxInputError, match=flag):
        distill_from_app(SphereTeacher(), tmp_path / "y", "tiny", **{flag[2:]: float(value) if flag == "--lr"
                                                                      else int(value)})


def test_student_config_file_replaces_preset_fields(tmp_path, capsys, monkeypatch):
    teacher = SphereTeacher()
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "run.json").write_text(json.dumps({"app": "nerf"}))
    monkeypatch.setattr("ngfx.render.runs.load_run", lambda run, device: teacher)
    (tmp_path / "finer.json").write_text(json.dumps({"n_levels": 3, "log2_hashmap_size": 11}))
    assert main(["nelf", "distill", str(tmp_path / "teacher"), "--out", str(tmp_path / "run"), "--size", "tiny",
                 "--arch", "lightslab", "--steps", "2", "--pseudo-views", "4", "--student-config",
                 str(tmp_path / "finer.json")]) == 0
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["nelf_config"]
    assert (saved["arch"], saved["n_levels"], saved["log2_hashmap_size"]) == ("lightslab", 3, 11)
    assert saved["width"] == 16 and saved["slab_normals"]  # the rest: the tiny preset, normals placed as ever
    for bad, field in (({"n_levels": 0}, "n_levels"), ({"arch": "mobile_r2l"}, "arch"), ({"colour": 1}, "colour"),
                       ([3], "JSON object")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        assert main(["nelf", "distill", str(tmp_path / "teacher"), "--out", str(tmp_path / "x"), "--arch",
                     "lightslab", "--student-config", str(tmp_path / "bad.json")]) == 2
        err = capsys.readouterr().err
        assert "bad.json" in err and field in err and not (tmp_path / "x").exists()
