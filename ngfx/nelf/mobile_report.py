"""Estimated phone latency of a NeLF frame: per-layer roofline bounds and a calibrated estimate.

Method (also written into every report):
- Roofline bound per layer: ``max(FLOPs / peak, bytes moved / bandwidth)`` with the device's spec-sheet
  ceilings; the frame's bound is the sum over layers (layers run one after another).
- Efficiency model per layer: ``max(FLOPs / (peak * e_c), bytes / (bandwidth * e_m)) / s + overhead``, with
  ``e_c``, ``e_m`` and ``overhead`` from the device file, and one scale ``s`` fitted so that the model
  reproduces the one published measurement (MobileR2L, iPhone 13, 1008x756: 18.04 ms). The same ``s`` is
  used for every device, i.e. the published point calibrates how far such networks fall below the model.
"""

from __future__ import annotations

import functools
import html
import json
import math
from importlib import resources
from pathlib import Path

from ngfx.errors import NgfxInputError
from ngfx.io import atomic_folder, read_json, require, write_json
from ngfx.nelf.layer_costs import LayerCost, layer_costs, onnx_layer_costs, totals
from ngfx.nelf.network import PRESETS, NeLFConfig, low_resolution, preset_for, student_config

UNITS = ("neural_engine", "gpu")


def _field(obj: dict, key: str, source: str, where: str, kind: type | None = None):
    """``obj[key]`` or an error naming the field by its full path, ``where.key``."""
    if not isinstance(obj, dict) or key not in obj:
        raise NgfxInputError(source, f"{where}.{key}", "missing")
    if kind is not None and not isinstance(obj[key], kind):
        raise NgfxInputError(source, f"{where}.{key}", f"expected {kind.__name__}, got {type(obj[key]).__name__}")
    return obj[key]


def _number(obj: dict, key: str, source: str, where: str, low: float = 0.0, high: float = math.inf) -> float:
    """``obj[key]`` as a finite number in (low, high]."""
    value = _field(obj, key, source, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise NgfxInputError(source, f"{where}.{key}", f"expected a number in ({low:g}, {high:g}], got {value!r}")
    return float(value)


def _text(obj: dict, key: str, source: str, where: str) -> str:
    value = _field(obj, key, source, where)
    if not isinstance(value, str) or not value.strip():
        raise NgfxInputError(source, f"{where}.{key}", f"expected a non-empty string, got {value!r}")
    return value


def load_devices(path: str | Path | None = None) -> dict:
    """The device file (default: the packaged ``devices.json``), every field the report reads checked."""
    if path is None:
        data = json.loads(resources.files("ngfx.nelf").joinpath("devices.json").read_text())
        source = "ngfx/nelf/devices.json"
    else:
        data, source = read_json(path), str(path)
    devices = require(data, "devices", source, dict)
    if not devices:
        raise NgfxInputError(source, "devices", "lists no device")
    for key, dev in devices.items():
        where = f"devices.{key}"
        _field(devices, key, source, "devices", dict)
        _text(dev, "name", source, where)
        for unit in UNITS:
            _field(dev, unit, source, where, dict)
            _number(dev[unit], "peak_fp16_tflops", source, f"{where}.{unit}")
            _text(dev[unit], "source", source, f"{where}.{unit}")
        _number(dev, "memory_bandwidth_gbps", source, where)
        eff = _field(dev, "efficiency", source, where, dict)
        for k in ("compute", "memory"):
            _number(eff, k, source, f"{where}.efficiency", high=1.0)
        overhead = _field(eff, "per_layer_overhead_us", source, f"{where}.efficiency")
        if isinstance(overhead, bool) or not isinstance(overhead, (int, float)) or not 0 <= overhead < math.inf:
            raise NgfxInputError(source, f"{where}.efficiency.per_layer_overhead_us",
                                 f"expected a number >= 0, got {overhead!r}")
    cal = require(data, "calibration", source, dict)
    if _text(cal, "device", source, "calibration") not in devices:
        raise NgfxInputError(source, "calibration.device",
                             f"{cal['device']!r} is not in devices ({', '.join(devices)})")
    if _field(cal, "unit", source, "calibration") not in UNITS:
        raise NgfxInputError(source, "calibration.unit", f"must be one of {UNITS}, got {cal['unit']!r}")
    if _text(cal, "config", source, "calibration") not in PRESETS:
        raise NgfxInputError(source, "calibration.config",
                             f"must be a preset ({', '.join(PRESETS)}), got {cal['config']!r}")
    res = _field(cal, "resolution", source, "calibration")
    if not (isinstance(res, list) and len(res) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                             for v in res)):
        raise NgfxInputError(source, "calibration.resolution", f"expected [width, height] in pixels, got {res!r}")
    low_resolution(PRESETS[cal["config"]], *res, source, "calibration.resolution")
    _number(cal, "latency_ms", source, "calibration")
    _text(cal, "source", source, "calibration")
    return data


