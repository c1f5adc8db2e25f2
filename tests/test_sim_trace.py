"""Trace schema: round trip, table import, explicit scaling, and clear errors for bad traces."""

import json

import pytest

from ngfx.errors import NgfxInputError
from ngfx.ngpc_sim.paper import paper_trace
from ngfx.ngpc_sim.trace import read_kernel_table, read_trace, scale_trace, trace_to_chrome, write_trace


def test_round_trip_and_chrome_format(tmp_path):
    trace = paper_trace("nerf", "hash_grid")
    path = tmp_path / "t.json"
    write_trace(trace, path)
    data = json.loads(path.read_text())
    ev = data["traceEvents"][1]
    assert ev["ph"] == "X" and ev["cat"] == "encoding" and ev["args"]["n_levels"] == 16
    assert data["otherData"]["schema"] == "ngfx.trace" and data["otherData"]["version"] == 1
    back = read_trace(path)
    assert back.kernels == trace.kernels and (back.width, back.height) == (1920, 1080)
    assert back.frame_time_s() == pytest.approx(0.231)
    assert data["otherData"]["rest"] == "unfused" and back.rest == "unfused"
    del data["otherData"]["rest"]  # traces written before the field existed read as unfused
    data["traceEvents"][0]["args"]["fused"] = None  # ... and a kernel without its fused steps as one step
    path.write_text(json.dumps(data))
    assert read_trace(path).rest == "unfused" and read_trace(path).kernels[0].fused == ""


def test_scale_trace_is_proportional():
    trace = paper_trace("nvr", "multires_dense_grid")
    big = scale_trace(trace, 3840, 2160, samples_scale=0.5)  # 4x pixels, half the samples -> 2x work
    for a, b in zip(trace.kernels, big.kernels):
        assert b.n_inputs == pytest.approx(2 * a.n_inputs, abs=1)
        assert b.duration_s == pytest.approx(2 * a.duration_s)
        assert b.bytes_read == pytest.approx(2 * a.bytes_read) and b.flops == pytest.approx(2 * a.flops)
    assert big.share("rest") == pytest.approx(trace.share("rest"))
    with pytest.raises(ValueError):
        scale_trace(trace, 0, 10)


def test_kernel_table_csv(tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("name,category,app,encoding,n_levels,n_features_per_level,log2_hashmap_size,n_dims,"
                    "n_inputs,flops,bytes_read,bytes_written,duration_s,mlp_layers\n"
                    "march,rest,nerf,,0,0,0,0,100,0,10,10,0.002,\n"
                    "enc,encoding,nerf,hash_grid,16,2,18,3,1000,0,1e5,1e4,0.003,\n"
                    'mlp,mlp,nerf,hash_grid,16,2,18,3,1000,2e6,1e4,1e3,0.001,"[[64, 32], [3, 64]]"\n')
    trace = read_kernel_table(path, 800, 600)
    assert [k.category for k in trace.kernels] == ["rest", "encoding", "mlp"]
    assert trace.kernels[2].mlp_layers == [[64, 32], [3, 64]]
    assert trace.frame_time_s() == pytest.approx(0.006)


def _write(tmp_path, data):
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["traceEvents"][1].update(cat="shader"), r"traceEvents\[1\] \(nerf.encoding\).cat"),
    (lambda d: d["traceEvents"][2]["args"].update(n_inputs=-5), r"traceEvents\[2\] \(nerf.mlp\).n_inputs"),
    (lambda d: d["traceEvents"][0]["args"].update(bytes_read="lots"), r"traceEvents\[0\] \(nerf.rest\).bytes_read"),
    (lambda d: d["traceEvents"][0].update(dur=None), r"traceEvents\[0\] \(nerf.rest\).dur"),
    (lambda d: d["traceEvents"][1]["args"].update(encoding="octree"), r"traceEvents\[1\] \(nerf.encoding\).encoding"),
    (lambda d: d["traceEvents"][1]["args"].pop("n_inputs"), r"n_inputs'.*missing"),
    (lambda d: d["otherData"].update(version=7), "otherData.version"),
    (lambda d: d["otherData"].update(width=0), "otherData.width"),
    (lambda d: d["otherData"].update(rest="half"), "otherData.rest"),
    (lambda d: d["traceEvents"][0].update(dur=float("inf")), r"traceEvents\[0\] \(nerf.rest\).duration_s"),
    (lambda d: d["traceEvents"][1]["args"].update(n_inputs=1e30), r"traceEvents\[1\] \(nerf.encoding\).n_inputs"),
    (lambda d: d["traceEvents"][1]["args"].update(n_levels=2.5), r"\.n_levels.*whole number"),
    (lambda d: d["traceEvents"][1]["args"].update(log2_hashmap_size=5000), r"\.log2_hashmap_size"),
    (lambda d: d["traceEvents"][1]["args"].update(n_dims=True), r"\.n_dims"),
    (lambda d: d["traceEvents"][2]["args"].update(mlp_layers=64), r"\.mlp_layers"),
    (lambda d: d["traceEvents"][0]["args"].update(fused=True), r"traceEvents\[0\] \(nerf.rest\).fused'.*as text"),
    (lambda d: d["traceEvents"][2]["args"].update(mlp_layers=[[64, "wide"]]), r"\.mlp_layers\[0\]"),
    (lambda d: [ev.update(dur=0) for ev in d["traceEvents"]], "every kernel lasts 0 s"),
    (lambda d: d["traceEvents"][1].update(ts="zero"), r"traceEvents\[1\] \(nerf.encoding\).ts'.*'zero'"),
    (lambda d: d["traceEvents"][2]["args"].update(app="nsdf"),
     r"traceEvents\[2\] \(nerf.mlp\).app': 'nsdf', but traceEvents\[0\] \(nerf.rest\) has 'nerf'"),
    (lambda d: d["traceEvents"][2]["args"].update(encoding="lowres_dense_grid"), r"traceEvents\[2\] \(nerf.mlp\).encoding'"),
])
def test_bad_traces_name_event_and_field(tmp_path, mutate, field):
    data = trace_to_chrome(paper_trace("nerf", "hash_grid"))
    mutate(data)
    with pytest.raises(NgfxInputError, match=field):
        read_trace(_write(tmp_path, data))


def test_truncated_trace(tmp_path):
    text = json.dumps(trace_to_chrome(paper_trace("gia", "hash_grid")))
    with pytest.raises(NgfxInputError, match="malformed JSON"):
        read_trace(_write(tmp_path, text[: len(text) // 2]))
    with pytest.raises(NgfxInputError, match="traceEvents"):
        read_trace(_write(tmp_path, {"foo": 1}))


def test_deeply_nested_json(tmp_path):
    with pytest.raises(NgfxInputError, match="nested too deeply"):
        read_trace(_write(tmp_path, "[" * 100_000 + "]" * 100_000))


def test_kernel_table_mixing_apps_is_refused(tmp_path):
    rows = [dict(name=k.name, category=k.category, n_inputs=k.n_inputs, flops=k.flops, bytes_read=k.bytes_read,
                 bytes_written=k.bytes_written, duration_s=k.duration_s, app=k.app, encoding=k.encoding,
                 n_levels=k.n_levels, n_features_per_level=k.n_features_per_level, n_dims=k.n_dims)
            for k in paper_trace("gia", "hash_grid").kernels + paper_trace("nvr", "hash_grid").kernels]
    path = _write(tmp_path, rows)
    with pytest.raises(NgfxInputError, match=r"row 4.app': 'nvr', but row 1 has 'gia'"):
        read_kernel_table(path, 1920, 1080)
