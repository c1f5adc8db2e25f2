"""NSDF frames, fused tracer vs the stage-by-stage paths, in one run: train on a mesh, then time 1080p and 4K.

For each size: the stage path with PyTorch rest ops (``fused=False``, the baseline), with the Triton rest
kernels (``per_ray=False``) and the fused tracer (default), CUDA-event medians after a warm-up frame; the
fused frame's agreement with the baseline (silhouette pixels that differ, shading differences where both hit);
network queries per frame of the baseline and of the fused twin (the kernel asks as often); a torch.profiler
kernel table of a fused 4K frame; optionally kernel variants (launch shape, coarse grid, ray source). Writes
``results.json``, ``results.md`` and the fused frames under ``--out``.

    python benchmarks/bench_nsdf.py --out bench_out --mesh <shared>/scenes/meshes/armadillo.obj   # H200
    python benchmarks/bench_nsdf.py --out /tmp/smoke --smoke                                      # CPU check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_render_apps import frame_ms, kernel_profile, patched  # noqa: E402

from ngfx.io import write_image, write_json  # noqa: E402
from ngfx.render.apps import nsdf  # noqa: E402
from ngfx.render.metrics import psnr  # noqa: E402
from ngfx.render.neural_field import fit  # noqa: E402
from ngfx.render.stages import record_stages  # noqa: E402

TARGET_MS = 16.7
PATHS = {"stages (PyTorch rest)": dict(fused=False), "stages (Triton rest)": dict(fused=True, per_ray=False),
         "fused tracer": dict(fused=True, per_ray=True)}
# kernel variants: (label, module constants of triton_fused_sphere_trace, app constants of nsdf)
VARIANTS = [("uncapped registers, 8 programs/SM", {"MAX_REGISTERS": None, "PROGRAMS_PER_SM": 8}, {}),
            ("128 registers, 16 programs/SM", {"MAX_REGISTERS": 128, "PROGRAMS_PER_SM": 16}, {}),
            ("168 registers, 12 programs/SM", {"MAX_REGISTERS": 168, "PROGRAMS_PER_SM": 12}, {}),
            ("64 rows x 2 warps, 32 programs/SM", {"BLOCK": 64, "WARPS": 2, "PROGRAMS_PER_SM": 32}, {}),
            ("near 0.25 cells", {}, {"COARSE_NEAR_CELLS": 0.25}),
            ("32 coarse steps a round", {"COARSE_SUBSTEPS": 32}, {}),
            ("grid 256^3", {}, {"COARSE_RESOLUTION": {"full": 256, "tiny": 24}}),
            ("grid 256^3, 128 registers, 16 programs/SM (the default before 2026-11-30)",
             {"MAX_REGISTERS": 128, "PROGRAMS_PER_SM": 16}, {"COARSE_RESOLUTION": {"full": 256, "tiny": 24}}),
            ("rays read from HBM (band_rays), not made in the kernel", {"KERNEL_RAYS": False}, {})]


def agreement(frame: torch.Tensor, baseline: torch.Tensor) -> dict:
    hit, base_hit = frame.sum(-1) > 0, baseline.sum(-1) > 0
    shading = (frame - baseline)[hit & base_hit].abs().amax(-1).float()
    return {"psnr_db": psnr(frame, baseline), "hit_pct": 100.0 * float(hit.float().mean()),
            "silhouette_pixels_differ": int((hit != base_hit).sum()),
            "shading_median": float(shading.median()) if shading.numel() else 0.0,
            "shading_p99": float(shading.quantile(0.99)) if shading.numel() else 0.0}


def queries(app, width: int, height: int, **path) -> int:
    """Network queries of one frame (the twin's for the fused tracer: the kernel takes the same steps)."""
    with record_stages(app.device_) as records:
        if path.get("per_ray", True) and path.get("fused", True):
            from ngfx.render.ops import fused_sphere_trace

            frame = torch.zeros(height * width, 3, device=app.device_)
            fused_sphere_trace.trace_band(frame, *app.camera(width, height, 0), 0, height, app.trace_scene())
        else:
            app.render(width, height, 0, **path)
    return sum(r.n_inputs for r in records if r.category == "encoding")


def run_variant(app, label: str, kernel_constants: dict, app_constants: dict, sizes, repeats: int,
                baselines: dict) -> dict:
    from ngfx.render.ops import triton_fused_sphere_trace as kernel

    out = {"variant": label}
    constants = {**{(kernel, n): v for n, v in kernel_constants.items()},
                 **{(nsdf, n): v for n, v in app_constants.items()}}
    with patched(constants):
        try:
            for width, height in sizes:
                out[f"{width}x{height}_ms"], frame = frame_ms(app, width, height, True, repeats, per_ray=True)
                out[f"{width}x{height}_agreement"] = agreement(frame, baselines[(width, height)])
        except Exception as error:  # a variant that does not compile or run is reported, not fatal
            out["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--mesh", default=str(ROOT.parent / "shared" / "scenes" / "meshes" / "armadillo.obj"))
    parser.add_argument("--smoke", action="store_true", help="the CSG scene, tiny sizes, CPU-friendly")
    parser.add_argument("--train-seconds", type=float, default=50.0)
    parser.add_argument("--n-train", type=int, default=None, help="training cache size (default: the app's)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--variants", action="store_true", help="also time the kernel variants")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    repeats = args.repeats or (1 if args.smoke else 5)
    sizes = [(64, 36), (96, 54)] if args.smoke else [(1920, 1080), (3840, 2160)]
    start = time.perf_counter()
    scene = "csg" if args.smoke else args.mesh
    # one field per run: the network's initial weights and batches come from torch's global generator, and a smoke
    # field after 5 steps is rough enough that its silhouettes (where the fused tracer and the stage path may part)
    # vary from seed to seed
    torch.manual_seed(0)
    app = nsdf.build_app(scene, "hashgrid", "tiny" if args.smoke else "full", device=device, n_train=args.n_train)
    setup_s = time.perf_counter() - start
    trained = fit(app, steps=5 if args.smoke else None, seconds=None if args.smoke else args.train_seconds)
    result = {"device": torch.cuda.get_device_name() if cuda else "CPU", "scene": scene, "setup_s": setup_s,
              **trained, "quality": app.evaluate(), "frames": []}
    print(f"setup {setup_s:.1f} s, trained {trained['steps']} steps: {result['quality']}", flush=True)
    baselines = {}
    for width, height in sizes:
        row, frames = {"width": width, "height": height}, {}
        for name, path in PATHS.items():
            row[f"{name} ms"], frames[name] = frame_ms(app, width, height, repeats=repeats, **path)
            print(f"{width}x{height} {name}: {row[f'{name} ms']:.2f} ms", flush=True)
        baselines[(width, height)] = baseline = frames["stages (PyTorch rest)"]
        frame = frames["fused tracer"]
        row["agreement"] = agreement(frame, baseline)
        row["agreement_triton_stages"] = agreement(frames["stages (Triton rest)"], baseline)
        write_image(args.out / f"nsdf_fused_{width}x{height}.jpg", frame.cpu().numpy())
        result["frames"].append(row)
    width, height = sizes[0]
    result["queries"] = {"stages": queries(app, width, height, fused=False),
                         "fused": queries(app, width, height), "size": f"{width}x{height}"}
    result["profile"] = kernel_profile(app, *sizes[-1], rows=12, per_ray=True)
    if args.variants:
        result["variants"] = [run_variant(app, *variant, sizes, repeats, baselines) for variant in VARIANTS]
    write_json(args.out / "results.json", result)
    table = markdown(result)
    (args.out / "results.md").write_text(table)
    print(result["profile"])
    print(table)


def markdown(result: dict) -> str:
    lines = [f"NSDF {Path(result['scene']).name} on {result['device']}, {result['steps']} steps: frame ms (median)", "",
             "| frame | " + " | ".join(PATHS)
             + " | fused vs PyTorch stages: PSNR; silhouette px / shading median, p99 |",
             "|---|" + "---|" * (len(PATHS) + 1)]
    for row in result["frames"]:
        a = row["agreement"]
        lines.append(f"| {row['width']}x{row['height']} | " + " | ".join(f"{row[f'{p} ms']:.2f}" for p in PATHS)
                     + f" | {a['psnr_db']:.1f} dB; {a['silhouette_pixels_differ']} px of {a['hit_pct']:.1f} % hit / "
                       f"{a['shading_median']:.4f}, {a['shading_p99']:.3f} |")
    q = result["queries"]
    lines += ["", f"Network queries at {q['size']}: stages {q['stages']:,}, fused {q['fused']:,} "
                  f"({q['stages'] / max(q['fused'], 1):.2f}x fewer)"]
    for v in result.get("variants", []):
        times = ", ".join(f"{k[:-3]} {val:.2f} ms" for k, val in v.items() if k.endswith("_ms"))
        lines.append(f"- variant {v['variant']}: {times or ''} {v.get('error', '')}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
