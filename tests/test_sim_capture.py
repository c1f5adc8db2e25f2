"""Trace capture: stages of a fake app and of the real GIA renderer (CPU timer) become a trace."""

import pytest
import torch

from ngfx.ngpc_sim.capture import trace_frame
from ngfx.ngpc_sim.config import load_config
from ngfx.ngpc_sim.model import simulate
from ngfx.ngpc_sim.trace import read_trace, write_trace


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


def test_capture_from_fake_app(tmp_path):
    trace = trace_frame(FakeApp(), 32, 24, "cpu", n_frames=2)
    assert trace.timer == "cpu" and trace.n_frames == 2 and len(trace.kernels) == 8
    assert [k.category for k in trace.kernels[:4]] == ["rest", "encoding", "mlp", "rest"]
    enc, mlp = trace.kernels[1], trace.kernels[2]
    assert enc.encoding == "lowres_dense_grid" and all(k.duration_s > 0 for k in trace.kernels)
    assert enc.log2_hashmap_size == 15  # finest level 32^3 = 2^15 entries, not the config's unused 19
    assert mlp.mlp_layers == [[64, 8], [3, 64]]
    write_trace(trace, tmp_path / "t.json")
    assert read_trace(tmp_path / "t.json").kernels == trace.kernels
    assert trace.rest == "unfused" and read_trace(tmp_path / "t.json").rest == "unfused"
    fused = trace_frame(FakeApp(), 32, 24, "cpu", fused=True)
    write_trace(fused, tmp_path / "f.json")
    assert read_trace(tmp_path / "f.json").rest == "fused"


@pytest.mark.parametrize("encoding, kind", [("lowres", "lowres_dense_grid"), ("densegrid", "multires_dense_grid")])
def test_capture_real_renderer_and_replay(tmp_path, encoding, kind):
    from ngfx.render import gia

    app = gia.build_app("image", encoding, "tiny", device="cpu")
    trace = trace_frame(app, 48, 32, "cpu")
    assert {k.category for k in trace.kernels} == {"rest", "encoding", "mlp"}
    assert {k.encoding for k in trace.kernels if k.category != "rest"} == {kind}
    write_trace(trace, tmp_path / "gia.json")
    back = read_trace(tmp_path / "gia.json")
    cfg = load_config()
    # NGPC disabled: the replay is the trace's own measured frame time
    assert simulate(back, cfg.replace(enabled=False)).frame_s == pytest.approx(trace.frame_time_s(), rel=0.02)
    r = simulate(back, cfg.replace(n_nfps=16))
    assert 1.0 < r.speedup <= r.amdahl_bound
