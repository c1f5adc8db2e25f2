"""A newcomer's first hour: the base install (no triton) runs every CPU path; ``python -m ngfx``; ``--version``."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import ngfx
from ngfx.cli import main
from ngfx.errors import NgfxWarning

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=300)


def test_cpu_path_imports_and_renders_without_triton():
    # sys.modules["triton"] = None makes `import triton` raise ImportError, as in the base install
    result = _python("""
        import pkgutil, sys
        sys.modules["triton"] = None
        import ngfx
        # GPU-only kernel modules are named triton_*.py
        names = [m.name for m in pkgutil.walk_packages(ngfx.__path__, "ngfx.")
                 if not m.name.rsplit(".", 1)[-1].startswith("triton_")]
        for name in names:
            __import__(name)
        from ngfx.render.apps import gia
        from ngfx.render.apps import nsdf
        for module, scene in ((gia, "image"), (nsdf, "csg")):
            app = module.build_app(scene, "hashgrid", "tiny", "cpu")
            frame = app.render(16, 12, 0, fused=True)  # asks for the kernels: must fall back to the twins
            assert frame.shape == (12, 16, 3)
        print("imported", len(names))
    """, TRITON_INTERPRET="1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 40
    # the fallback is said once, not once per band or per app
    assert result.stderr.count("triton is not installed") == 1, result.stderr[-2000:]


def test_python_dash_m_ngfx_and_version():
    result = subprocess.run([sys.executable, "-m", "ngfx", "--version"], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ngfx {ngfx.__version__}"
    result = subprocess.run([sys.executable, "-m", "ngfx", "demo", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "--smoke" in result.stdout


@pytest.mark.parametrize("command", ["demo", "train", "render"])
def test_help_shows_every_default(command):
    from ngfx.cli import build_parser

    parser = build_parser()._subparsers._group_actions[0].choices[command]
    for action in parser._actions:
        takes_value = action.option_strings and action.nargs != 0 and not action.required
        if takes_value and action.dest != "help":
            assert "default" in (action.help or ""), f"{command} {action.option_strings[0]}: no default in its help"


def test_demo_checks_its_environment_before_any_stage_runs(tmp_path, monkeypatch, capsys):
    import ngfx.demo
    from ngfx.demo.stages import Stage

    ran = []
    stages = [Stage("train-gia", lambda: ran.append("train") or {}),
              Stage("ngpc-sweep", lambda: ran.append("sweep") or {}, requires=("ngfx_no_such_package",))]
    monkeypatch.setattr(ngfx.demo, "build_stages", lambda *args: stages)
    assert main(["demo", "--smoke", "--out", str(tmp_path / "demo")]) == 1
    assert ran == []  # nothing trained before the problem was found
    err = capsys.readouterr().err
    assert "ngpc-sweep: cannot import ngfx_no_such_package" in err


def test_demo_exits_non_zero_when_a_stage_fails_and_keeps_no_stale_logs(tmp_path, monkeypatch):
    import ngfx.demo
    from ngfx.demo.stages import Stage

    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return {}

    monkeypatch.setattr(ngfx.demo, "build_stages", lambda *args: [Stage("train-gia", flaky)])
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--out", str(out)]) == 1
    assert (out / "logs" / "train-gia.log").is_file() and "first attempt fails" in (out / "report.md").read_text()
    assert main(["demo", "--smoke", "--out", str(out)]) == 0  # the re-run resumes and succeeds
    assert not (out / "logs" / "train-gia.log").exists()
    assert "first attempt fails" not in (out / "report.md").read_text()


def test_demo_warns_when_data_is_ignored(tmp_path, monkeypatch, capsys):
    import ngfx.demo
    from ngfx.demo.stages import Stage

    monkeypatch.setattr(ngfx.demo, "build_stages", lambda *args: [Stage("a", lambda: {})])
    assert main(["demo", "--smoke", "--out", str(tmp_path / "d"), "--data", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "--data" in err and "ignored" in err


def _tall_box_obj(path, half=(0.1, 0.5, 0.2)):
    """A closed box, tall along OBJ's y (up) axis."""
    hx, hy, hz = half
    corners = [(x, y, z) for x in (-hx, hx) for y in (-hy, hy) for z in (-hz, hz)]
    quads = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    lines = [f"v {x} {y} {z}" for x, y, z in corners] + [f"f {a} {b} {c} {d}" for a, b, c, d in quads]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_meshes_stand_up_fill_the_frame_and_the_train_line_shows_their_quality(tmp_path):
    from ngfx.render.apps import nsdf
    from ngfx.render.metrics import quality_summary

    app = nsdf.build_app(str(_tall_box_obj(tmp_path / "tall.obj")), "hashgrid", "tiny", "cpu", n_train=4096)
    extent = app.box[1] - app.box[0]
    assert int(extent.argmax()) == 2  # OBJ's y (up) became ngfx's z (up)
    assert float(extent[2]) > 1.7 and float(extent[0]) < 0.5
    # every corner of the shape projects inside the frame, and the shape is not a speck in it
    corners = torch.cartesian_prod(*app.box.t())
    for view in range(nsdf.N_VIEWS):
        c2w, k = app.camera(64, 36, view)
        local = (corners - c2w[:3, 3]) @ c2w[:3, :3]  # camera space: looks down -z
        x = k.cx + k.fx * local[:, 0] / -local[:, 2]
        y = k.cy - k.fy * local[:, 1] / -local[:, 2]
        assert float(x.min()) >= 0 and float(x.max()) <= 64 and float(y.min()) >= 0 and float(y.max()) <= 36
        assert float(y.max() - y.min()) > 0.6 * 36
    summary = quality_summary(app.evaluate())
    assert "sign agreement" in summary and "%" in summary


