"""Run folders are never lost or corrupted: refused re-training, locks, interrupts, output paths, bad flags."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from ngfx.cli import main
from ngfx.io import load_checkpoint

TRAIN = ["train", "gia", "--scene", "image", "--size", "tiny", "--device", "cpu"]


def _records(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "gia"
    assert main([*TRAIN, "--steps", "2", "--out", str(run)]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    import shutil

    return shutil.copytree(trained, tmp_path / "run")


def test_training_into_an_existing_run_is_refused_and_changes_nothing(run, capsys):
    before = _records(run)
    assert main([*TRAIN, "--steps", "1", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "--resume" in err and "--overwrite" in err
    assert _records(run) == before


def test_resume_with_another_encoding_is_an_error(run, capsys):
    before = _records(run)
    assert main([*TRAIN, "--steps", "3", "--encoding", "densegrid", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "run.json" in err and "'encoding'" in err and "hashgrid" in err
    assert _records(run) == before


def test_overwrite_replaces_the_run_consistently(run):
    assert main([*TRAIN, "--steps", "1", "--encoding", "densegrid", "--out", str(run), "--overwrite"]) == 0
    saved = json.loads((run / "run.json").read_text())
    _, meta = load_checkpoint(run / "checkpoint.safetensors")
    assert saved["encoding"] == meta["run"]["encoding"] == "densegrid" and meta["step"] == 1


def test_a_live_lock_refuses_a_second_process_and_a_dead_one_is_taken_over(run, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{holder.pid}\n")
        before = _records(run)
        assert main([*TRAIN, "--steps", "3", "--out", str(run), "--resume"]) == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
        assert _records(run) == before
    finally:
        holder.kill()
        holder.wait()
    (run / ".checkpoint.safetensors.x1y2.tmp").write_bytes(b"\0" * 1000)  # a kill -9 mid-write
    assert main([*TRAIN, "--steps", "3", "--out", str(run), "--resume"]) == 0
    assert not list(run.glob(".*.tmp")) and not (run / ".lock").exists()
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3


def test_outputs_follow_the_umask(run):
    old = os.umask(0o022)
    try:
        assert main([*TRAIN, "--steps", "3", "--out", str(run), "--resume"]) == 0
    finally:
        os.umask(old)
    for name in ("run.json", "checkpoint.safetensors", "metrics.json", "curve.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name


def test_resuming_a_time_budget_continues_what_is_left_of_it(tmp_path):
    run = tmp_path / "timed"
    assert main([*TRAIN, "--seconds", "1", "--out", str(run)]) == 0
    first = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "run.json").read_text())["budget"]["seconds"] == 1
    assert main([*TRAIN, "--out", str(run), "--resume"]) == 0  # the budget is spent: no more steps
    assert json.loads((run / "metrics.json").read_text())["steps"] == first["steps"]


def test_render_never_replaces_a_runs_records(run, capsys):
    before = _records(run)
    assert main(["render", str(run), "--resolution", "8x8", "--out", str(run), "--device", "cpu"]) == 2
    assert "is a run folder" in capsys.readouterr().err
    assert _records(run) == before


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_output_that_is_or_lies_under_a_file_is_refused_first(tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "run"
    assert main([*TRAIN, "--steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err and ("is a file" in err or "which is a file" in err)
    assert blocker.read_text() == "keep me"


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    from ngfx.render import runs

    def full(path, *args):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(runs, "save_checkpoint", full)
    assert main([*TRAIN, "--steps", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.safetensors: No space left on device" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value", [("--seconds", "-1"), ("--seconds", "nan"), ("--seconds", "0"),
                                         ("--steps", "0"), ("--steps", "-5"), ("--device", "tpu")])
def test_bad_training_flags_are_refused(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        main([*[a for a in TRAIN if a not in ("--device", "cpu")], "--out", str(tmp_path / "r"), flag, value])
    assert exit_.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_render_frames_zero_is_refused(trained, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["render", str(trained), "--frames", "0", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "argument --frames" in capsys.readouterr().err


def test_corrupt_run_records_are_clear_errors(run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    saved = json.loads((run / "run.json").read_text())
    saved["options"]["colour_space"] = "lab"
    (run / "run.json").write_text(json.dumps(saved))
    assert main(["render", str(run), "--resolution", "8x8", "--out", str(tmp_path / "a"), "--device", "cpu"]) == 2
    assert "run.json: field 'options.colour_space': unknown option" in capsys.readouterr().err
    saved["options"].pop("colour_space")
    saved["options"]["lr"] = "fast"
    (run / "run.json").write_text(json.dumps(saved))
    assert main(["render", str(run), "--resolution", "8x8", "--out", str(tmp_path / "c"), "--device", "cpu"]) == 2
    assert "run.json: field 'options.lr': expected float or int, got 'fast'" in capsys.readouterr().err
    saved["options"]["lr"] = 0.01
    ckpt = run / "checkpoint.safetensors"
    save_file(load_file(ckpt), ckpt, metadata={"ngfx": "[1, 2]"})
    (run / "run.json").write_text(json.dumps(saved))
    assert main(["render", str(run), "--resolution", "8x8", "--out", str(tmp_path / "b"), "--device", "cpu"]) == 2
    assert "checkpoint.safetensors: field 'metadata.ngfx': expected a JSON object, got list" in capsys.readouterr().err


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_step_it_stopped_at_and_resume_continues_there(tmp_path, signal_number):
    run, log = tmp_path / "run", tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "ngfx.cli", *TRAIN, "--steps", "100000", "--out", str(run)],
                                stderr=stderr, stdout=subprocess.DEVNULL)
    seen, deadline = 0, time.monotonic() + 240
    while seen < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        counts = re.findall(r"(\d+)/100000", log.read_text())
        seen = int(counts[-1]) if counts else 0
    proc.send_signal(signal_number)
    assert proc.wait(timeout=120) == 128 + signal_number
    err = log.read_text()
    stopped = int(re.search(r"interrupted at step (\d+): checkpoint and curve saved", err).group(1))
    assert stopped >= seen >= 2 and "Traceback" not in err
    _, meta = load_checkpoint(run / "checkpoint.safetensors")
    curve = json.loads((run / "curve.json").read_text())["loss"]
    assert meta["step"] == stopped and [s for s, _ in curve] == list(range(1, stopped + 1))
    assert main([*TRAIN, "--steps", str(stopped + 2), "--out", str(run), "--resume"]) == 0
    curve = json.loads((run / "curve.json").read_text())["loss"]
    assert [s for s, _ in curve] == list(range(1, stopped + 3))
    assert json.loads((run / "metrics.json").read_text())["steps"] == stopped + 2


def test_every_checkpoint_saves_the_curve_up_to_its_step(tmp_path, monkeypatch):
    from ngfx.render import runs

    run, seen, save = tmp_path / "run", [], runs._save

    def spy(path, app, optimizer, step, seconds, record):
        curve = run / "curve.json"
        seen.append((step, len(json.loads(curve.read_text())["loss"]) if curve.exists() else 0))
        save(path, app, optimizer, step, seconds, record)

    monkeypatch.setattr(runs, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(runs, "_save", spy)
    assert main([*TRAIN, "--steps", "3", "--out", str(run)]) == 0
    assert seen == [(1, 0), (2, 1), (3, 2), (3, 3)]  # each checkpoint finds the previous one's curve on disk


def test_an_empty_out_and_a_bad_checkpoint_step_are_refused(run, tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file, save_file

    monkeypatch.chdir(tmp_path)
    assert main([*TRAIN, "--steps", "1", "--out", ""]) == 2
    assert "--out: empty path" in capsys.readouterr().err and not (tmp_path / "run.json").exists()
    ckpt = run / "checkpoint.safetensors"
    save_file(load_file(ckpt), ckpt, metadata={"ngfx": json.dumps({"step": "two", "app": "gia"})})
    assert main([*TRAIN, "--steps", "3", "--out", str(run), "--resume"]) == 2
    assert "checkpoint.safetensors: metadata: field 'step': expected int or float" in capsys.readouterr().err


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(run, monkeypatch, capsys):
    from ngfx.render import runs

    def crash(*args, **kwargs):
        raise OSError(5, "Input/output error", "device")

    before = _records(run)
    monkeypatch.setattr(runs, "training_loop", crash)  # the new run dies before its first checkpoint
    assert main([*TRAIN, "--steps", "1", "--encoding", "densegrid", "--out", str(run), "--overwrite"]) == 2
    assert "device: Input/output error" in capsys.readouterr().err
    assert _records(run) == before


def test_running_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys):
    from ngfx.render import runs

    def huge(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(runs, "training_loop", huge)
    assert main([*TRAIN, "--steps", "1", "--out", str(tmp_path / "r")]) == 2
    assert "ngfx train: error: out of memory; try a smaller --size" in capsys.readouterr().err


def test_render_steps_set_an_nvr_render_and_are_refused_elsewhere(trained, tmp_path, capsys):
    nvr_run = tmp_path / "nvr"
    assert main(["train", "nvr", "--scene", "cloud", "--size", "tiny", "--device", "cpu", "--steps", "2",
                 "--out", str(nvr_run)]) == 0
    own = json.loads((nvr_run / "run.json").read_text())["options"]["render_steps"]
    assert own != 12
    for flags, expected in ((["--render-steps", "12"], 12), ([], own)):
        out = tmp_path / f"frames_{expected}"
        assert main(["render", str(nvr_run), "--resolution", "8x6", *flags, "--out", str(out), "--device", "cpu"]) == 0
        assert json.loads((out / "metrics.json").read_text())["render_steps"] == expected
    assert main(["render", str(trained), "--render-steps", "12", "--out", str(tmp_path / "g"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--render-steps" in err and "gia" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["render", str(nvr_run), "--render-steps", "0", "--out", str(tmp_path / "z"), "--device", "cpu"])
    assert exit_.value.code == 2 and "argument --render-steps" in capsys.readouterr().err
