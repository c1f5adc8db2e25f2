"""The latency model checked on held-out data: published on-device latencies of networks it was not fitted to.

Each point of ``heldout_latencies.json`` names a network of :mod:`ngfx.nelf.reference_networks`, a device and a
published latency. The network is exported to ONNX and costed from that graph (as any shipped model is), then
estimated with the model calibrated on the one MobileR2L point; the calibration point itself never enters the
error. Error = (estimate - published) / published.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from importlib import resources
from pathlib import Path

import torch

from ngfx.nelf.layer_costs import onnx_layer_costs
from ngfx.nelf.mobile_report import load_devices, predict
from ngfx.nelf.onnx_export import export_onnx
from ngfx.nelf.reference_networks import build


def load_points() -> list[dict]:
    return json.loads(resources.files("ngfx.nelf").joinpath("heldout_latencies.json").read_text())["points"]


def heldout_rows(devices: dict | None = None, points: list[dict] | None = None) -> list[dict]:
    """One row per published point: the estimate, the uncalibrated model, the compute bound and the errors."""
    devices = devices or load_devices()
    points = points if points is not None else load_points()
    cal = devices["calibration"]
    rows, costs_of = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in points:
            if (p["network"], p["device"]) == (cal["config"], cal["device"]):
                continue  # the calibration point is never held out
            key = (p["network"], tuple(p["resolution"]))
            if key not in costs_of:
                w, h = p["resolution"]
                path = export_onnx(build(p["network"]), torch.zeros(1, 3, h, w), Path(tmp) / f"{p['network']}.onnx")
                costs_of[key] = onnx_layer_costs(path)
            pred = predict(costs_of[key], p["device"], tuple(p["resolution"]), p["unit"], devices)
            estimate_ms, measured = pred["frame"]["estimate_s"] * 1e3, p["latency_ms"]
            rows.append({**p, "layers": pred["totals"]["layers"], "gflops": pred["totals"]["flops"] / 1e9,
                         "params_m": pred["totals"]["params"] / 1e6, "estimate_ms": estimate_ms,
                         "uncalibrated_ms": pred["frame"]["uncalibrated_s"] * 1e3,
                         "compute_bound_ms": pred["frame"]["compute_bound_s"] * 1e3,
                         "error": estimate_ms / measured - 1,
                         "uncalibrated_error": pred["frame"]["uncalibrated_s"] * 1e3 / measured - 1})
    return rows


def summary(rows: list[dict]) -> dict:
    """Median and worst |error| over the held-out points, calibrated and uncalibrated."""
    out = {"points": len(rows)}
    for key in ("error", "uncalibrated_error"):
        errors = [abs(r[key]) for r in rows]
        worst = max(rows, key=lambda r: abs(r[key]))
        out[key] = {"median_abs": statistics.median(errors), "worst_abs": abs(worst[key]),
                    "worst_network": worst["network"], "worst_latency_ms": worst["latency_ms"]}
    return out


def markdown(rows: list[dict], devices: dict) -> list[str]:
    """The report section: every held-out point, then the median and worst error."""
    cal, s = devices["calibration"], summary(rows)
    lines = ["## Held-out check", "",
             f"The model is calibrated on one point ({cal['source']}); these published latencies of other networks "
             "were not used to fit it. Each network is exported to ONNX and costed from that graph.", "",
             "| network | device | unit | layers | GFLOPs | params | published | estimate | error | uncalibrated | "
             "error | source |", "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['network']} | {r['device']} | {r['unit']} | {r['layers']} | {r['gflops']:.2f} | "
                     f"{r['params_m']:.1f} M | {r['latency_ms']:.2f} ms | {r['estimate_ms']:.2f} ms | "
                     f"{r['error']:+.0%} | "
                     f"{r['uncalibrated_ms']:.2f} ms | {r['uncalibrated_error']:+.0%} | {r['source']} |")
    e, u = s["error"], s["uncalibrated_error"]
    lines += ["", f"Calibrated estimate over {s['points']} held-out points: median |error| {e['median_abs']:.0%}, "
              f"worst {e['worst_abs']:.0%} ({e['worst_network']}, {e['worst_latency_ms']} ms published). "
              "Uncalibrated: median "
              f"{u['median_abs']:.0%}, worst {u['worst_abs']:.0%}.", ""]
    return lines