def test_progress_bars_are_lines_in_a_log(monkeypatch):
    import io

    from ngfx import progress

    log = io.StringIO()  # not a terminal, as a redirected stderr
    monkeypatch.setattr(progress.sys, "stderr", log)
    for _ in progress.progress_bar(range(50), desc="work", mininterval=0, miniters=10):
        pass
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert 2 <= len(lines) <= 8 and lines[-1].startswith("work: 100%")  # a line per 10 steps, not per step


def test_a_training_bar_in_a_log_writes_lines_by_time_not_by_loss_reading(monkeypatch):
    import io

    from ngfx import progress
    from ngfx.render.neural_field import LOSS_SHOWN_EVERY, training_loop

    class Quadratic:
        name = "quadratic"

        def __init__(self):
            self.w = torch.nn.Parameter(torch.ones(4))

        def train(self):
            pass

        def training_step(self, step):
            return (self.w ** 2).sum()

    log = io.StringIO()  # a redirected stderr; the loop runs far faster than progress.LOG_EVERY_S
    monkeypatch.setattr(progress.sys, "stderr", log)
    app = Quadratic()
    steps = 40 * LOSS_SHOWN_EVERY
    training_loop(app, torch.optim.SGD([app.w], lr=1e-3), steps, None, progress=True)
    lines = log.getvalue().splitlines()
    # the first draw and the closing one: not one line per loss reading (40 of them)
    assert 1 <= len(lines) <= 3 and f"{steps}/{steps}" in lines[-1] and "loss=" in lines[-1]


def test_a_large_frame_shows_its_bands_only_when_asked(monkeypatch):
    import io

    from ngfx import progress

    log = io.StringIO()  # not a terminal, as a redirected stderr
    monkeypatch.setattr(progress.sys, "stderr", log)
    width, height = 4096, 2048  # 8.4 M rays: a marched CPU frame of hours
    bare = list(progress.frame_bands(width, height, 2 ** 22, "cpu", "render nsdf"))
    assert log.getvalue() == ""  # a benchmark or evaluation (no frame_progress) stays silent
    assert max(n for _, n in bare) * width <= progress.CPU_BAND_RAYS  # small CPU bands: the bar can move
    assert sum(n for _, n in bare) == height and [r for r, _ in bare] == sorted({r for r, _ in bare})
    with progress.frame_progress(), pytest.warns(NgfxWarning, match="4096x2048 frame is 8.4 M rays"):
        assert list(progress.frame_bands(width, height, 2 ** 22, "cpu", "render nsdf")) == bare
    lines = log.getvalue().splitlines()
    assert lines and lines[-1].startswith(f"render nsdf ({width}x{height}): 100%|") and "\x1b" not in log.getvalue()
    with progress.frame_progress(), warnings.catch_warnings():
        warnings.simplefilter("error")  # an image's pixels are one query each: no warning for GIA
        list(progress.frame_bands(width, height, 2 ** 22, "cpu", "render gia", marched=False))
        list(progress.frame_bands(64, 64, 2 ** 22, "cpu", "render nsdf"))  # a small frame: no bar either
    assert "render gia" in log.getvalue() and "(64x64)" not in log.getvalue()
