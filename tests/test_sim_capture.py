"""Trace capture: stages and profiled ops of a fake app, the real GIA and NeRF renderers (NeRF's fused kernels as
they run), and GPU kernels placed by launch."""

import dataclasses
import json

import pytest
import torch

from ngfx.ngpc_sim.capture import trace_frame
from ngfx.ngpc_sim.config import load_config
from ngfx.ngpc_sim.costs import MATMUL_OPS
from ngfx.ngpc_sim.model import simulate
from ngfx.ngpc_sim.trace import read_kernel_table, read_trace, write_trace


class FakeApp(torch.nn.Module):
    """Emits the stages a renderer would (ray generation, encoding, MLP, compositing) around a real
    low-res dense grid and MLP, so capture can read their shapes."""

    def __init__(self):
        super().__init__()
        from ngfx.encodings import Encoding, Network

        self.grid = Encoding(3, {"otype": "DenseGrid", "n_levels": 2, "n_features_per_level": 4,
                                 "base_resolution": 16, "per_level_scale": 2.0}, backend="torch")
        self.net = Network(8, 3, {"n_neurons": 64, "n_hidden_layers": 1}, backend="torch")

    def render(self, width, height, view=0, fused=True):
        from ngfx.render.stages import stage

        n = width * height
        attrs = dict(app="fake", otype="Dense", n_levels=2, n_features_per_level=4, log2_hashmap_size=19, n_dims=3)
        with stage("fake.rays", "rest", n_inputs=n, bytes_written=n * 24.0, app="fake"):
            x = torch.rand(n, 3)
        with stage("fake.encoding", "encoding", n_inputs=n, bytes_read=n * 12.0, **attrs):
            f = self.grid(x)
        with stage("fake.mlp", "mlp", n_inputs=n, flops=2.0 * n * (8 * 64 + 64 * 3), **attrs):
            y = self.net(f)
        with stage("fake.composite", "rest", n_inputs=n, app="fake"):
            return y.sum(1)


def _same(read_back, kernels):
    """Equal kernels, durations to float precision (the file holds microseconds)."""
    exact = [dataclasses.replace(k, duration_s=0.0) for k in read_back] == [dataclasses.replace(k, duration_s=0.0) for k in kernels]
    return exact and [k.duration_s for k in read_back] == pytest.approx([k.duration_s for k in kernels], rel=1e-12)


def test_capture_from_fake_app(tmp_path):
    trace = trace_frame(FakeApp(), 32, 24, "cpu", n_frames=2)
    assert trace.timer == "cpu" and trace.n_frames == 2 and len(trace.kernels) == 8
    assert [k.category for k in trace.kernels[:4]] == ["rest", "encoding", "mlp", "rest"]
    enc, mlp = trace.kernels[1], trace.kernels[2]
    assert enc.encoding == "lowres_dense_grid" and all(k.duration_s > 0 for k in trace.kernels)
    assert enc.log2_hashmap_size == 15  # finest level 32^3 = 2^15 entries, not the config's unused 19
    assert mlp.mlp_layers == [[64, 8], [3, 64]]
    write_trace(trace, tmp_path / "t.json")
    assert _same(read_trace(tmp_path / "t.json").kernels, trace.kernels)
    assert trace.rest == "unfused" and read_trace(tmp_path / "t.json").rest == "unfused"
    fused = trace_frame(FakeApp(), 32, 24, "cpu", fused=True)
    write_trace(fused, tmp_path / "f.json")
    assert read_trace(tmp_path / "f.json").rest == "fused"


@pytest.mark.parametrize("encoding, kind", [("lowres", "lowres_dense_grid"), ("densegrid", "multires_dense_grid")])
def test_capture_real_renderer_and_replay(tmp_path, encoding, kind):
    from ngfx.render.apps import gia

    app = gia.build_app("image", encoding, "tiny", device="cpu")
    trace = trace_frame(app, 48, 32, "cpu")
    assert {k.category for k in trace.kernels} == {"rest", "encoding", "mlp"}
    assert {k.encoding for k in trace.kernels if k.category != "rest"} == {kind}
    write_trace(trace, tmp_path / "gia.json")
    back = read_trace(tmp_path / "gia.json")
    r = simulate(back, load_config().replace(n_nfps=16))
    assert 1.0 < r.speedup <= r.amdahl_bound


@pytest.fixture(scope="module")
def nerf_traces(tmp_path_factory):
    """An untrained tiny NeRF and its fused and unfused traces of one 6x4 frame (the fused Triton kernels run
    under the interpreter)."""
    import os

    from ngfx.render.apps import nerf

    os.environ.setdefault("NGFX_CACHE", str(tmp_path_factory.mktemp("cache")))
    app = nerf.build_app("synthetic", "hashgrid", "tiny", device="cpu")
    return app, {fused: trace_frame(app, 6, 4, "cpu", warmup=0, fused=fused) for fused in (True, False)}


