"""The SimPy model: properties that broken models fail (monotone in NFPs and bandwidth, never above the
Amdahl bound), fused-rest handling, table loads, and events per batch."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngfx.ngpc_sim.config import ENCODING_KINDS, load_config
from ngfx.ngpc_sim.model import simulate
from ngfx.ngpc_sim.paper import paper_trace
from ngfx.ngpc_sim.trace import Kernel, Trace

CFG = load_config()

def _trace(rest_s, enc_s, mlp_s, n_inputs, encoding="hash_grid", log2=18, frames=1):
    kernels = []
    for f in range(frames):
        kernels += [
            Kernel("march", "rest", 1000, 0.0, 1e6, 1e6, rest_s / 2, frame=f, app="t"),
            Kernel("enc", "encoding", n_inputs, 0.0, 1e6, 1e6, enc_s, frame=f, app="t", encoding=encoding,
                   n_levels=16, n_features_per_level=2, log2_hashmap_size=log2, n_dims=3),
            Kernel("mlp", "mlp", n_inputs, 2.0 * n_inputs * 8192, 1e6, 1e6, mlp_s, frame=f, app="t", encoding=encoding,
                   mlp_layers=[[64, 32], [64, 64], [3, 64]]),
            Kernel("composite", "rest", 1000, 0.0, 1e6, 1e6, rest_s / 2, frame=f, app="t"),
        ]
    return Trace("test", "cpu", 640, 480, kernels, n_frames=frames)

def test_fused_rest_only_speeds_up_rest():
    trace = _trace(0.05, 0.0, 0.0, 0)
    assert simulate(trace, CFG.replace(n_nfps=8)).frame_s == pytest.approx(0.05 / 9.94)

def test_fused_trace_rest_is_replayed_as_timed():
    # a trace of the fused rest kernels is not sped up a second time, with or without the NGPC
    trace = dataclasses.replace(_trace(0.05, 0.0, 0.0, 0), rest="fused")
    assert simulate(trace, CFG.replace(n_nfps=8)).frame_s == pytest.approx(0.05)
    neural = dataclasses.replace(_trace(0.01, 0.02, 0.03, 10**6), rest="fused")
    r = simulate(neural, CFG.replace(n_nfps=16))
    assert r.rest_mode == "fused" and r.frame_s >= 0.01 * (1 - 1e-9)
    assert r.amdahl_bound == pytest.approx(0.06 / 0.01)


def test_memory_bound_when_tables_stream():
    # 2^22-entry levels (8 MiB) must stream for every batch: memory is then the busiest unit
    trace = _trace(1e-4, 0.05, 0.05, 10**6, log2=22)
    r = simulate(trace, CFG.replace(n_nfps=64))
    assert r.utilisation["memory"] > 0.9 and r.utilisation["memory"] > r.utilisation["mlp_engines"]

traces = st.builds(_trace, rest_s=st.floats(1e-4, 0.5), enc_s=st.floats(1e-4, 0.5), mlp_s=st.floats(1e-4, 0.5),
                   n_inputs=st.integers(1, 5 * 10**7), encoding=st.sampled_from(ENCODING_KINDS), log2=st.integers(12, 21))

@settings(max_examples=25, deadline=None)
@given(trace=traces, scale=st.sampled_from([1, 2, 4, 8, 16, 32]), rest=st.sampled_from(["fused", "unfused"]))
def test_more_nfps_never_slower_and_amdahl_holds(trace, scale, rest):
    cfg = CFG.replace(rest_mode=rest)
    small, large = simulate(trace, cfg.replace(n_nfps=scale)), simulate(trace, cfg.replace(n_nfps=2 * scale))
    assert large.frame_s <= small.frame_s * (1 + 1e-9)
    for r in (small, large):
        assert r.speedup <= r.amdahl_bound * (1 + 1e-9)
        assert all(0.0 <= u <= 1.0 + 1e-9 for u in r.utilisation.values())

@settings(max_examples=20, deadline=None)
@given(trace=traces, scale=st.sampled_from([1, 4, 16, 64]), factor=st.sampled_from([2.0, 4.0]))
def test_more_bandwidth_never_slows_a_frame(trace, scale, factor):
    cfg = CFG.replace(n_nfps=scale)
    faster = dataclasses.replace(cfg, gpu=dataclasses.replace(cfg.gpu, memory_bytes_per_s=cfg.gpu.memory_bytes_per_s * factor))
    assert simulate(trace, faster).frame_s <= simulate(trace, cfg).frame_s * (1 + 1e-9)


@settings(max_examples=15, deadline=None)
@given(trace=traces, scale=st.sampled_from([1, 8, 64]))
def test_frame_never_shorter_than_the_rest_kernels(trace, scale):
    # the SMs must still run every batch's rest kernels, however many NFPs there are
    r = simulate(trace, CFG.replace(n_nfps=scale))
    rest_s = sum(k.duration_s for k in trace.kernels if k.category == "rest") / CFG.fused_rest_speedup
    assert r.frame_s >= rest_s * (1 - 1e-9)


def test_events_per_batch_not_per_input():
    r = simulate(paper_trace("nerf", "hash_grid"), CFG.replace(n_nfps=8))
    assert r.n_batches == CFG.batches_per_frame


def test_repeated_queries_share_one_table_load():
    # eight launches over the same grid (e.g. sphere-tracing steps) load its tables once, not eight times
    one = _trace(1e-4, 8e-3, 8e-3, 8 * 10**5)
    many = dataclasses.replace(one, kernels=[one.kernels[0]] + [
        dataclasses.replace(k, n_inputs=k.n_inputs // 8, duration_s=k.duration_s / 8) for _ in range(8) for k in one.kernels[1:3]])
    cfg = CFG.replace(n_nfps=4)
    a, b = simulate(one, cfg), simulate(many, cfg)
    assert b.utilisation["memory"] * b.frame_s == pytest.approx(a.utilisation["memory"] * a.frame_s, rel=1e-6)
