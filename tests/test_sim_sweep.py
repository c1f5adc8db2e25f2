"""Sweeps (serial, local processes, Dask), the report and the CLI."""

import json

import pytest

from ngfx.cli import main
from ngfx.ngpc_sim.calibrate import calibration_table
from ngfx.ngpc_sim.paper import paper_trace
from ngfx.ngpc_sim.report import write_report
from ngfx.ngpc_sim.sweep import run_sweep
from ngfx.ngpc_sim.trace import write_trace

TRACES = [paper_trace("nerf", "hash_grid"), paper_trace("gia", "lowres_dense_grid")]
SCALES, RESOLUTIONS = (8, 64), ((1920, 1080), (3840, 2160))


def test_parallel_and_dask_match_serial(tmp_path):
    serial = run_sweep(TRACES, SCALES, RESOLUTIONS, workers=1, progress=False)
    assert len(serial) == len(TRACES) * len(RESOLUTIONS) * (len(SCALES) + 1)
    assert run_sweep(TRACES, SCALES, RESOLUTIONS, workers=2, progress=False) == serial
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        on_dask = run_sweep(TRACES, SCALES, RESOLUTIONS, out_dir=tmp_path, scheduler=client, progress=False)
    assert on_dask == serial
    assert json.loads((tmp_path / "sweep.json").read_text()) == serial
    assert (tmp_path / "sweep.csv").read_text().count("\n") == len(serial) + 1


def test_report_has_real_plots(tmp_path):
    rows = run_sweep(TRACES, SCALES, RESOLUTIONS, workers=1, progress=False)
    md = write_report(rows, tmp_path, traces=TRACES, calibration=calibration_table())
    text = md.read_text()
    # the first table is the fitted-vs-predicted one
    assert text.index("## Fitted vs predicted") < text.index("|") < text.index("## Speedup vs scaling factor")
    for png in ("breakdown.png", "speedup_vs_scale.png", "fps_vs_resolution.png", "timeline.png", "pareto.png"):
        assert f"({png})" in text
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert "| nerf | hash_grid |" in text and "9.94" in text
    assert "<table>" in (tmp_path / "report.html").read_text()


def test_breakdown_splits_each_traced_frame(tmp_path):
    from ngfx.ngpc_sim.report import plot_breakdown

    rows = plot_breakdown(TRACES, tmp_path / "b.png")
    assert [r["label"].split()[0] for r in rows] == ["nerf", "gia"]
    for row, trace in zip(rows, TRACES):
        assert sum(row[f"{c}_ms"] for c in ("encoding", "mlp", "rest")) == pytest.approx(trace.frame_time_s() * 1e3)
        assert row["rest_share"] == pytest.approx(trace.share("rest")) and 0 < row["rest_share"] < 1