def get_device(devices: dict, key: str) -> dict:
    if key not in devices["devices"]:
        raise NgfxInputError("--phone", "phone", f"unknown device {key!r} (known: {', '.join(devices['devices'])})")
    return devices["devices"][key]


def _ceilings(device: dict, unit: str) -> tuple[float, float]:
    if unit not in UNITS:
        raise NgfxInputError("--unit", "unit", f"must be one of {UNITS}, got {unit!r}")
    return device[unit]["peak_fp16_tflops"] * 1e12, device["memory_bandwidth_gbps"] * 1e9


def roofline_seconds(cost: LayerCost, device: dict, unit: str) -> float:
    peak, bandwidth = _ceilings(device, unit)
    return max(cost.flops / peak, cost.bytes_moved / bandwidth)


def model_seconds(cost: LayerCost, device: dict, unit: str, scale: float = 1.0) -> float:
    """The efficiency model's time for one layer, divided by the calibration ``scale``."""
    peak, bandwidth = _ceilings(device, unit)
    eff = device["efficiency"]
    busy = max(cost.flops / (peak * eff["compute"]), cost.bytes_moved / (bandwidth * eff["memory"]))
    return busy / scale + eff["per_layer_overhead_us"] * 1e-6


@functools.lru_cache(maxsize=8)
def _preset_costs(name: str, width: int, height: int) -> tuple[LayerCost, ...]:
    """A preset's layer table, traced once: every prediction (each device, each held-out point) calibrates on it."""
    return tuple(layer_costs(preset_for(name), width, height))


def calibration_scale(devices: dict) -> tuple[float, dict]:
    """Fit ``s`` so the model reproduces the published point -> (s, the calibration entry)."""
    cal = require(devices, "calibration", "devices file", dict)
    device = get_device(devices, cal["device"])
    costs = _preset_costs(cal["config"], *cal["resolution"])
    busy = sum(model_seconds(c, device, cal["unit"]) for c in costs) - len(costs) * device["efficiency"][
        "per_layer_overhead_us"] * 1e-6
    fixed = len(costs) * device["efficiency"]["per_layer_overhead_us"] * 1e-6
    target = cal["latency_ms"] * 1e-3
    if target <= fixed:
        raise NgfxInputError("devices file", "calibration.latency_ms", "smaller than the per-layer overheads alone")
    return busy / (target - fixed), cal


def resolve_source(source: str | Path, resolution: tuple[int, int]) -> tuple[NeLFConfig | None, list[LayerCost], str,
                                                                        tuple[int, int]]:
    """A NeLF run folder, a JSON config file, a preset name or an ONNX file -> (NeLF config or None, layer costs,
    description, frame size (W, H)). An ONNX file is costed from its own graph, at the size it was exported
    for (``resolution`` is not used): the costs are those of the file that would ship."""
    path = Path(source)
    if path.suffix == ".onnx":
        costs = onnx_layer_costs(path)
        cfg, size = _onnx_network(path, costs)
        return cfg, costs, f"ONNX file {path}", size
    if path.is_dir():
        run = read_json(path / "run.json")
        if run.get("app") != "nelf":
            raise NgfxInputError(str(path / "run.json"), "app", f"not a NeLF run (app = {run.get('app')!r})")
        cfg = student_config(require(run, "nelf_config", str(path / "run.json"), dict), str(path / "run.json"))
        if not isinstance(cfg, NeLFConfig):  # a light slab or a depth oracle: costed from the ONNX file it exports to
            return None, _exported_costs(path, resolution), f"run {path} ({cfg.arch}, costed from its ONNX export)", \
                tuple(resolution)
        described = f"run {path}"
    elif path.suffix == ".json":
        cfg, described = NeLFConfig.from_dict(read_json(path), str(path)), f"config file {path}"
    elif str(source) == "paper" or str(source) in PRESETS:
        cfg, described = preset_for(str(source), resolution), f"preset '{source}'"
    else:
        missing = "" if path.exists() else " (no such file or folder)"
        raise NgfxInputError(str(source), None, f"the source must be a NeLF run folder, a NeLF config JSON (.json), a "
                             f"preset name (paper, {', '.join(PRESETS)}) or an .onnx file{missing}")
    return cfg, layer_costs(cfg, *resolution), described, tuple(resolution)


