"""The GPU benchmark scripts run end to end at their --smoke sizes on CPU, so a change cannot break them unseen.

Each runs in its own process without the Triton interpreter (which would make a NeRF smoke run take minutes):
off the GPU the "fused" paths then fall back to the PyTorch kernels, and traces say so.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from ngfx.render.apps import nerf

ROOT = Path(__file__).resolve().parents[1]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], env=env, capture_output=True,
                          text=True, timeout=600)


def run_script(name: str, *args: str) -> None:
    done = script(name, *args)
    assert done.returncode == 0, done.stderr[-3000:]


def test_bench_render_smoke(tmp_path):
    run_script("bench_render.py", "--out", str(tmp_path), "--smoke", "--profile", "--render-subs", "2",
               "--knobs", '[{}, {"apps.nerf.MIN_TRANSMITTANCE": 0.5}]')
    results = json.loads((tmp_path / "results.json").read_text())
    (result,) = results["encodings"]
    assert result["encoding"] == "hashgrid" and result["steps"] == 20 and results["dense_background"] is None
    assert [(t["width"], t["height"]) for t in result["timings"]] == [(64, 36), (96, 54)]
    assert all(t["per_ray_ms"] > 0 and t["stage_ms"] > 0 and t["unfused_ms"] > 0 for t in result["timings"])
    assert all(t["stage_samples"] > 0 for t in result["timings"])  # the CPU renders stage by stage only
    assert "mlp_tflops" in result["profile"]["bound"] and result["profile"]["kernels"]
    assert (tmp_path / "nerf_hashgrid_96x54.png").is_file()
    assert "| hashgrid |" in (tmp_path / "results.md").read_text()
    assert [g["sub"] for g in result["render_grids"]] == [2] and result["profile"]["stage_host"]
    default, early = result["knobs"]  # stopping rays at half transparency evaluates fewer samples
    assert early["setting"] == {"apps.nerf.MIN_TRANSMITTANCE": 0.5} and nerf.MIN_TRANSMITTANCE < 0.5
    assert all(e["stage_samples"] < d["stage_samples"] for d, e in zip(default["timings"], early["timings"]))
    assert all(g["quality"]["psnr_db"] > 0 and len(g["timings"]) == 2 for g in result["render_grids"])


def test_bench_render_dense_scenes_smoke(tmp_path):
    run_script("bench_render.py", "--out", str(tmp_path), "--smoke", "--encodings", "", "--dense-seconds", "1",
               "--dense-scene", "both")
    results = json.loads((tmp_path / "results.json").read_text())
    dense = results["dense_background"]
    assert results["encodings"] == [] and list(dense) == ["walls", "room"]
    assert dense["walls"]["aabb"] == [[-1.5] * 3, [1.5] * 3]  # the backdrop on the scene box itself
    # the room: written as an instant-ngp capture and read back through its loader, aabb_scale 4 about the box
    assert dense["room"]["aabb"] == [[-6.0] * 3, [6.0] * 3] and dense["room"]["dataset"] == str(tmp_path / "room_scene")
    assert (tmp_path / "room_scene" / "transforms.json").is_file()
    for name, d in dense.items():
        assert d["scene"] == name and d["steps"] == 20 and d["quality"]["psnr_db"] > 0
        assert 0 < d["learned_occupied"] <= d["dense_occupied"] <= 1
        assert [(t["width"], t["height"]) for t in d["learned"] + d["dense"]] == [(96, 54)] * 2
        assert all(t["stage_ms"] > 0 and t["stage_samples"] > 0 for t in d["learned"] + d["dense"])
        assert (tmp_path / f"nerf_dense_{name}_96x54.png").is_file()
        assert f"| nerf dense {name} (" in (tmp_path / "results.md").read_text()


def test_bench_render_apps_smoke_with_traces(tmp_path):
    from ngfx.ngpc_sim.trace import read_trace

    traces = tmp_path / "traces"
    run_script("bench_render_apps.py", "--out", str(tmp_path), "--smoke", "--apps", "gia,nvr", "--traces", str(traces),
               "--nvr-render-steps", "48,12")
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["app"] for r in results] == ["gia", "nvr"]
    assert all(r["fused_ms"] > 0 and "psnr_db" in r["quality"] for r in results)
    assert all(r["small"]["fused_ms"] > 0 and r["small"]["unfused_ms"] > 0 for r in results)  # the 1080p stand-in
    assert [len(r["per_ray"].get("timings", [])) for r in results] == [0, 2]  # NVR: per ray vs stage, 2 sizes
    fine, coarse = results[1]["render_steps"]  # at each render step: 2 frame sizes timed, samples, PSNR vs truth
    assert (fine["render_steps"], coarse["render_steps"]) == (48, 12) and coarse["dt"] == 4 * fine["dt"]
    assert all(len(r["frames"]) == 2 and all(f["ms"] > 0 for f in r["frames"]) for r in (fine, coarse))
    assert 0 < coarse["samples"] < fine["samples"] and all(r["psnr_db"] > 0 for r in (fine, coarse))
    assert "| 12 | " in (tmp_path / "results.md").read_text()
    for app in ("gia", "nvr"):
        assert read_trace(traces / f"{app}_hashgrid.json").rest == "unfused"
        # asked for the fused kernels, but with no GPU and no interpreter the PyTorch ones ran: the trace says so
        assert read_trace(tmp_path / "traces_fused" / f"{app}_hashgrid.json").rest == "unfused"


def test_bench_nelf_smoke_and_a_bad_launch_exits_2(tmp_path):
    run_script("bench_nelf.py", "--out", str(tmp_path), "--smoke")
    (result,) = json.loads((tmp_path / "bench_nelf.json").read_text())["results"]
    assert result["config"] == "tiny" and result["ms_per_frame"] > 0
    bad = script("bench_nelf.py", "--out", str(tmp_path / "bad"), "--launch", '{"extra_rows": "16"}')
    assert bad.returncode == 2 and "launch extra_rows '16'" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_nsdf_smoke(tmp_path):
    run_script("bench_nsdf.py", "--out", str(tmp_path), "--smoke")
    frames = json.loads((tmp_path / "results.json").read_text())["frames"]
    assert [(f["width"], f["height"]) for f in frames] == [(64, 36), (96, 54)]
    assert all(f["fused tracer ms"] > 0 and f["agreement"]["psnr_db"] > 20 for f in frames)
    assert (tmp_path / "nsdf_fused_96x54.jpg").is_file()
