"""Sweeps (serial, local processes, Dask), the report and the CLI."""

import json

import pytest

from ngfx.cli import main
from ngfx.ngpc_sim.paper import paper_trace, paper_validation
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
    md = write_report(rows, tmp_path, traces=TRACES, validation=paper_validation())
    text = md.read_text()
    for png in ("breakdown.png", "speedup_vs_scale.png", "fps_vs_resolution.png", "timeline.png"):
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
    assert main(["sim", "run", "--paper", "nerf", "hash_grid", "--scale", "64", "--rest", "unfused"]) == 0
    bound = 1 / (1 - paper_trace("nerf", "hash_grid").share("encoding") - paper_trace("nerf", "hash_grid").share("mlp"))
    assert f"Amdahl bound {bound:.2f}x" in capsys.readouterr().out  # unfused rest: s_R = 1
    trace_dir = tmp_path / "traces"
    write_trace(TRACES[1], trace_dir / "gia.json")
    out_dir = tmp_path / "sweep"
    assert main(["sim", "sweep", "--traces", str(trace_dir), "--scales", "8,16", "--resolutions", "1920x1080",
                 "--out", str(out_dir), "--workers", "1"]) == 0
    assert len(json.loads((out_dir / "sweep.json").read_text())) == 3
    assert main(["sim", "report", "--results", str(out_dir / "sweep.json"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").is_file()
    path.write_text(path.read_text()[:200])  # truncated trace: one clear line, exit code 2
    assert main(["sim", "run", "--trace", str(path)]) == 2
    assert "malformed JSON" in capsys.readouterr().err