def _exported_costs(run_dir: Path, resolution: tuple[int, int]) -> list[LayerCost]:
    """Export a run's student to a temporary ONNX file at ``resolution`` and cost that graph."""
    import tempfile

    from ngfx.nelf.onnx_export import export_model
    from ngfx.nelf.runs import load_nelf_run

    model, _ = load_nelf_run(run_dir, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        return onnx_layer_costs(export_model(model, Path(tmp) / "student.onnx", resolution))


def _onnx_network(path: Path, costs: list[LayerCost]) -> tuple[NeLFConfig | None, tuple[int, int]]:
    """The NeLF config an ngfx export records in its metadata (None for other networks), and the frame size:
    a NeLF's output image ``rgb`` [1, 3, H, W] (a depth oracle's last layer is no image), any other network's
    input."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "ngfx.nelf_config" in props:
        cfg = student_config(json.loads(props["ngfx.nelf_config"]), f"{path}: metadata ngfx.nelf_config")
        _, _, h, w = (d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim)
        return (cfg if isinstance(cfg, NeLFConfig) else None), (w, h)
    _, h, w = costs[0].in_shape
    return None, (w, h)


def predict(network: NeLFConfig | list[LayerCost], device_key: str, resolution: tuple[int, int],
            unit: str = "neural_engine", devices: dict | None = None) -> dict:
    """Per-layer and per-frame bounds and estimates (seconds) of one frame at ``resolution`` (W, H) of a NeLF
    config, or of a given layer table (``resolution`` then only labels it)."""
    devices = devices or load_devices()
    device = get_device(devices, device_key)
    costs = layer_costs(network, *resolution) if isinstance(network, NeLFConfig) else network
    scale, cal = calibration_scale(devices)
    rows = [{**c.to_dict(), "roofline_s": roofline_seconds(c, device, unit),
             "uncalibrated_s": model_seconds(c, device, unit), "estimate_s": model_seconds(c, device, unit, scale)}
            for c in costs]
    frame = {k: sum(r[k] for r in rows) for k in ("roofline_s", "uncalibrated_s", "estimate_s")}
    frame["compute_bound_s"] = sum(c.flops for c in costs) / _ceilings(device, unit)[0]
    return {"device": device_key, "unit": unit, "resolution": list(resolution), "layers": rows,
            "totals": totals(costs), "frame": frame, "calibration_scale": scale, "calibration": cal}


def _roofline_figure(pred: dict, device: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    bandwidth = device["memory_bandwidth_gbps"] * 1e9
    x = np.logspace(-1, 4, 200)
    for unit, style in (("neural_engine", "-"), ("gpu", "--")):
        peak = device[unit]["peak_fp16_tflops"] * 1e12
        ax.plot(x, np.minimum(peak, x * bandwidth) / 1e12, style, color="k", lw=1,
                label=f"{unit} roofline ({peak / 1e12:.2f} TFLOP/s, {bandwidth / 1e9:.1f} GB/s)")
    layers = pred["layers"]
    nelf = ("stem", "body", "upsample", "to_rgb")
    groups = {"stem/body": lambda n: n.startswith(("stem", "body")), "super-resolution": lambda n: n.startswith(
        "upsample"), "to_rgb": lambda n: n.startswith("to_rgb"), "layers": lambda n: not n.startswith(nelf)}
    for label, member in groups.items():
        sel = [r for r in layers if member(r["name"])]
        if sel:
            ax.scatter([r["intensity"] for r in sel], [r["flops"] / r["estimate_s"] / 1e12 for r in sel], s=18,
                       label=f"{label} (calibrated estimate)")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOPs / byte, fp16)",
           ylabel="TFLOP/s", title=f"{device['name']}: layers of one {pred['resolution'][0]}x{pred['resolution'][1]} frame")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)  # into the report's temp folder
    plt.close(fig)


def _read_measured(path: str | Path) -> list[dict]:
    data = read_json(path)
    results = []
    for i, r in enumerate(require(data, "results", str(path), list)):
        for key in ("config", "resolution"):
            require(r, key, f"{path}: results[{i}]")
        _number(r, "ms_per_frame", str(path), f"results[{i}]")
        results.append({"device": data.get("device", "GPU"), **r})
    return results


def write_mobile_report(source: str | Path, device: str, resolution: tuple[int, int], out_dir: str | Path,
                        unit: str = "neural_engine", devices_file: str | Path | None = None,
                        measured_h200: str | Path | None = None, heldout: bool = False) -> Path:
    """Write ``report.md``, ``report.html``, ``roofline.png`` and ``report.json`` to ``out_dir`` -> the .md path.
    With ``heldout``, also the latency model's check on published latencies of other networks
    (:mod:`ngfx.nelf.heldout`), a section of the report and ``heldout.json``."""
    import markdown

    # every input is read and every figure computed before anything is written
    devices = load_devices(devices_file)
    cfg, costs, described, resolution = resolve_source(source, resolution)
    pred = predict(costs, device, resolution, unit, devices)
    dev = get_device(devices, device)
    measured = _read_measured(measured_h200) if measured_h200 else []
    text = _markdown(pred, costs, dev, devices, cfg, described, measured)
    held = None
    if heldout:
        from ngfx.nelf import heldout as held_out

        rows = held_out.heldout_rows(devices)
        held = {"rows": rows, "summary": held_out.summary(rows)}
        text += "\n" + "\n".join(held_out.markdown(rows, devices))
    body = markdown.markdown(text, extensions=["tables"])
    with atomic_folder(out_dir) as tmp:
        _roofline_figure(pred, dev, tmp / "roofline.png")
        (tmp / "report.md").write_text(text)
        (tmp / "report.html").write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(dev['name'])} NeLF latency"
            "</title><style>body{font-family:sans-serif;max-width:75em;margin:auto}table{border-collapse:"
            "collapse;font-size:85%}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>"
            f"</head><body>{body}</body></html>\n")
        write_json(tmp / "report.json", {**pred, "config": cfg.to_dict() if cfg else None, "source": described,
                                         "measured_h200": measured})
        if held:
            write_json(tmp / "heldout.json", held)
    return Path(out_dir) / "report.md"


def _markdown(pred: dict, costs: list[LayerCost], dev: dict, devices: dict, cfg: NeLFConfig | None, described: str,
              measured: list) -> str:
    w, h = pred["resolution"]
    t, frame, cal = pred["totals"], pred["frame"], pred["calibration"]
    uses_cal_point = (pred["device"] == cal["device"] and pred["unit"] == cal["unit"] and list(cal["resolution"]) ==
                      [w, h] and preset_for(cal["config"]) == cfg)
    network = (f"upscale x{cfg.upscale}, body {cfg.width} wide x {cfg.n_blocks} blocks, {cfg.n_points} points x "
               f"{cfg.n_freqs} frequencies per ray" if cfg else "costed from its ONNX graph")
    lines = [f"# {'NeLF latency' if cfg else 'Latency'} estimate: {dev['name']}, {pred['unit']}, {w}x{h}", "",
             f"Network: {described}; {t['layers']} layers (convs, transposed convs, fully connected), {network}.", "",
             "## Totals", "", "| quantity | value |", "|---|---|",
             f"| parameters (BatchNorm folded) | {t['params']:,} |",
             f"| storage fp16 / fp32 | {t['storage_mb_fp16']:.3f} MB / {t['storage_mb_fp32']:.3f} MB (1 MB = 10^6 B) |",
             f"| MACs / FLOPs per frame | {t['macs'] / 1e9:.3f} G / {t['flops'] / 1e9:.3f} G |",
             f"| bytes moved per frame (fp16) | {t['bytes_moved'] / 1e6:.1f} MB |",
             f"| compute bound (FLOPs / peak; a true lower bound) | {frame['compute_bound_s'] * 1e3:.2f} ms |",
             f"| roofline, every activation through DRAM | {frame['roofline_s'] * 1e3:.2f} ms |",
             f"| efficiency model, uncalibrated | {frame['uncalibrated_s'] * 1e3:.2f} ms |",
             f"| **calibrated estimate** | **{frame['estimate_s'] * 1e3:.2f} ms** ({1 / frame['estimate_s']:.1f} frames/s) |",
             "", "## Method", "",
             "- Layers are the convs and transposed convs; BatchNorm, GELU and residual adds are fused into them "
             "(BatchNorm folded into weights), as mobile runtimes do. FLOPs = 2 x MACs; bytes moved = weights + "
             "input and output activations at fp16, no cache reuse between layers.",
             "- Compute bound: total FLOPs / peak, reachable only with every operand on chip.",
             "- Roofline per layer (no on-chip reuse between layers, so not a lower bound when the runtime keeps "
             f"activations on chip): max(FLOPs / {dev[pred['unit']]['peak_fp16_tflops']} TFLOP/s, "
             f"bytes / {dev['memory_bandwidth_gbps']} GB/s); layers run in sequence, so the frame bound is the sum.",
             f"- Efficiency model: max(FLOPs / (peak x {dev['efficiency']['compute']}), bytes / (bandwidth x "
             f"{dev['efficiency']['memory']})) / s + {dev['efficiency']['per_layer_overhead_us']} us per layer.",
             f"- Calibration: s = {pred['calibration_scale']:.4f}, fitted on one published point: {cal['source']} "
             f"({cal['config']}, {cal['unit']}). The same s is applied to every device. "
             + ("**This report is that calibration point: its estimate reproduces the published figure by "
                "construction, it is not an independent prediction.**" if uses_cal_point else
                "This report is not the calibration point, so its estimate is a prediction.")
             + (" s > 1 means the published device beats the no-reuse model, i.e. it keeps part of the activations"
                " on chip." if pred["calibration_scale"] > 1 else ""), "",
             "## Device", "", "| unit | peak fp16 | source |", "|---|---|---|"]
    for unit in ("neural_engine", "gpu"):
        lines.append(f"| {unit} | {dev[unit]['peak_fp16_tflops']} TFLOP/s | {dev[unit]['source']} |")
    lines += [f"| memory | {dev['memory_bandwidth_gbps']} GB/s | {dev.get('memory_source', '')} |", "",
              "## Same network on other devices (calibrated estimate, same unit)", "",
              "| device | compute bound | no-reuse roofline | estimate |", "|---|---|---|---|"]
    for key in devices["devices"]:
        p = predict(costs, key, (w, h), pred["unit"], devices)
        lines.append(f"| {key} | {p['frame']['compute_bound_s'] * 1e3:.2f} ms | {p['frame']['roofline_s'] * 1e3:.2f} ms"
                     f" | {p['frame']['estimate_s'] * 1e3:.2f} ms |")
    for r in measured:
        lines.append(f"| {r.get('device', 'GPU')} measured ({r['config']}, {r['resolution']}, {r.get('mode', '')}, "
                     f"{r.get('dtype', '')}, batch 1) | - | - | **{r['ms_per_frame']:.3f} ms measured** |")
    if not measured:
        lines.append("| H200 measured | - | - | not given (pass --measured-h200 with bench_nelf.py's JSON) |")
    lines += ["", "![roofline](roofline.png)", "", "## Layers", "",
              "| # | layer | kind | in (C,H,W) | out (C,H,W) | params | MFLOPs | weights KB | activations KB | "
              "intensity | roofline us | estimate us |", "|" + "---|" * 12]
    for i, r in enumerate(pred["layers"]):
        lines.append(f"| {i} | {r['name']} | {r['kind']} | {tuple(r['in_shape'])} | {tuple(r['out_shape'])} | "
                     f"{r['params']:,} | {r['flops'] / 1e6:.1f} | {r['weight_bytes'] / 1e3:.1f} | "
                     f"{r['activation_bytes'] / 1e3:.1f} | {r['intensity']:.1f} | {r['roofline_s'] * 1e6:.1f} | "
                     f"{r['estimate_s'] * 1e6:.1f} |")
    return "\n".join(lines) + "\n"