def test_fused_nerf_trace_records_the_kernels_that_ran(nerf_traces, tmp_path):
    from ngfx.render.apps.nerf_field import HEAD_FUSED

    app, traces = nerf_traces
    fused, unfused = traces[True], traces[False]
    assert (fused.rest, unfused.rest) == ("fused", "unfused")
    # fused: march and pack in one kernel, the grid kernel, then density MLP, SH and colour MLP in one head kernel
    assert {k.name for k in fused.kernels} == {"nerf.ray_gen", "nerf.march", "nerf.density_encoding",
                                               "nerf.field_head", "nerf.composite"}
    assert {k.name: k.fused for k in fused.kernels if k.category == "rest"} == {
        "nerf.ray_gen": "ray_gen", "nerf.march": "march+compact", "nerf.composite": "composite"}
    # unfused (the paper's baseline) as before: every step its own stage, nothing fused
    assert {k.name for k in unfused.kernels} == {"nerf.ray_gen", "nerf.march", "nerf.compact", "nerf.density_encoding",
                                                 "nerf.density_mlp", "nerf.dir_encoding", "nerf.color_mlp",
                                                 "nerf.composite"}
    assert not any(k.fused for k in unfused.kernels)
    # one frame: both paths query the field at the same samples
    samples = [sum(k.n_inputs for k in t.kernels if k.category == "encoding") for t in (fused, unfused)]
    assert samples[0] == samples[1] > 0
    field = app.field
    layers = [list(s) for s in field.density_net.network.cfg.layer_shapes + field.colour_net.cfg.layer_shapes]
    n_features = field.density_net.encoding.n_output_dims
    heads = [k for k in fused.kernels if k.name == "nerf.field_head"]
    assert sum(k.n_inputs for k in heads) == samples[0]
    for k in heads:  # both networks' layers and FLOPs; the bytes of the one kernel: features + dirs in, sigma + rgb out
        assert (k.category, k.fused, k.mlp_layers) == ("mlp", HEAD_FUSED, layers)
        assert k.flops == 2.0 * k.n_inputs * sum(o * i for o, i in layers)
        assert (k.bytes_read, k.bytes_written) == (k.n_inputs * (n_features * 4.0 + 12), k.n_inputs * 16.0)
    write_trace(fused, tmp_path / "f.json")
    back = read_trace(tmp_path / "f.json")
    assert back.rest == "fused" and _same(back.kernels, fused.kernels)


def test_encoding_in_the_head_traces_as_one_rest_kernel(nerf_traces, monkeypatch):
    from ngfx.render.ops import triton_nerf_head

    app, traces = nerf_traces
    monkeypatch.setattr(triton_nerf_head, "ENCODE_IN_HEAD", True)
    trace = trace_frame(app, 6, 4, "cpu", warmup=0, fused=True)
    # the grid encoding and both MLPs in one kernel: nothing the NGPC could take over, replayed as timed
    assert trace.rest == "per_ray" and not [k for k in trace.kernels if k.category != "rest"]
    heads = [k for k in trace.kernels if k.name == "nerf.field_head"]
    assert heads and all(k.fused.startswith("grid_encoding+") for k in heads)
    assert sum(k.n_inputs for k in heads) == sum(k.n_inputs for k in traces[True].kernels if k.category == "encoding")


def test_fused_kernels_are_not_sped_up_again(nerf_traces, tmp_path):
    """A kernel that says it ran fused replays as timed even where the trace's label is missing: a per-kernel table
    reads as unfused, and its fused rest kernels must not be divided by the fused-rest speedup a second time."""
    _, traces = nerf_traces
    fused, unfused = traces[True], traces[False]
    cfg = load_config().replace(n_nfps=8)
    assert cfg.rest_mode == "fused" and cfg.fused_rest_speedup > 1  # the paper's 9.94x for unfused rest kernels
    (tmp_path / "k.json").write_text(json.dumps([dataclasses.asdict(k) for k in fused.kernels]))
    table = read_kernel_table(tmp_path / "k.json", fused.width, fused.height)
    assert table.rest == "unfused" and [k.fused for k in table.kernels] == [k.fused for k in fused.kernels]
    rest_s = sum(k.duration_s for k in fused.kernels if k.category == "rest")
    for trace in (fused, table):
        r = simulate(trace, cfg)
        assert r.utilisation["gpu_sms"] * r.frame_s == pytest.approx(rest_s)  # the SMs run the rest as traced
        assert r.amdahl_bound == pytest.approx(fused.frame_time_s() / rest_s)
    # the unfused trace's rest kernels are still sped up
    r = simulate(unfused, cfg)
    unfused_rest_s = sum(k.duration_s for k in unfused.kernels if k.category == "rest")
    assert r.utilisation["gpu_sms"] * r.frame_s == pytest.approx(unfused_rest_s / cfg.fused_rest_speedup)


