"""The demo's report: Markdown first, then the same content as standalone HTML (images by relative path)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import markdown

from ngfx.io import atomic_write

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
    """runs/APP/curve.json -> plots/curve_APP.png (loss and, when logged, PSNR against step)."""
    pairs = _read(out / "runs" / app / "curve.json").get("loss") or []  # [[step, loss], ...]
    pairs = [p for p in pairs if isinstance(p, list) and len(p) == 2 and isinstance(p[1], (int, float)) and p[1] > 0]
    if len(pairs) < 2:
        return None
    steps, loss = zip(*pairs)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.semilogy(steps, loss, lw=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title(f"{app}: training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "plots" / f"curve_{app}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


def build_markdown(out: Path, status: dict, size: str, device: str) -> str:
    md = ["# ngfx demo report\n",
          f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · size `{size}` · device `{device}`\n",
          "## Stages\n",
          _table([{"stage": name, "state": e["state"], "seconds": e.get("seconds", 0.0),
                   "note": e.get("error") or e.get("reason") or ""} for name, e in status.items()])]
    for app in ("gia", "nsdf", "nvr", "nerf", "nelf"):
        md.append(f"## {APP_TITLES[app]}\n")
        metrics = _read(out / "runs" / app / "metrics.json")
        if metrics:
            flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
            md.append(_table([flat]))
        md.append('<div class="gallery" markdown="1">\n\n' + _images(out, out / "renders" / app, limit=3) + "\n</div>\n")
        curve = plot_training_curve(out, app)
        if curve:
            md.append(f"![{app} training curve]({curve.relative_to(out).as_posix()})\n")
    md.append("## NGPC simulator: the traced frames on the cluster model\n")
    md.append("The frames traced here are projected onto the RTX 3090 by a per-kernel roofline (a model: "
              "FLOPs and bytes against its peaks) and replayed with an NGPC beside it; the simulator report opens "
              "with its figures against the paper's, fitted and predicted.\n")
    sim = out / "sim"
    for csv in sorted(sim.glob("*.csv"))[:1] if sim.is_dir() else []:
        md.append(f"Full results: [{csv.name}]({csv.relative_to(out).as_posix()})\n")
    for report in sorted(sim.glob("*.html"))[:1] if sim.is_dir() else []:
        md.append(f"Simulator report: [{report.name}]({report.relative_to(out).as_posix()})\n")
    md.append(_images(out, sim, limit=8))
    md.append("## Mobile latency of the NeLF\n")
    mobile = out / "mobile"
    for sub in sorted(p for p in mobile.iterdir() if p.is_dir()) if mobile.is_dir() else []:
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
