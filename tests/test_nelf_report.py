"""Mobile-latency report: the published iPhone 13 point, device files, outputs, errors, the CLI."""

import json

import pytest
import torch

from ngfx.cli import main
from ngfx.errors import NgfxInputError
from ngfx.nelf.layer_costs import layer_costs
from ngfx.nelf.mobile_report import load_devices, predict, roofline_seconds, write_mobile_report
from ngfx.nelf.network import PRESETS


def test_report_reproduces_the_published_iphone13_point(tmp_path):
    md = write_mobile_report("paper", "iphone13", (1008, 756), tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["frame"]["estimate_s"] * 1e3 == pytest.approx(18.04, abs=1e-6)
    assert data["frame"]["compute_bound_s"] < data["frame"]["estimate_s"]
    text = md.read_text()
    assert "18.04 ms" in text and "This report is that calibration point" in text
    assert "| 72 | to_rgb |" in text  # per-layer table down to the last of 73 layers
    assert "{" not in text.split("## Method")[1].split("## Device")[0]  # every placeholder filled in
    assert "max(FLOPs / 15.8 TFLOP/s" in text
    for name in ("report.html", "roofline.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert "<table>" in (tmp_path / "report.html").read_text()


def test_other_devices_and_configs_are_predictions():
    devices = load_devices()
    assert len(devices["devices"]) >= 4
    cfg = PRESETS["mobile_r2l_x12"]
    ms = {k: predict(cfg, k, (1008, 756), devices=devices)["frame"]["estimate_s"] * 1e3 for k in devices["devices"]}
    assert ms["iphone14pro"] < ms["iphone13"]  # more bandwidth and compute
    x8 = predict(PRESETS["mobile_r2l_x8"], "iphone13", (800, 800), devices=devices)
    assert x8["frame"]["estimate_s"] * 1e3 != pytest.approx(18.04, abs=0.01)
    # the per-layer roofline is the max of the compute and memory times at the device's ceilings
    dev = devices["devices"]["iphone13"]
    c = layer_costs(cfg, 1008, 756)[0]
    assert x8["layers"][0]["roofline_s"] > 0
    assert roofline_seconds(c, dev, "gpu") == pytest.approx(
        max(c.flops / 1.37e12, c.bytes_moved / 34.1e9))


def test_measured_gpu_figure_goes_beside_the_estimates(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"device": "NVIDIA H200", "results": [
        {"config": "mobile_r2l_x12", "resolution": "1008x756", "mode": "cuda_graph", "dtype": "float16",
         "ms_per_frame": 0.512}]}))
    md = write_mobile_report("paper", "iphone14pro", (1008, 756), tmp_path / "r", measured_h200=bench)
    text = md.read_text()
    assert "NVIDIA H200 measured" in text and "0.512 ms measured" in text
    assert "not the calibration point" in text


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(NgfxInputError, match="unknown device 'pixel9'"):
        write_mobile_report("paper", "pixel9", (1008, 756), tmp_path)
    with pytest.raises(NgfxInputError, match="resolution"):
        write_mobile_report("mobile_r2l_x8", "iphone13", (1008, 756), tmp_path)
    bad = json.loads(json.dumps(load_devices()))
    bad["devices"]["iphone13"]["gpu"]["peak_fp16_tflops"] = -1
    (tmp_path / "dev.json").write_text(json.dumps(bad))
    with pytest.raises(NgfxInputError, match="iphone13.gpu.peak_fp16_tflops"):
        load_devices(tmp_path / "dev.json")
    (tmp_path / "broken.json").write_text("{\"devices\": ")
    with pytest.raises(NgfxInputError, match="malformed JSON"):
        load_devices(tmp_path / "broken.json")


