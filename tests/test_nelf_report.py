"""Mobile-latency report: the published iPhone 13 point, device files, outputs, errors, the CLI."""

import json

import pytest

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
    assert main(["mobile-report", str(cfg), "--device", "snapdragon778g", "--resolution", "64x48",
                 "--unit", "gpu", "--out", str(tmp_path / "r")]) == 0
    assert "snapdragon778g" not in capsys.readouterr().err
    assert (tmp_path / "r" / "report.md").is_file()
    assert main(["mobile-report", "paper", "--device", "nokia3310", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ngfx mobile-report: error:") and "nokia3310" in err and "\n" not in err
