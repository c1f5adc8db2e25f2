"""Train NeRF on Lego for a bounded time, then time 1920x1080 and 3840x2160 frames, fused vs unfused.

For each encoding: a run folder (``runs.train``, so ``ngfx render`` can use it afterwards), PSNR/SSIM on
the val views, frame times (CUDA events on a GPU, median of repeats after a warm-up) with the fused Triton
and the unfused PyTorch "rest" kernels, and the per-category stage times of one recorded frame each way,
so the rest-kernel ratio comes from one process. Writes ``results.md``, ``results.json`` and PNGs under
``--out``. The other three apps are measured by ``bench_render_apps.py`` (same frame/stage timers).

    python benchmarks/bench_render.py --out bench_nerf                  # H200: ~3 min training + ~2 min timing
    python benchmarks/bench_render.py --out bench_nerf --encodings densegrid,lowres --train-seconds 90
    python benchmarks/bench_render.py --out /tmp/smoke --smoke          # CPU check, about a minute
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_render_apps import frame_ms, frame_path, kernel_profile, stage_ms  # noqa: E402

from ngfx.io import write_image, write_json  # noqa: E402
from ngfx.render import runs  # noqa: E402

TARGET_MS = {(1920, 1080): 16.7, (3840, 2160): 33.3}  # the NeRF targets: 60 FPS at 1080p, 30 FPS at 4K


def bench_encoding(encoding: str, scene: str, args) -> dict:
    size = "tiny" if args.smoke else "full"
    run_dir = args.out / f"run_nerf_{encoding}"
    trained = runs.train("nerf", scene, encoding, run_dir, size=size, steps=20 if args.smoke else None,
                         seconds=None if args.smoke else args.train_seconds, device=args.device)
    app = runs.load_run(run_dir, args.device)
    if args.eval_views:  # a bounded, evenly spaced subset of the val views
        n = len(app.eval_poses)
        app.eval_indices = torch.linspace(0, n - 1, min(args.eval_views, n)).round().long().tolist()
    quality = app.evaluate()
    resolutions = [(64, 36), (96, 54)] if args.smoke else list(TARGET_MS)
    if args.resolutions:
        resolutions = [tuple(int(v) for v in r.split("x")) for r in args.resolutions.split(",")]
    timings = []
    for width, height in resolutions:
        fused, frame = frame_ms(app, width, height, True, args.repeats)
        unfused, _ = frame_ms(app, width, height, False, args.repeats)
        fused_stages, unfused_stages = stage_ms(app, width, height, True), stage_ms(app, width, height, False)
        write_image(frame_path(args.out, f"nerf_{encoding}_{width}x{height}", width), frame.cpu().numpy())
        timings.append({"width": width, "height": height, "fused_ms": fused, "unfused_ms": unfused,
                        "target_ms": TARGET_MS.get((width, height)), "fused_stages_ms": fused_stages,
                        "unfused_stages_ms": unfused_stages,
                        "rest_ratio": unfused_stages["rest"] / max(fused_stages["rest"], 1e-9)})
        print(f"nerf {encoding} {width}x{height}: fused {fused:.2f} ms, unfused {unfused:.2f} ms, "
              f"rest {fused_stages['rest']:.2f} / {unfused_stages['rest']:.2f} ms", flush=True)
    profile = {}
    if args.profile:  # where a fused frame's time goes: named stages, then GPU kernels
        width, height = resolutions[0]
        profile = {"stages_ms": stage_ms(app, width, height, True, by="name"),
                   "kernels": kernel_profile(app, width, height)}
        print(f"nerf {encoding} {width}x{height} fused stages (ms):",
              {k: round(v, 2) for k, v in profile["stages_ms"].items()}, "\n" + profile["kernels"], flush=True)
    return {"encoding": encoding, "scene": scene, "profile": profile, "train_seconds": trained["seconds"], "steps": trained["steps"],
            "quality": quality, "timings": timings}


def markdown(results: list[dict], device: str) -> str:
    lines = [f"NeRF on {device}: quality on the val views after bounded training; frame times with fused "
             "and unfused rest kernels (median of repeats); rest-kernel time of one recorded frame each way.", "",
             "| encoding | train s / steps | PSNR dB | SSIM | resolution | fused ms | unfused ms | target ms | met "
             "| rest ms fused / unfused | rest ratio | enc / mlp ms (recorded) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        q = r["quality"]
        for t in r["timings"]:
            f, u = t["fused_stages_ms"], t["unfused_stages_ms"]
            target = t["target_ms"]
            met = "-" if target is None else ("yes" if t["fused_ms"] <= target else f"no ({t['fused_ms'] / target:.1f}x)")
            lines.append(f"| {r['encoding']} | {r['train_seconds']:.0f} / {r['steps']} | {q['psnr_db']:.2f} "
                         f"| {q['ssim']:.3f} | {t['width']}x{t['height']} | {t['fused_ms']:.2f} | {t['unfused_ms']:.2f} "
                         f"| {target if target is not None else '-'} | {met} | {f['rest']:.2f} / {u['rest']:.2f} "
                         f"| {t['rest_ratio']:.2f}x | {f['encoding']:.2f} / {f['mlp']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the synthetic scene, CPU-friendly")
    parser.add_argument("--encodings", default="hashgrid")
    parser.add_argument("--train-seconds", type=float, default=170.0)
    parser.add_argument("--eval-views", type=int, default=None, help="val views to score (default: all)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--scene", default=None, help="dataset path (default: ../shared/scenes/lego, else synthetic)")
    parser.add_argument("--profile", action="store_true", help="also profile one fused frame (stages, kernels)")
    parser.add_argument("--resolutions", default=None, help="e.g. 1920x1080 (default: 1080p and 4K)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--backend", default=None, help="encoding backend (torch|triton|tcnn), else auto")
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["NGFX_BACKEND"] = args.backend
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.repeats = args.repeats or (1 if args.smoke else 5)
    lego = ROOT.parent / "shared" / "scenes" / "lego"
    scene = args.scene or (str(lego) if lego.is_dir() and not args.smoke else "synthetic")
    results = [bench_encoding(encoding, scene, args) for encoding in args.encodings.split(",")]
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    write_json(args.out / "results.json", results)
    table = markdown(results, device)
    with open(args.out / "results.md", "w") as f:  # small text; results.json is the atomic record
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