def test_cli_writes_report_and_prints_one_line_errors(tmp_path, capsys):
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps({"width": 32, "n_blocks": 2, "sr_stages": [[8, 4, 2]], "sr_blocks": 1}))
    assert main(["mobile-report", str(cfg), "--phone", "snapdragon778g", "--resolution", "64x48",
                 "--unit", "gpu", "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    estimate = json.loads((tmp_path / "r" / "report.json").read_text())["frame"]["estimate_s"]
    assert f"estimate {estimate * 1e3:.2f} ms" in captured.out and "snapdragon778g" not in captured.err
    assert (tmp_path / "r" / "report.md").is_file()
    assert main(["mobile-report", "paper", "--phone", "nokia3310", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ngfx mobile-report: error:") and "nokia3310" in err and "\n" not in err


@pytest.mark.parametrize("argv, expected", [
    (["mobile-report", "tiny", "--resolution", "33x32"], "error: --resolution: 33x32 is impossible"),
    (["mobile-report", "{tmp}/mesh.obj"], "error: {tmp}/mesh.obj: the source must be a NeLF run folder, a NeLF config"),
    (["mobile-report", "{tmp}/missing"], "or an .onnx file (no such file or folder)"),
])
def test_cli_names_the_resolution_flag_and_what_the_source_must_be(tmp_path, capsys, argv, expected):
    (tmp_path / "mesh.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    out = tmp_path / "report"
    assert main([a.format(tmp=tmp_path) for a in argv] + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected.format(tmp=tmp_path) in err and "\n" not in err and not out.exists()


@pytest.mark.parametrize("break_it, field", [
    (lambda d: d["devices"]["iphone13"].pop("name"), "devices.iphone13.name"),
    (lambda d: d["devices"]["iphone13"]["gpu"].pop("source"), "devices.iphone13.gpu.source"),
    (lambda d: d["calibration"].pop("device"), "device"),
    (lambda d: d["calibration"].update(device="pixel9"), "calibration.device"),
    (lambda d: d["calibration"].update(latency_ms="18.04"), "calibration.latency_ms"),
    (lambda d: d["devices"]["iphone13"].update(memory_bandwidth_gbps=float("nan")),
     "devices.iphone13.memory_bandwidth_gbps"),
    (lambda d: d["devices"]["iphone13"]["efficiency"].update(compute=True), "devices.iphone13.efficiency.compute"),
])
def test_broken_devices_file_names_the_field_and_leaves_the_old_report(tmp_path, capsys, break_it, field):
    out = tmp_path / "report"
    assert main(["mobile-report", "tiny", "--resolution", "32x32", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    devices = json.loads(json.dumps(load_devices()))
    break_it(devices)
    (tmp_path / "dev.json").write_text(json.dumps(devices))
    capsys.readouterr()
    assert main(["mobile-report", "paper", "--devices", str(tmp_path / "dev.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "dev.json" in err and field in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not one file replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.json", "report"]  # no temp folder left


def test_report_folder_is_replaced_atomically(tmp_path):
    out = tmp_path / "r"
    write_mobile_report("tiny", "iphone13", (32, 32), out)
    write_mobile_report("tiny", "iphone14pro", (32, 32), out)
    assert "iPhone 14 Pro" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["device"] == "iphone14pro"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temp or old folder left beside it


def test_onnx_graph_costs_equal_the_layer_table(tmp_path):
    """The file that ships is costed like the config it came from: same layers, shapes, params, MACs, bytes."""
    from ngfx.nelf.layer_costs import onnx_layer_costs
    from ngfx.nelf.network import NeLF, NeLFConfig
    from ngfx.nelf.onnx_export import export_model

    cfg = NeLFConfig(n_points=2, n_freqs=2, width=16, n_blocks=2, sr_stages=((8, 4, 2), (4, 3, 3)), sr_blocks=1)
    path = export_model(NeLF(cfg), tmp_path / "small.onnx", (48, 30))
    from_graph, from_config = onnx_layer_costs(path), layer_costs(cfg, 48, 30)
    assert len(from_graph) == len(from_config) == 2 * 2 + 1 + 2 * (1 + 2) + 1
    for g, c in zip(from_graph, from_config):
        assert (g.name, g.kind, g.in_shape, g.out_shape, g.params, g.macs, g.bytes_moved) == (
            c.name, c.kind, c.in_shape, c.out_shape, c.params, c.macs, c.bytes_moved)
    # the report from the ONNX file is the report from the config, at the file's own size
    write_mobile_report(path, "iphone13", (1008, 756), tmp_path / "onnx")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    write_mobile_report(tmp_path / "cfg.json", "iphone13", (48, 30), tmp_path / "cfg")
    onnx_report, cfg_report = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("onnx", "cfg"))
    assert onnx_report["resolution"] == [48, 30] and onnx_report["frame"] == cfg_report["frame"]


def test_onnx_costs_depthwise_strided_and_fully_connected_layers(tmp_path):
    from ngfx.nelf.layer_costs import onnx_layer_costs
    from ngfx.nelf.onnx_export import export_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 1, 1, groups=8),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    costs = onnx_layer_costs(export_onnx(net, torch.zeros(1, 3, 32, 32), tmp_path / "n.onnx"))
    assert [c.kind for c in costs] == ["conv3x3/2", "conv3x3dw", "fc"]
    assert [c.macs for c in costs] == [16 * 16 * 8 * 3 * 9, 16 * 16 * 8 * 1 * 9, 8 * 10]
    assert [c.params for c in costs] == [8 * 3 * 9 + 8, 8 * 9 + 8, 8 * 10 + 10]
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(NgfxInputError, match="junk.onnx.*not a readable ONNX model"):
        onnx_layer_costs(tmp_path / "junk.onnx")


def test_heldout_table_excludes_the_calibration_point(tmp_path, capsys):
    from ngfx.nelf.heldout import heldout_rows, load_points, summary

    points = load_points()
    assert {p["network"] for p in points} >= {"mobileone_s0", "mobileone_s4", "mobilenet_v2"}
    assert all(p["source"] and p["latency_ms"] > 0 for p in points)
    devices = load_devices()
    calibration = {"network": devices["calibration"]["config"], "resolution": devices["calibration"]["resolution"],
                   "device": "iphone13", "unit": "neural_engine", "latency_ms": 18.04, "source": "calibration"}
    picked = [p for p in points if p["network"] in ("mobileone_s0", "mobilenet_v2")]
    rows = heldout_rows(devices, picked + [calibration])
    assert len(rows) == len(picked) and all(r["network"] != calibration["network"] for r in rows)
    s0 = next(r for r in rows if r["network"] == "mobileone_s0")
    assert s0["params_m"] == pytest.approx(2.08, abs=0.01) and s0["gflops"] == pytest.approx(0.55, abs=0.01)
    assert s0["error"] == pytest.approx(s0["estimate_ms"] / 0.79 - 1)
    s = summary(rows)
    assert s["points"] == len(picked) and s["error"]["worst_abs"] >= s["error"]["median_abs"] > 0


def test_cli_heldout_section(tmp_path, capsys):
    assert main(["mobile-report", "paper", "--heldout", "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    held = json.loads((tmp_path / "r" / "heldout.json").read_text())
    assert "## Held-out check" in text and "median |error|" in text
    assert held["summary"]["points"] == len(held["rows"]) >= 7
    assert all(r["network"] != "mobile_r2l_x12" for r in held["rows"])
