"""The analytic cost model (counts by hand) and the roofline projection between GPU profiles."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngfx.errors import NgfxInputError
from ngfx.ngpc_sim import costs
from ngfx.ngpc_sim.config import ENCODING_KINDS, gpu_profiles, load_config
from ngfx.ngpc_sim.model import amdahl_bound
from ngfx.ngpc_sim.paper import APPS, paper_trace
from ngfx.ngpc_sim.project import LAUNCH_S, project_trace, roofline_s, source_profile
from ngfx.ngpc_sim.trace import Kernel, Trace

GPUS = gpu_profiles()


def test_grid_encoding_by_hand():
    # 3D: 8 corners per level; per corner 2F + 2d = 10 FLOPs; reads 12 B of coordinates + 8 x 2 x 2 B per level
    c = costs.grid_encoding(n_inputs=10, n_levels=4, n_features=2, n_dims=3)
    assert c.flops == 10 * 4 * 8 * 10
    assert c.bytes_read == 10 * 12 + 10 * 4 * 8 * 2 * 2
    assert c.bytes_written == 10 * 4 * 2 * 2


def test_fused_mlp_by_hand():
    c = costs.fused_mlp(100, [[64, 32], [3, 64]])
    assert c.flops == 2 * 100 * (64 * 32 + 3 * 64)
    assert c.bytes_read == (100 * 32 + 64 * 32 + 3 * 64) * 2 and c.bytes_written == 100 * 3 * 2


@pytest.mark.parametrize("name, dims, flops", [
    ("aten::mm", [[100, 32], [32, 64]], 2 * 100 * 32 * 64),
    ("aten::addmm", [[64], [100, 32], [32, 64]], 2 * 100 * 32 * 64),
    ("aten::linear", [[100, 32], [64, 32], [64]], 2 * 100 * 32 * 64),
    ("aten::bmm", [[4, 100, 32], [4, 32, 64]], 2 * 400 * 32 * 64),
    ("aten::mul", [[100, 3], []], 300),
    ("aten::cat", [[[100, 3], [100, 5]], []], 500),
    ("aten::view", [[100, 3], []], 0),
])
def test_tensor_op_costs(name, dims, flops):
    assert costs.tensor_op(name, dims).flops == flops


def _trace(device="NVIDIA H200", timer="cupti"):
    compute = Kernel("mlp", "mlp", 10**6, 1e12, 1e6, 1e6, 0.05, encoding="hash_grid")  # compute-bound
    memory = Kernel("gather", "encoding", 10**6, 1e6, 4e10, 1e6, 0.02, encoding="hash_grid", n_levels=16,
                    n_features_per_level=2, log2_hashmap_size=18, n_dims=3)  # bandwidth-bound
    launch = Kernel("tiny", "rest", 1, 0.0, 0.0, 0.0, 1e-5)
    return Trace(device, timer, 1920, 1080, [compute, memory, launch])


def test_gpu_to_gpu_keeps_measured_efficiency():
    h200, rtx = GPUS["h200"], GPUS["rtx3090"]
    trace = _trace()
    assert source_profile(trace, GPUS) == h200
    out = project_trace(trace, rtx, h200)
    compute, memory, launch = out.kernels
    assert compute.duration_s == pytest.approx(0.05 * h200.peak_flops / rtx.peak_flops)
    assert memory.duration_s == pytest.approx(0.02 * h200.memory_bytes_per_s / rtx.memory_bytes_per_s, rel=1e-3)
    assert launch.duration_s == 1e-5  # no FLOPs, no bytes: launch-bound, kept as measured
    assert out.timer == "roofline" and "projected from NVIDIA H200" in out.device


def test_cpu_trace_gets_the_roofline_lower_bound():
    trace = _trace(device="CPU (2 threads)", timer="cpu")
    assert source_profile(trace, GPUS) is None
    out = project_trace(trace, GPUS["rtx3090"], None)
    for before, after in zip(trace.kernels, out.kernels):
        assert after.duration_s == pytest.approx(roofline_s(before, GPUS["rtx3090"]) + LAUNCH_S)


@settings(max_examples=20, deadline=None)
@given(factor=st.floats(1.0, 8.0), app=st.sampled_from(["nerf", "gia"]))
def test_faster_target_never_projects_slower(factor, app):
    trace = paper_trace(app, "hash_grid")
    rtx = GPUS["rtx3090"]
    faster = dataclasses.replace(rtx, memory_bytes_per_s=rtx.memory_bytes_per_s * factor, peak_flops=rtx.peak_flops * factor)
    for source in (None, GPUS["h200"]):
        slow, fast = project_trace(trace, rtx, source), project_trace(trace, faster, source)
        assert fast.frame_time_s() <= slow.frame_time_s() * (1 + 1e-12)


@settings(max_examples=12, deadline=None)
@given(app=st.sampled_from(APPS), encoding=st.sampled_from(ENCODING_KINDS), target=st.sampled_from(sorted(GPUS)))
def test_paper_trace_projects_from_its_gpu(app, encoding, target):
    """A paper-input trace is an RTX 3090 frame: onto the 3090 the projection is the identity, and onto any GPU
    each kernel moves by the GPUs' compute or bandwidth ratio, never more (the rest kernels, whose bytes are
    placeholders, are not replaced by their roofline: that gave NeRF on the H200 an Amdahl bound of 6436x)."""
    trace = paper_trace(app, encoding)
    source, gpu = source_profile(trace, GPUS), GPUS[target]
    assert source == GPUS["rtx3090"]
    out = project_trace(trace, gpu, source)
    ratios = (source.peak_flops / gpu.peak_flops, source.memory_bytes_per_s / gpu.memory_bytes_per_s)
    for before, after in zip(trace.kernels, out.kernels):
        assert min(ratios) * (1 - 1e-9) <= after.duration_s / before.duration_s <= max(ratios) * (1 + 1e-9)
    cfg = load_config(gpu=target)
    assert amdahl_bound(out, cfg) <= amdahl_bound(trace, cfg) * max(ratios) / min(ratios) * (1 + 1e-9)
    if target == "rtx3090":
        assert [k.duration_s for k in out.kernels] == pytest.approx([k.duration_s for k in trace.kernels])


def test_unprojectable_traces_are_refused():
    trace = paper_trace("nerf", "hash_grid")
    with pytest.raises(NgfxInputError, match="--project.*already projected"):
        source_profile(project_trace(trace, GPUS["h200"], GPUS["rtx3090"]), GPUS)
    with pytest.raises(NgfxInputError, match="--project.*modelled trace.*its GPU's profile"):
        source_profile(dataclasses.replace(trace, device="Imaginary GPU"), GPUS)
