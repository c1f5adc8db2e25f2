"""Plots and a Markdown/HTML report of a sweep: where the GPU's frame time goes, speedup vs NFPs, FPS vs
resolution, one frame's timeline."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ngfx.io import atomic_write  # noqa: E402
from ngfx.ngpc_sim.config import NGPCConfig, load_config, parameter_sources  # noqa: E402
from ngfx.ngpc_sim.model import MODEL_ASSUMPTIONS, simulate  # noqa: E402
from ngfx.ngpc_sim.trace import Trace  # noqa: E402

FPS_LINES = (30, 60, 120)


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def _series(rows, key_fields, x, y, **where):
    out = defaultdict(list)
    for r in rows:
        if all(r[k] == v for k, v in where.items()):
            out[tuple(r[k] for k in key_fields)].append((r[x], r[y]))
    return {k: sorted(v) for k, v in sorted(out.items())}


def plot_speedup(rows: list[dict], path: Path, width: int, height: int) -> None:
    """Speedup vs scaling factor, one panel per encoding, one line per app, dashed Amdahl bounds."""
    encodings = sorted({r["encoding"] for r in rows})
    fig, axes = plt.subplots(1, len(encodings), figsize=(5 * len(encodings), 4.2), squeeze=False, sharey=True)
    for ax, enc in zip(axes[0], encodings):
        ngpc = [r for r in rows if r["scale"] > 0]
        for i, ((app,), pts) in enumerate(_series(ngpc, ("app",), "scale", "speedup", encoding=enc, width=width, height=height).items()):
            color = f"C{i}"
            ax.plot(*zip(*pts), "o-", color=color, label=app)
            bound = next(r["amdahl_bound"] for r in ngpc if r["app"] == app and r["encoding"] == enc)
            ax.axhline(bound, color=color, ls="--", lw=1, alpha=0.7)
        ax.set_xscale("log", base=2)
        ax.set_xticks([8, 16, 32, 64], ["8", "16", "32", "64"])
        ax.set_title(f"{enc.replace('_', ' ')} ({width}x{height})")
        ax.set_xlabel("scaling factor (NFPs)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("speedup over the GPU (dashed: Amdahl bound)")
    axes[0][-1].legend(title="app")
    save_figure(fig, path)


def plot_fps(rows: list[dict], path: Path, scale: int) -> None:
    """FPS vs resolution at one scaling factor, per app and encoding, with 30/60/120 FPS lines."""
    encodings = sorted({r["encoding"] for r in rows})
    fig, axes = plt.subplots(1, len(encodings), figsize=(5 * len(encodings), 4.2), squeeze=False, sharey=True)
    for ax, enc in zip(axes[0], encodings):
        sel = [dict(r, pixels=r["width"] * r["height"]) for r in rows if r["encoding"] == enc]
        for i, ((app,), pts) in enumerate(_series(sel, ("app",), "pixels", "fps", scale=scale).items()):
            ax.plot(*zip(*pts), "o-", color=f"C{i}", label=f"{app}, NGPC")
        for i, ((app,), pts) in enumerate(_series(sel, ("app",), "pixels", "fps", scale=0).items()):
            ax.plot(*zip(*pts), "x:", color=f"C{i}", alpha=0.6, label=f"{app}, GPU")
        for fps in FPS_LINES:
            ax.axhline(fps, color="grey", lw=0.8, ls="--")
            # labels between the first two resolutions, where the lines are furthest from the data points
            ticks_px = sorted({r["pixels"] for r in sel})
            x_label = (ticks_px[0] * ticks_px[min(1, len(ticks_px) - 1)]) ** 0.5
            ax.text(x_label, fps * 1.06, f"{fps} FPS", fontsize=7, color="dimgrey", ha="center")
        ticks = sorted({r["pixels"] for r in sel})
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks, [next(f"{r['width']}x{r['height']}" for r in sel if r["pixels"] == t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(f"{enc.replace('_', ' ')}, {scale} NFPs")
        ax.set_xlabel("resolution")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("frames per second")
    axes[0][-1].legend(fontsize=7, ncol=2)
    save_figure(fig, path)


BREAKDOWN_COLOURS = {"encoding": "C0", "mlp": "C2", "rest": "C3"}  # as the timeline's lanes


def plot_breakdown(traces: list[Trace], path: Path) -> list[dict]:
    """Each trace's GPU frame time split into encoding, MLP and rest kernels (the shares that bound the
    NGPC's speedup, as Amdahl says) -> one row per trace: label, ms per category, shares."""
    rows = []
    for t in traces:
        ms = {c: t.frame_time_s() * t.share(c) * 1e3 for c in BREAKDOWN_COLOURS}
        rows.append({"label": f"{t.app or '?'} {t.encoding.replace('_', ' ')} {t.width}x{t.height} ({t.rest} rest)",
                     **{f"{c}_ms": v for c, v in ms.items()}, **{f"{c}_share": t.share(c) for c in ms}})
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    for y, row in enumerate(rows):
        total = sum(row[f"{c}_ms"] for c in BREAKDOWN_COLOURS)
        left = 0.0
        for c, colour in BREAKDOWN_COLOURS.items():
            share = row[f"{c}_ms"] / total if total else 0.0
            ax.barh(y, share, left=left, color=colour, label=c if y == 0 else None)
            if share > 0.06:
                ax.text(left + share / 2, y, f"{share:.0%}", ha="center", va="center", color="white", fontsize=8)
            left += share
        ax.text(1.01, y, f"{total:,.0f} ms" if total >= 100 else f"{total:.3g} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the traced GPU frame time")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    save_figure(fig, path)
    return rows