def test_profiler_capture_groups_ops_by_stage(tmp_path):
    staged = trace_frame(FakeApp(), 32, 24, "cpu")
    trace = trace_frame(FakeApp(), 32, 24, "cpu", profiler=True)
    assert trace.timer == "cpu_op" and len(trace.kernels) > 2 * len(staged.kernels)
    stage_of = {k.name: k for k in staged.kernels}
    for k in trace.kernels:
        stage = stage_of[k.name.split("/")[0]]
        assert k.category == stage.category and k.encoding == stage.encoding
    for category in ("encoding", "mlp"):  # each stage's inputs counted once, on its first kernel
        assert sum(k.n_inputs for k in trace.kernels if k.category == category) == \
            sum(k.n_inputs for k in staged.kernels if k.category == category)
    mm = [k for k in trace.kernels if k.category == "mlp" and k.name.split("/")[1] in MATMUL_OPS]
    assert mm and max(k.flops for k in mm) == 2.0 * 32 * 24 * 8 * 64  # first layer: 768 inputs x 8 -> 64
    write_trace(trace, tmp_path / "p.json")
    assert _same(read_trace(tmp_path / "p.json").kernels, trace.kernels)


def _span(cat, name, ts, dur, **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def test_gpu_kernels_placed_by_their_launch():
    from ngfx.ngpc_sim.capture import kernels_from_profile
    from ngfx.ngpc_sim.trace import Kernel

    enc = Kernel("a.encoding", "encoding", 1000, 1e6, 4e6, 2e6, 0.0, app="a", encoding="hash_grid", n_levels=16,
                 n_features_per_level=2, log2_hashmap_size=18, n_dims=3)
    rest = Kernel("a.composite", "rest", 10, 0.0, 100.0, 50.0, 0.0, app="a")
    events = [
        _span("user_annotation", "ngfx.stage:a.encoding", 0, 100),
        _span("cpu_op", "aten::mm", 10, 20, **{"Input Dims": [[1000, 32], [32, 64]]}),
        _span("cuda_runtime", "cudaLaunchKernel", 15, 2, correlation=1),
        # a Triton launch inside an autograd Function, whose input shapes say nothing of the kernel's cost
        _span("cpu_op", "_MLP", 45, 10, **{"Input Dims": [[1000, 32]]}),
        _span("cuda_driver", "cuLaunchKernel", 50, 2, correlation=2),
        _span("cuda_driver", "cuLaunchKernelEx", 60, 2, correlation=3),
        _span("user_annotation", "ngfx.stage:a.composite", 200, 50),
        _span("cuda_runtime", "cudaLaunchKernel", 210, 2, correlation=4),
        _span("cuda_runtime", "cudaLaunchKernel", 400, 2, correlation=5),  # outside every stage
        _span("kernel", "gemm", 500, 30, correlation=1),  # runs on the GPU long after its launch
        _span("kernel", "triton_a", 530, 10, correlation=2),
        _span("kernel", "triton_b", 540, 30, correlation=3),
        _span("kernel", "composite", 570, 5, correlation=4),
        _span("gpu_memcpy", "copy", 575, 1, correlation=5),
        _span("kernel", "no_launch_seen", 580, 2, correlation=99),  # still in the frame, outside every stage
    ]
    kernels = kernels_from_profile(events, [enc, rest], device_work=True, app="a")
    assert [(k.name, k.category) for k in kernels] == [
        ("a.encoding/gemm", "encoding"), ("a.encoding/triton_a", "encoding"), ("a.encoding/triton_b", "encoding"),
        ("a.composite/composite", "rest"), ("unstaged/copy", "rest"), ("unstaged/no_launch_seen", "rest")]
    assert [k.n_inputs for k in kernels] == [1000, 0, 0, 10, 0, 0]
    assert kernels[0].flops == 2.0 * 1000 * 32 * 64  # from the op's shapes
    assert (kernels[1].bytes_read, kernels[2].bytes_read) == (1e6, 3e6)  # the stage's cost, shared by duration
    assert kernels[1].duration_s == pytest.approx(10e-6)


def test_bench_trace_smoke(tmp_path):
    """benchmarks/bench_trace.py (what the H200 run uses) end to end at --smoke size on the CPU."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_trace.py"), "--out", str(tmp_path),
                           "--smoke", "--apps", "gia"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((tmp_path / "summary.json").read_text())
    assert row["timer"] == "cpu_op" and row["kernels"] > 10 and row["rtx3090_projected_ms_1080p"] > 0
    assert read_trace(tmp_path / "traces" / "gia_hashgrid.json").timer == "cpu_op"
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "projected onto the NVIDIA RTX 3090" in report and "(cpu_op)" in report