def test_cli_run_sweep_report(tmp_path, capsys):
    path = tmp_path / "t.json"
    write_trace(TRACES[0], path)
    assert main(["sim", "run", "--trace", str(path), "--scale", "16", "--resolution", "3840x2160"]) == 0
    out = capsys.readouterr().out
    assert "FPS" in out and "Amdahl bound" in out and "3840x2160" in out
    assert main(["sim", "run", "--paper", "nerf", "hashgrid", "--scale", "64", "--rest", "unfused"]) == 0
    bound = 1 / (1 - paper_trace("nerf", "hash_grid").share("encoding") - paper_trace("nerf", "hash_grid").share("mlp"))
    assert f"Amdahl bound {bound:.2f}x" in capsys.readouterr().out  # unfused rest: s_R = 1
    trace_dir = tmp_path / "traces"
    write_trace(TRACES[1], trace_dir / "gia.json")
    out_dir = tmp_path / "sweep"
    assert main(["sim", "sweep", "--trace", str(trace_dir), "--scale", "8,16", "--resolution", "1920x1080",
                 "--out", str(out_dir), "--workers", "1"]) == 0
    assert len(json.loads((out_dir / "sweep.json").read_text())) == 3
    assert main(["sim", "report", "--results", str(out_dir / "sweep.json"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").is_file()
    path.write_text(path.read_text()[:200])  # truncated trace: one clear line, exit code 2
    assert main(["sim", "run", "--trace", str(path)]) == 2
    assert "malformed JSON" in capsys.readouterr().err


def test_cli_refuses_bad_numbers_naming_the_flag(tmp_path, capsys):
    for argv, flag in ((["--scale", "0"], "--scale"), (["--scale", "-8"], "--scale"),
                       (["--rest-speedup", "nan"], "--rest-speedup"), (["--rest-speedup", "0"], "--rest-speedup")):
        assert main(["sim", "run", "--paper", "nerf", "hashgrid", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and flag in err and "ngpc.toml" not in err, err
    assert main(["sim", "run", "--paper", "nerf", "octree"]) == 2
    assert "hashgrid" in capsys.readouterr().err


def test_cli_checks_the_output_before_the_sweep(tmp_path, capsys, monkeypatch):
    import ngfx.ngpc_sim.api as api

    monkeypatch.setattr(api, "run_sweep", lambda *a, **k: pytest.fail("the sweep ran before --out was checked"))
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    assert main(["sim", "sweep", "--out", str(existing)]) == 2
    assert "--out" in capsys.readouterr().err and existing.read_text() == "keep me"
    assert main(["sim", "sweep", "--out", str(existing / "sub")]) == 2


def test_failed_report_leaves_the_previous_sweep(tmp_path, monkeypatch):
    import ngfx.ngpc_sim.api as api

    out = tmp_path / "sweep"
    api.sim_sweep(out, write_trace_dir(tmp_path), scales=(8,), resolutions=((640, 480),), workers=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(api, "write_report", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        api.sim_sweep(out, write_trace_dir(tmp_path), scales=(16,), resolutions=((640, 480),), workers=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def write_trace_dir(tmp_path):
    trace_dir = tmp_path / "traces"
    write_trace(TRACES[1], trace_dir / "gia.json")
    return trace_dir


def test_rest_speedup_measured_per_app():
    import dataclasses

    from ngfx.ngpc_sim.config import load_config
    from ngfx.ngpc_sim.model import simulate
    from ngfx.ngpc_sim.sweep import measured_rest_speedups

    unfused = paper_trace("nsdf", "hash_grid")
    fused = dataclasses.replace(unfused, rest="fused", kernels=[
        dataclasses.replace(k, duration_s=k.duration_s / 2.5) if k.category == "rest" else k for k in unfused.kernels])
    other = paper_trace("nerf", "hash_grid")  # no fused trace: keeps the config's speedup
    assert measured_rest_speedups([unfused, fused, other]) == {"nsdf": pytest.approx(2.5)}
    # a per-ray frame's one rest kernel holds the field too: it says nothing about the rest kernels' speedup
    per_ray = dataclasses.replace(other, rest="per_ray", kernels=[
        dataclasses.replace(k, category="rest", encoding="", duration_s=k.duration_s / 4) for k in other.kernels])
    assert measured_rest_speedups([unfused, fused, other, per_ray]) == {"nsdf": pytest.approx(2.5)}
    assert simulate(per_ray, load_config(n_nfps=64)).frame_s == pytest.approx(per_ray.frame_time_s())  # as timed
    rows = run_sweep([unfused, other], (8,), ((1920, 1080),), workers=1, progress=False, rest_speedups={"nsdf": 2.5})
    assert {r["app"]: r["rest_speedup"] for r in rows} == {"nsdf": 2.5, "nerf": 9.94}


def test_cli_cpu_trace_is_called_a_cpu_frame_and_can_be_projected(tmp_path, capsys):
    import dataclasses

    path = tmp_path / "cpu.json"
    write_trace(dataclasses.replace(TRACES[0], timer="cpu", device="CPU (2 threads)"), path)
    assert main(["sim", "run", "--trace", str(path)]) == 0
    out = capsys.readouterr().out
    assert "CPU baseline" in out and "GPU baseline" not in out
    assert main(["sim", "run", "--trace", str(path), "--project"]) == 0
    out = capsys.readouterr().out
    assert "projected from CPU (2 threads)" in out and "roofline trace" in out


def test_trace_out_checked_before_the_run_loads(tmp_path, capsys):
    # the run folder does not even exist: the bad --out must be reported first, before any rendering
    assert main(["trace", str(tmp_path / "no_run"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "folder" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["trace", str(tmp_path / "no_run"), "--out", str(blocker / "t.json")]) == 2
    assert "lies under" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, expected", [
    ("speedup", float("nan"), "expected a finite number"),
    ("fps", "fast", "expected a number, got 'fast'"),
    ("scale", -8, "must be in [0, "),
    ("encoding", "octree", "expected one of"),
])
def test_report_refuses_bad_sweep_rows(tmp_path, capsys, field, value, expected):
    rows = run_sweep(TRACES[:1], (8,), ((64, 64),), workers=1, progress=False)
    rows[1][field] = value
    results = tmp_path / "sweep.json"
    results.write_text(json.dumps(rows))
    assert main(["sim", "report", "--results", str(results), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"field '[1].{field}'" in err and expected in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_rest_speedup_that_cannot_apply_is_refused(tmp_path, capsys):
    import dataclasses

    assert main(["sim", "run", "--paper", "nerf", "hashgrid", "--rest", "unfused", "--rest-speedup", "5"]) == 2
    err = capsys.readouterr().err
    assert "--rest-speedup" in err and "--rest unfused" in err
    path = tmp_path / "fused.json"
    write_trace(dataclasses.replace(TRACES[0], rest="fused"), path)
    assert main(["sim", "run", "--trace", str(path), "--rest-speedup", "5"]) == 2
    err = capsys.readouterr().err
    assert "--rest-speedup" in err and "otherData.rest 'fused'" in err


@pytest.mark.parametrize("address", ["not a url", "tcp://127.0.0.1:1"])
def test_unreachable_scheduler_names_the_flag(tmp_path, capsys, monkeypatch, address):
    import ngfx.ngpc_sim.sweep as sweep

    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT_S", 1)
    assert main(["sim", "sweep", "--scale", "8", "--resolution", "64x64", "--scheduler", address,
                 "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ngfx sim: error: --scheduler: cannot reach a Dask scheduler at {address!r}")
    assert not (tmp_path / "s").exists()


def test_sweep_progress_is_plain_lines_in_a_log(capsys):
    run_sweep(TRACES, (8,), ((64, 64),), workers=1, progress=True)
    err = capsys.readouterr().err  # not a terminal: whole lines, no carriage-return redraws
    assert "ngpc sweep" in err and "2/2" in err and "\r" not in err
