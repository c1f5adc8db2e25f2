"""The demo's report: Markdown first, then the same content as standalone HTML (images by relative path)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import markdown

from ngfx.demo.plan import APPS, DEMO_SIZES
from ngfx.io import atomic_write
from ngfx.nelf.distill import COMPARISON_IMAGE
from ngfx.render.metrics import METRIC_MEANINGS, known_metrics

APP_TITLES = {"gia": "GIA: gigapixel image approximation", "nsdf": "NSDF: neural signed distance function",
              "nvr": "NVR: neural volume rendering", "nerf": "NeRF: neural radiance field",
              "nelf": "NeLF: neural light field distilled from the NeRF"}
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;border:1px solid #ddd;margin:4px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
.gallery img{width:31%;min-width:180px;image-rendering:pixelated}code{background:#f5f5f5;padding:1px 4px}"""


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def _images(out: Path, folder: Path, limit: int = 6) -> str:
    pngs = sorted(folder.glob("*.png"))[:limit] if folder.is_dir() else []
    return "".join(f"![{p.stem}]({p.relative_to(out).as_posix()})\n" for p in pngs)


def plot_training_curve(out: Path, app: str) -> Path | None:
    """runs/APP/curve.json -> plots/curve_APP.png: loss against step and, when the run probed its quality as it
    trained (NeLF distillation), PSNR against minutes."""
    curve = _read(out / "runs" / app / "curve.json")
    pairs = [p for p in curve.get("loss") or []  # [[step, loss], ...]
             if isinstance(p, list) and len(p) == 2 and isinstance(p[1], (int, float)) and p[1] > 0]
    if len(pairs) < 2:
        return None
    probes = [p for p in curve.get("psnr_by_minutes") or [] if isinstance(p, list) and len(p) == 4]
    steps, loss = zip(*pairs)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if probes else 1, figsize=(10 if probes else 5, 3.2), dpi=100, squeeze=False)
    ax = axes[0, 0]
    ax.semilogy(steps, loss, lw=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title(f"{app}: training loss")
    ax.grid(alpha=0.3)
    if probes:
        minutes, _, truth, teacher = zip(*probes)
        ax = axes[0, 1]
        ax.plot(minutes, truth, marker="o", ms=3, label="against ground truth")
        ax.plot(minutes, teacher, marker="o", ms=3, label="against the teacher")
        ax.set_xlabel("minutes")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{app}: quality while training")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out / "plots" / f"curve_{app}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


INTRODUCTION = """\
`ngfx demo` trained the four neural-graphics applications of the NGPC paper on small embedded scenes (no
download), each on a multi-resolution hash grid plus a small MLP: **GIA** learns an image, **NSDF** a signed
distance function of a 3D shape, **NVR** a density-and-colour volume, **NeRF** a radiance field from
photographs of a scene. It then distilled a **NeLF** (a light field network that renders a pixel in one network
evaluation) from the NeRF, rendered every model, recorded a per-kernel trace of one frame of each
application, replayed those traces on the SimPy model of the **NGPC** accelerator cluster, and estimated the
NeLF's latency on a phone. Each section below shows one of these steps.
"""


def _stage_table(status: dict) -> str:
    rows = []
    for name, entry in status.items():
        note = entry.get("error") or entry.get("reason") or ""
        if entry.get("state") == "failed" and entry.get("log"):
            note += f" (traceback: [{entry['log']}]({entry['log']}))"
        rows.append({"stage": name, "state": entry["state"], "seconds": entry.get("seconds", 0.0), "note": note})
    return _table(rows)


def _metric_rows(metrics: dict) -> list[dict]:
    """The metrics a reader can interpret, labelled with their units (see the glossary)."""
    rows = [{"metric": label, "value": value, "unit": unit} for _, label, unit, value in known_metrics(metrics)]
    for key in ("steps", "n_views", "width", "height", "scene", "size"):
        if key in metrics:
            rows.append({"metric": key.replace("n_views", "evaluation views").replace("_", " "), "value": metrics[key],
                         "unit": ""})
    return rows


def _glossary(out: Path) -> str:
    present = set()
    for app in (*APPS, "nelf"):
        present |= set(_read(out / "runs" / app / "metrics.json"))
    rows = [{"metric": label, "unit": unit or "-", "meaning": meaning}
            for key, (label, unit, meaning) in METRIC_MEANINGS.items() if key in present]
    rows.append({"metric": "frame time, FPS, speedup", "unit": "ms, 1/s, x",
                 "meaning": "the simulator's estimate of one frame on the NGPC cluster, and how many times faster "
                            "than the traced frame that is"})
    return _table(rows)


def _why_missing(status: dict, stage: str) -> str:
    entry = status.get(stage, {})
    state = entry.get("state", "not run")
    detail = entry.get("error") or entry.get("reason") or ""
    return f"Nothing to show: stage `{stage}` is {state}{': ' + detail if detail else ''}.\n"


def build_markdown(out: Path, status: dict, size: str, device: str) -> str:
    sizes = DEMO_SIZES[size]
    implication = ("Timings are of this CPU and say nothing about a GPU; the simulator projects the traced "
                   "frames onto the RTX 3090 before replaying them." if device == "cpu" else
                   "Timings are of this GPU.")
    md = ["# ngfx demo report\n",
          f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · size `{size}` on `{device}`\n",
          INTRODUCTION,
          f"**This run**: size `{size}` on `{device}` shows {sizes.shows}. {implication} Other sizes: "
          "`ngfx demo --smoke` (every stage, tiny), `--quick` (the CPU default), `--full` (the GPU default).\n",
          "## Stages\n", _stage_table(status),
          "## What the numbers mean\n", _glossary(out)]
    for app in (*APPS, "nelf"):
        md.append(f"## {APP_TITLES[app]}\n")
        metrics = _read(out / "runs" / app / "metrics.json")
        images = _images(out, out / "renders" / app, limit=3)
        curve = plot_training_curve(out, app)
        if not (metrics or images or curve):
            md.append(_why_missing(status, "distill-nelf" if app == "nelf" else f"train-{app}"))
            continue
        if metrics:
            md.append(_table(_metric_rows(metrics)))
        if images:
            md.append('<div class="gallery" markdown="1">\n\n' + images + "\n</div>\n")
        comparison = out / "runs" / app / COMPARISON_IMAGE
        if app == "nelf" and comparison.is_file():
            md.append("The first evaluation view, left to right: ground truth, the NeRF teacher, the NeLF student.\n\n"
                      f"![ground truth, teacher, student]({comparison.relative_to(out).as_posix()})\n")
        if curve:
            md.append(f"![{app} training curve]({curve.relative_to(out).as_posix()})\n")
    md.append("## NGPC simulator: the traced frames replayed on the cluster model\n")
    md.append("Each application's traced frame, projected onto the RTX 3090 by a per-kernel roofline (a model: the "
              "kernels' FLOPs and bytes against its peaks; a CPU-timed frame says nothing about a GPU by itself), "
              "then replayed on the SimPy model of the NGPC cluster at several cluster sizes (NFPs) and "
              "resolutions: frame time, FPS and speedup over the projected GPU frame. The simulator report opens "
              "with the model's figures against the paper's, fitted and predicted.\n")
    sim = out / "sim"
    csvs = sorted(sim.glob("*.csv"))[:1] if sim.is_dir() else []
    reports = sorted(sim.glob("*.html"))[:1] if sim.is_dir() else []
    plots = _images(out, sim, limit=8)
    if not (csvs or reports or plots):
        md.append(_why_missing(status, "ngpc-sweep"))
    for csv in csvs:
        md.append(f"Full results: [{csv.name}]({csv.relative_to(out).as_posix()})\n")
    for report in reports:
        md.append(f"Simulator report: [{report.name}]({report.relative_to(out).as_posix()})\n")
    md.append(plots)
    md.append("## Mobile latency of the NeLF\n")
    md.append("The NeLF network's frame time on an iPhone 13, estimated from each layer's operations and bytes "
              "against the phone's profile (a model, not a measurement): the demo's student, and the paper's "
              "network for comparison.\n")
    mobile = out / "mobile"
    subs = sorted(p for p in mobile.iterdir() if p.is_dir()) if mobile.is_dir() else []
    if not subs:
        md.append(_why_missing(status, "mobile-report"))
    for sub in subs:
        md.append(f"### {sub.name.replace('_', ' ')}\n")
        for report in sorted(sub.glob("*.html"))[:1]:
            md.append(f"Full report: [{report.name}]({report.relative_to(out).as_posix()})\n")
        frame = _read(sub / "report.json").get("frame", {})
        if frame:
            md.append(_table([{k.replace("_s", " (ms)"): v * 1e3 for k, v in frame.items() if isinstance(v, float)}]))
        md.append(_images(out, sub, limit=2))
    return "\n".join(md)


def write_report(out: Path, status: dict, size: str, device: str) -> Path:
    text = build_markdown(out, status, size, device)
    with atomic_write(out / "report.md", "w") as f:
        f.write(text)
    body = markdown.markdown(text, extensions=["tables", "md_in_html"])
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>ngfx demo report</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")
    path = out / "report.html"
    with atomic_write(path, "w") as f:
        f.write(html)
    return path