def plot_timeline(trace: Trace, cfg: NGPCConfig, path: Path, max_nfps_shown: int = 4) -> dict:
    """One frame's utilisation timeline: SMs, memory, and the first few NFPs' encoding and MLP engines."""
    result = simulate(trace, cfg, record_timeline=True)
    lanes = ["gpu_sms", "memory"] + [f"{u}{i}" for i in range(min(cfg.n_nfps, max_nfps_shown)) for u in ("enc", "mlp")]
    colors = {"gpu_sms": "C3", "memory": "C7", "enc": "C0", "mlp": "C2"}
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(lanes) + 1.5))
    for y, lane in enumerate(lanes):
        spans = [(s * 1e3, (e - s) * 1e3) for name, s, e in result.timeline if name == lane]
        ax.broken_barh(spans, (y - 0.4, 0.8), color=colors.get(lane.rstrip("0123456789"), "C7"))
    ax.set_yticks(range(len(lanes)), [l.replace("enc", "NFP enc ").replace("mlp", "NFP mlp ") for l in lanes])
    ax.invert_yaxis()
    ax.set_xlabel("time in frame (ms)")
    util = ", ".join(f"{k} {v:.0%}" for k, v in result.utilisation.items())
    ax.set_title(f"{trace.app} {trace.encoding.replace('_', ' ')} {trace.width}x{trace.height}, {cfg.n_nfps} NFPs: "
                 f"{result.frame_s * 1e3:.2f} ms\nutilisation: {util}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)
    return result.row()


def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot_pareto(rows: list[dict], path: Path, width: int, height: int) -> list[dict]:
    """Mean speedup over apps vs GPU + NGPC area, one point per encoding (and traced rest) and scale; the Pareto
    front (no other point is both faster and smaller) joined by a line. Returns the points with per-mm^2 and per-W figures."""
    groups = defaultdict(list)
    for r in rows:
        if r["scale"] > 0 and (r["width"], r["height"]) == (width, height):
            groups[(_traced(r), r["scale"])].append(r)
    points = []
    for (enc, scale), rs in sorted(groups.items()):
        speedup = sum(r["speedup"] for r in rs) / len(rs)
        area, power = rs[0]["area_mm2"], rs[0]["power_w"]
        points.append({"encoding": enc, "scale": scale, "mean speedup": speedup, "area_mm2": area, "power_w": power,
                       "speedup per mm2": speedup / area, "speedup per W": speedup / power})
    def key(p):
        return p["mean speedup"], p["area_mm2"]

    front = [p for p in points if not any(q["mean speedup"] >= p["mean speedup"] and q["area_mm2"] <= p["area_mm2"]
                                          and key(q) != key(p) for q in points)]
    for p in points:
        p["pareto"] = p in front
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, enc in enumerate(sorted({p["encoding"] for p in points})):
        sel = [p for p in points if p["encoding"] == enc]
        ax.plot([p["area_mm2"] for p in sel], [p["mean speedup"] for p in sel], "o", color=f"C{i}",
                label=enc.replace("_", " "))
        for p in sel:
            ax.annotate(str(p["scale"]), (p["area_mm2"], p["mean speedup"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    front.sort(key=lambda p: p["area_mm2"])
    ax.plot([p["area_mm2"] for p in front], [p["mean speedup"] for p in front], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("GPU + NGPC area (mm^2; NFP area fitted to the paper's two points)")
    ax.set_ylabel(f"mean speedup over apps ({width}x{height})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return points


def _traced(row: dict, key: str = "encoding") -> str:
    """A row's ``key`` (its encoding or app), with "fused rest traced" when the traced renderer ran fused rest
    kernels: such traces leave the NGPC far less to speed up, so they are averaged apart from the unfused ones."""
    traced = {"fused": " (fused rest traced)", "per_ray": " (per-ray frame traced)"}
    return row[key] + traced.get(row.get("traced_rest"), "")


PAPER_BASELINE_MS = {("nerf", 1920, 1080): 231.0}  # NeRF, hash grid, RTX 3090 (paper, body: secondary)


def projection_rows(pairs: list[tuple[Trace, Trace]], gpu_name: str) -> list[dict]:
    """Recorded traces (scaled to 1920x1080) beside their roofline projection onto ``gpu_name``."""
    rows = []
    for recorded, projected in pairs:
        paper = PAPER_BASELINE_MS.get((recorded.app, 1920, 1080)) if "3090" in gpu_name else None
        rows.append({"trace": f"{recorded.app} {recorded.encoding} ({recorded.rest} rest)",
                     "recorded on": f"{recorded.device} ({recorded.timer})",
                     "recorded ms (1080p)": recorded.frame_time_s() * 1e3,
                     f"projected ms on {gpu_name} (1080p)": projected.frame_time_s() * 1e3,
                     "paper's ms (1080p)": "-" if paper is None else paper})
    return rows


def write_report(results: list[dict], out_dir: str | Path, traces: list[Trace] | None = None,
                 cfg: NGPCConfig | None = None, calibration: list[dict] | None = None,
                 sensitivity: list[dict] | None = None, notes: str = "", rest_speedups: dict | None = None,
                 projection: list[tuple[Trace, Trace]] | None = None) -> Path:
    """Plots (PNG), report.md and report.html in ``out_dir``; returns the Markdown path.

    ``results``: rows from :func:`~ngfx.ngpc_sim.sweep.run_sweep`. ``traces``: the swept traces, for the
    breakdown of their frame time and one frame's timeline (the first, at its own resolution, at 16 NFPs);
    a report rebuilt from ``sweep.json`` alone has neither. ``calibration``: the fitted-vs-predicted rows
    (:func:`~ngfx.ngpc_sim.calibrate.calibration_table`), the report's first table; ``sensitivity``: rows of
    :func:`~ngfx.ngpc_sim.sensitivity.sensitivity_table`; ``rest_speedups``: the per-app fused-rest ratios
    used; ``projection``: (recorded, projected) trace pairs.
    """
    import markdown

    from ngfx.ngpc_sim.calibrate import table_markdown
    from ngfx.ngpc_sim.sensitivity import HEADLINE_SCALES, plot_tornado

    cfg = cfg or load_config()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolutions = sorted({(r["width"], r["height"]) for r in results}, key=lambda wh: wh[0] * wh[1])
    scales = sorted({r["scale"] for r in results if r["scale"] > 0})
    base_w, base_h = resolutions[0]
    # a fused trace of an app is its own line beside the unfused one
    labelled = [dict(r, app=_traced(r, "app")) for r in results]
    plot_speedup(labelled, out_dir / "speedup_vs_scale.png", base_w, base_h)
    plot_fps(labelled, out_dir / "fps_vs_resolution.png", scales[-1])
    parts = ["# NGPC simulator: sweep report",
             "What this is: an analytical event model (SimPy) of an NGPC cluster beside a GPU, replaying traced or "
             "paper-derived frames. It is evidence of what the paper's published figures imply under the stated "
             "assumptions, and of which assumption each result hangs on; it is not a measurement of hardware and "
             "not a cycle-accurate simulation."]
    if calibration:
        parts += ["## Fitted vs predicted: the paper-input model against the paper's published figures",
                  table_markdown(calibration)]
    if sensitivity:
        plot_tornado(sensitivity, out_dir / "sensitivity.png")
        cols = ["assumption", "low", "high"] + [f"{end}_{s}" for s in HEADLINE_SCALES
                                                for end in ("low", "base", "high")]
        parts += ["## Sensitivity: the hash-grid mean speedup with each assumption moved, one at a time",
                  "No refit: a wide bar is an assumption the headline hangs on.", "![sensitivity](sensitivity.png)",
                  _table(sensitivity, cols)]
    if all("area_mm2" in r for r in results):
        points = plot_pareto(results, out_dir / "pareto.png", base_w, base_h)
        parts += [f"## Speedup per area and power ({cfg.gpu.name}: {cfg.gpu.die_mm2:g} mm^2, {cfg.gpu.tdp_w:g} W; "
                  f"{cfg.area_pct_per_nfp:g} % area and {cfg.power_pct_per_nfp:g} % power per NFP)",
                  "![pareto](pareto.png)",
                  _table(points, ["encoding", "scale", "mean speedup", "area_mm2", "power_w", "speedup per mm2",
                                  "speedup per W", "pareto"])]
    if projection:
        prows = projection_rows(projection, cfg.gpu.name)
        parts += [f"## The traces projected onto the {cfg.gpu.name} (per-kernel roofline: a model)",
                  _table(prows, list(prows[0]))]
    if rest_speedups:
        parts += ["## Fused-rest speedup per app (measured: unfused / fused rest time per pixel)",
                  _table([{"app": a, "rest speedup": v} for a, v in sorted(rest_speedups.items())],
                         ["app", "rest speedup"])]
    parts += [f"GPU profile: {cfg.gpu.name}; rest kernels {cfg.rest_mode}"
              + (f" ({cfg.fused_rest_speedup}x unless measured per app)" if cfg.rest_mode == "fused" else "")
              + f"; {len(results)} points. Traces recorded with fused rest kernels (`ngfx trace --fused`) are "
              "replayed with those kernels as timed.",
              "## Speedup vs scaling factor", "![speedup](speedup_vs_scale.png)",
              "## FPS vs resolution", "![fps](fps_vs_resolution.png)"]
    if traces:
        plot_breakdown(traces, out_dir / "breakdown.png")
        plot_timeline(traces[0], cfg.replace(n_nfps=16), out_dir / "timeline.png")
        parts += ["## Where the traced frame time goes", "![breakdown](breakdown.png)",
                  "## One frame, 16 NFPs", "![timeline](timeline.png)"]
    mean = defaultdict(list)
    for r in results:
        if r["scale"] > 0 and (r["width"], r["height"]) == (base_w, base_h):
            mean[(_traced(r), r["scale"])].append(r["speedup"])
    parts += [f"## Mean speedup over apps at {base_w}x{base_h}",
              _table([{"encoding": e, "scale": s, "mean speedup": sum(v) / len(v)} for (e, s), v in sorted(mean.items())],
                     ["encoding", "scale", "mean speedup"]),
              "## All points",
              _table(results, [c for c in ("app", "encoding", "timer", "width", "height", "scale", "baseline_s", "frame_s",
                                           "fps", "speedup", "amdahl_bound", "rest_speedup", "util_gpu_sms",
                                           "util_encoding_engines", "util_mlp_engines", "util_memory")
                               if all(c in r for r in results)]),
              "## Model assumptions", "\n".join(f"- {a}" for a in MODEL_ASSUMPTIONS),
              "## Model parameters",
              _table([{"parameter": k, "value": v, "source": s} for k, (v, s) in parameter_sources().items()],
                     ["parameter", "value", "source"]),
              notes]
    text = "\n\n".join(p for p in parts if p) + "\n"
    md_path = out_dir / "report.md"
    with atomic_write(md_path, "w") as f:
        f.write(text)
    html = markdown.markdown(text, extensions=["tables"])
    with atomic_write(out_dir / "report.html", "w") as f:
        f.write(f"<!doctype html><meta charset='utf-8'><title>NGPC sweep</title>"
                f"<style>body{{font-family:sans-serif;max-width:70em;margin:auto}}table{{border-collapse:collapse}}"
                f"td,th{{border:1px solid #ccc;padding:2px 6px}}img{{max-width:100%}}</style>{html}")
    return md_path
