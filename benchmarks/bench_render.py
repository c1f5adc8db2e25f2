"""Train NeRF on Lego for a bounded time, then time 1920x1080 and 3840x2160 frames: the fused per-ray
renderer against the stage-by-stage kernels it replaces (and the unfused PyTorch ops), in one run.

For each encoding: a run folder (``runs.train``, so ``ngfx render`` can use it afterwards), PSNR/SSIM on
the val views rendered per ray and stage by stage, frame times (CUDA events on a GPU, median of repeats after
a warm-up) and field samples per frame each way, and the per-category stage times of one recorded frame
with the stage-by-stage Triton and PyTorch "rest" kernels, so the rest-kernel ratio comes from one process.
``--profile``: the GPU kernels of a per-ray frame and what bounds its kernel (achieved MLP FLOP/s and hash
gathers per second). ``--dense-seconds``: the same timings on dense-background scenes (``--dense-scene``, built by
``dense_scenes.py``: Lego over a textured backdrop on the scene box's walls, or inside a textured room written and
loaded as an instant-ngp capture), trained that long; then each occupancy grid dilated until ``DENSE_OCCUPIED`` of
it is occupied, as in the issue's real capture. ``--sweep``: settings of the per-ray kernel (launch shape, scan
iterations per round). Writes ``results.md``, ``results.json`` and PNGs under ``--out``. The other three apps are
measured by ``bench_render_apps.py`` (same frame/stage timers).

    python benchmarks/bench_render.py --out bench_nerf                  # H200: ~3 min training + ~2 min timing
    python benchmarks/bench_render.py --out bench_nerf --encodings densegrid,lowres --train-seconds 90
    python benchmarks/bench_render.py --out /tmp/smoke --smoke          # CPU check, about a minute
    python benchmarks/bench_render.py --out dense --encodings '' --dense-seconds 60 --dense-scene both --skip-unfused
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_render_apps import (PER_RAY_HEADER, frame_ms, frame_path, kernel_profile, kernel_table,  # noqa: E402
                               patched, per_ray_markdown, per_ray_timings, positive_ints, profiled_frame, rest_cells,
                               rest_ratio, samples_per_frame)
import dense_scenes  # noqa: E402

from ngfx.io import atomic_write, write_image, write_json  # noqa: E402
from ngfx.render import runs  # noqa: E402
from ngfx.render.apps import nerf  # noqa: E402
from ngfx.render.neural_field import fit  # noqa: E402
from ngfx.render.ops.occupancy import dilate  # noqa: E402

TARGET_MS = {(1920, 1080): 16.7, (3840, 2160): 33.3}  # the NeRF targets: 60 FPS at 1080p, 30 FPS at 4K
DENSE_TARGET_MS = {(1920, 1080): 33.0}  # the real capture (background everywhere) at 1080p
DENSE_OCCUPIED = 0.67  # the real capture: 67 % of its occupancy grid occupied
# settings of the per-ray kernel (triton_fused_volume's module constants) to sweep, each against the defaults;
# 64 lanes x 4 warps and up select wgmma, which gave wrong results in the project's MLP kernels (triton_mlp)
SWEEP = [{}, {"SCAN_PER_ROUND": 2}, {"SCAN_PER_ROUND": 8}, {"SCAN_PER_ROUND": 128}, {"BLOCK": 32, "WARPS": 2},
         {"PROGRAMS_PER_SM": 8}]


def limit_eval_views(app, n_views: int | None) -> None:
    """Score a bounded, evenly spaced subset of the val views."""
    if n_views:
        n = len(app.eval_poses)
        app.eval_indices = torch.linspace(0, n - 1, min(n_views, n)).round().long().tolist()


def field_work(app) -> dict:
    """Per field sample: MLP FLOPs, and 32-byte L2 sectors gathered from the hash table (one per corner per level)."""
    from ngfx.ngpc_sim import costs  # the simulator's cost model (FLOPs per weight), imported for --profile only

    cfg = app.field.density_net.encoding.cfg
    layers = app.field.density_net.network.cfg.layer_shapes + app.field.colour_net.cfg.layer_shapes
    return {"mlp_flops": costs.fused_mlp(1, layers).flops, "gather_sectors": cfg.n_levels * 2 ** cfg.n_dims}


def bound(app, row: dict) -> dict:
    """What the per-ray frame of a :func:`per_ray_timings` row achieved: MLP TFLOP/s and hash-gather sectors/s."""
    work, seconds = field_work(app), row["per_ray_ms"] / 1e3
    return {"samples": row["per_ray_samples"], "mlp_tflops": row["per_ray_samples"] * work["mlp_flops"] / seconds / 1e12,
            "gather_gsectors_per_s": row["per_ray_samples"] * work["gather_sectors"] / seconds / 1e9,
            "gather_tb_per_s": row["per_ray_samples"] * work["gather_sectors"] * 32 / seconds / 1e12}


def bench_encoding(encoding: str, scene: str, args) -> dict:
    size = "tiny" if args.smoke else "full"
    run_dir = args.out / f"run_nerf_{encoding}"
    trained = runs.train("nerf", scene, encoding, run_dir, size=size, steps=20 if args.smoke else None,
                         seconds=None if args.smoke else args.train_seconds, device=args.device)
    app = runs.load_run(run_dir, args.device)
    limit_eval_views(app, args.eval_views)
    quality, stage_quality = app.evaluate(per_ray=True), app.evaluate()
    print(f"nerf {encoding} PSNR per-ray {quality['psnr_db']:.3f} dB, stage by stage {stage_quality['psnr_db']:.3f} dB",
          flush=True)
    resolutions = [(64, 36), (96, 54)] if args.smoke else list(TARGET_MS)
    if args.resolutions:
        resolutions = [tuple(int(v) for v in r.split("x")) for r in args.resolutions.split(",")]
    timings = per_ray_timings(app, resolutions, args.repeats)
    for t in timings:
        width, height = t["width"], t["height"]
        frame = app.render(width, height, 0, per_ray=True)
        write_image(frame_path(args.out, f"nerf_{encoding}_{width}x{height}", width), frame.cpu().numpy())
        if not args.skip_unfused:  # the PyTorch ops, and the rest kernels' share each way
            t["unfused_ms"], _ = frame_ms(app, width, height, False, args.repeats)
            t["stage_stages_ms"], t["unfused_stages_ms"], t["rest_ratio"] = rest_ratio(app, width, height)
    profile = {}
    if args.profile:  # where a per-ray frame's time goes (GPU kernels) and what bounds its kernel
        width, height = resolutions[0]
        profile = {"kernels": kernel_profile(app, width, height, per_ray=True), "bound": bound(app, timings[0]),
                   "field_work": field_work(app)}
        print(f"nerf {encoding} {width}x{height} per-ray frame:", profile["bound"], "\n" + profile["kernels"], flush=True)
        # the stage-by-stage frame's kernels and host ops, at the default render grid, from one profiled frame
        averages = profiled_frame(app, width, height, per_ray=False)
        profile["stage_kernels"] = kernel_table(app, averages)
        profile["stage_host"] = averages.table(sort_by="self_cpu_time_total", row_limit=25)
        print(f"nerf {encoding} {width}x{height} stage-by-stage frame:\n" + profile["stage_kernels"]
              + profile["stage_host"], flush=True)
    if args.sweep:
        profile["sweep"] = sweep_kernel_settings(app, *resolutions[0], args.repeats)
    render_grids = sweep_render_grid(app, resolutions, args.render_subs, args.repeats) if args.render_subs else []
    knobs = sweep_knobs(app, resolutions, args.knobs, args.repeats) if args.knobs else []
    return {"encoding": encoding, "scene": scene, "profile": profile, "train_seconds": trained["seconds"],
            "steps": trained["steps"], "quality": quality, "stage_quality": stage_quality, "timings": timings,
            "render_grids": render_grids, "knobs": knobs}


def sweep_knobs(app, resolutions: list[tuple[int, int]], settings: list[dict], repeats: int) -> list[dict]:
    """Stage-by-stage frame times, samples and val PSNR with each setting of module constants (``{"module.NAME":
    value}``, modules under ngfx.render), each restored afterwards; the first setting is usually ``{}``. Only
    constants read when a frame is rendered count (not those copied into the app when it was built, nor names a
    Triton module imported by value)."""
    rows = []
    for setting in settings:
        with patched({knob(key): value for key, value in setting.items()}):
            app.refresh_render_grid()  # a setting of the render grid's constants applies from here on
            row = {"setting": setting, "quality": app.evaluate(), "timings": []}
            for width, height in resolutions:
                ms, _ = frame_ms(app, width, height, True, repeats)
                row["timings"].append({"width": width, "height": height, "stage_ms": ms,
                                       "stage_samples": samples_per_frame(app, width, height, False)})
        rows.append(row)
        print("knobs", setting, f"PSNR {row['quality']['psnr_db']:.3f} dB", *(
            f"{t['width']}x{t['height']} {t['stage_ms']:.2f} ms {t['stage_samples'] / 1e6:.1f} M" for t in row["timings"]),
            flush=True)
    return rows


def knob(key: str) -> tuple:
    """``"module.NAME"`` of ``--knobs`` -> (the module under ngfx.render, or named in full from ``ngfx.``, NAME); an
    unknown one is a ValueError."""
    module_name, name = key.rpartition(".")[::2]
    try:  # under ngfx.render, or a full name (ngfx.encodings.triton_grid.FORWARD_BLOCK)
        module = importlib.import_module(module_name if module_name.startswith("ngfx.") else f"ngfx.render.{module_name}")
    except (ImportError, ValueError):
        module = None
    if not hasattr(module, name):
        raise ValueError(f"--knobs: no constant {key!r} under ngfx.render (e.g. apps.nerf.MIN_TRANSMITTANCE)")
    return module, name


def sweep_render_grid(app, resolutions: list[tuple[int, int]], subs: list[int], repeats: int) -> list[dict]:
    """Per fine cells per axis of the render grid (``subs``, e.g. [1, 2, 4]; 1: the training grid): its build time,
    PSNR on the val views, and per resolution the stage-by-stage and per-ray frame times and samples."""
    rows = []
    for sub in subs:
        with patched({(app, "render_sub"): sub}):
            start = time.perf_counter()
            app.refresh_render_grid()
            if app.device_.type == "cuda":
                torch.cuda.synchronize()
            row = {"sub": sub, "build_s": time.perf_counter() - start, "quality": app.evaluate(),
                   "timings": per_ray_timings(app, resolutions, repeats)}
        rows.append(row)
        print(f"render grid sub {sub}: built in {row['build_s']:.2f} s, PSNR {row['quality']['psnr_db']:.3f} dB",
              flush=True)
    return rows


def sweep_kernel_settings(app, width: int, height: int, repeats: int) -> list[dict]:
    """Per-ray frame time with each of ``SWEEP``'s settings, and its largest difference from the default frame."""
    from ngfx.render.ops import triton_fused_volume as kernel

    reference = app.render(width, height, 0, per_ray=True)
    rows = []
    for setting in SWEEP:
        with patched({(kernel, name): value for name, value in setting.items()}):
            ms, frame = frame_ms(app, width, height, True, repeats, per_ray=True)
        rows.append({"setting": setting, "ms": ms, "max_abs_diff": float((frame - reference).abs().max())})
        print("sweep", rows[-1], flush=True)
    return rows


def bench_dense_scene(name: str, scene: str, args) -> dict:
    """NeRF on dense scene ``name`` (dense_scenes: ``walls`` or ``room``) built from the RGBA ``scene``: trained
    ``--dense-seconds``, timed at 1080p with its learned occupancy grid, then with the grid dilated until
    ``DENSE_OCCUPIED`` is occupied (the issue's real capture)."""
    app, dataset = dense_scenes.dense_app(name, scene, "tiny" if args.smoke else "full", args.device, args.out)
    trained = fit(app, steps=20 if args.smoke else None, seconds=None if args.smoke else args.dense_seconds)
    limit_eval_views(app, args.eval_views)
    quality, stage_quality = app.evaluate(per_ray=True), app.evaluate()
    print(f"nerf dense {name}: PSNR per-ray {quality['psnr_db']:.3f} dB, stage by stage {stage_quality['psnr_db']:.3f} "
          f"dB, learned grid {app.occupancy.occupied_fraction():.1%} occupied", flush=True)
    resolution = [(96, 54)] if args.smoke else list(DENSE_TARGET_MS)
    result = {"scene": name, "dataset": dataset, "aabb": app.aabb.tolist(), "train_seconds": trained["seconds"],
              "steps": trained["steps"], "quality": quality, "stage_quality": stage_quality,
              "learned_occupied": app.occupancy.occupied_fraction(),
              "learned": per_ray_timings(app, resolution, args.repeats)}
    if args.render_subs:
        result["render_grids"] = sweep_render_grid(app, resolution, args.render_subs, args.repeats)
    width, height = resolution[0]
    write_image(frame_path(args.out, f"nerf_dense_{name}_{width}x{height}", width),
                app.render(width, height, 0, per_ray=True).cpu().numpy())
    mask = app.occupancy.mask
    while mask.float().mean() < DENSE_OCCUPIED:
        grown = dilate(mask, app.occupancy.resolution)
        if torch.equal(grown, mask):  # an empty grid does not grow
            break
        mask = grown
    app.occupancy.mask.copy_(mask)
    app.refresh_render_grid()
    result["dense_occupied"] = app.occupancy.occupied_fraction()
    result["dense"] = per_ray_timings(app, resolution, args.repeats)
    return result


def markdown(results: list[dict], dense: dict[str, dict] | None, device: str) -> str:
    lines = [f"NeRF on {device}: the fused per-ray renderer against the stage-by-stage kernels in one run (median "
             "of repeats; quality on the val views rendered each way).", "", *PER_RAY_HEADER]
    for r in results:
        lines += per_ray_markdown(f"nerf {r['encoding']} ({r['train_seconds']:.0f} s / {r['steps']} steps; PSNR "
                                  f"{r['quality']['psnr_db']:.2f} / {r['stage_quality']['psnr_db']:.2f} dB)",
                                  r["timings"], TARGET_MS)
    for name, d in (dense or {}).items():
        label = (f"nerf dense {name} ({d['train_seconds']:.0f} s; PSNR {d['quality']['psnr_db']:.2f} / "
                 f"{d['stage_quality']['psnr_db']:.2f} dB)")
        lines += per_ray_markdown(f"{label}, learned grid {d['learned_occupied']:.0%} occupied", d["learned"],
                                  DENSE_TARGET_MS)
        lines += per_ray_markdown(f"{label}, grid dilated to {d['dense_occupied']:.0%}", d["dense"], DENSE_TARGET_MS)
    grids = [(r["encoding"], g) for r in results for g in r.get("render_grids", [])]
    grids += [(f"dense {name}", g) for name, d in (dense or {}).items() for g in d.get("render_grids", [])]
    if grids:
        lines += ["", "Render grids: fine cells per axis of each occupied training-grid cell (1: the training grid).",
                  "", "| scene | sub | build s | PSNR dB (val) | resolution | stage-by-stage ms | per-ray ms "
                  "| samples M stage / per-ray |", "|---|---|---|---|---|---|---|---|"]
        for name, g in grids:
            for t in g["timings"]:
                lines.append(f"| {name} | {g['sub']} | {g['build_s']:.2f} | {g['quality']['psnr_db']:.3f} "
                             f"| {t['width']}x{t['height']} | {t['stage_ms']:.2f} | {t['per_ray_ms']:.2f} "
                             f"| {t['stage_samples'] / 1e6:.1f} / {t['per_ray_samples'] / 1e6:.1f} |")
    unfused = [(r, t) for r in results for t in r["timings"] if "unfused_ms" in t]
    if unfused:
        lines += ["", "Stage by stage: Triton rest kernels against the PyTorch ops (rest time of one recorded frame).",
                  "", "| encoding | resolution | stage ms (Triton rest) | unfused ms (PyTorch) | rest ms Triton / PyTorch "
                  "| rest ratio | enc / mlp ms (recorded) |", "|---|---|---|---|---|---|---|"]
        for r, t in unfused:
            lines.append(f"| {r['encoding']} | {t['width']}x{t['height']} | {t['stage_ms']:.2f} | {t['unfused_ms']:.2f} "
                         + rest_cells(t["stage_stages_ms"], t["unfused_stages_ms"], t["rest_ratio"]))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the synthetic scene, CPU-friendly")
    parser.add_argument("--encodings", default="hashgrid", help="comma list; empty: only --dense-seconds")
    parser.add_argument("--train-seconds", type=float, default=170.0)
    parser.add_argument("--eval-views", type=int, default=None, help="val views to score (default: all)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--scene", default=None, help="dataset path (default: ../shared/scenes/lego, else synthetic)")
    parser.add_argument("--profile", action="store_true", help="also profile one fused frame (stages, kernels)")
    parser.add_argument("--resolutions", default=None, help="e.g. 1920x1080 (default: 1080p and 4K)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--backend", default=None, help="encoding backend (torch|triton|tcnn), else auto")
    parser.add_argument("--skip-unfused", action="store_true", help="do not time the unfused PyTorch ops")
    parser.add_argument("--dense-seconds", type=float, default=0.0,
                        help="also train and time dense-background scenes for this long (0: no)")
    parser.add_argument("--dense-scene", default="walls", choices=[*dense_scenes.DENSE_SCENES, "both"],
                        help="walls: Lego over its box's walls; room: in a textured room, as an instant-ngp capture")
    parser.add_argument("--sweep", action="store_true", help="also time the per-ray kernel's settings (SWEEP)")
    parser.add_argument("--knobs", default=None, help='JSON list of module-constant settings to time and score, '
                        'e.g. \'[{}, {"apps.nerf.MIN_TRANSMITTANCE": 1e-3}]\'')
    parser.add_argument("--render-subs", default=None, type=positive_ints,
                        help="also time and score render grids of these fine cells per axis, e.g. 1,2,4")
    args = parser.parse_args(argv)
    if args.knobs:
        try:
            args.knobs = json.loads(args.knobs)
        except json.JSONDecodeError as error:
            parser.error(f"--knobs: not JSON ({error})")
        if not isinstance(args.knobs, list) or not all(isinstance(k, dict) for k in args.knobs):
            parser.error("--knobs: a JSON list of {\"module.NAME\": value} objects")
        try:  # before minutes of training, not after
            [knob(key) for setting in args.knobs for key in setting]
        except ValueError as error:
            parser.error(str(error))
    if args.backend:
        os.environ["NGFX_BACKEND"] = args.backend
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.repeats = args.repeats or (1 if args.smoke else 5)
    lego = ROOT.parent / "shared" / "scenes" / "lego"
    scene = args.scene or (str(lego) if lego.is_dir() and not args.smoke else "synthetic")
    results = [bench_encoding(encoding, scene, args) for encoding in args.encodings.split(",") if encoding]
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    dense = None
    write_json(args.out / "results.json", {"encodings": results, "dense_background": dense})  # kept if the next fails
    if args.dense_seconds > 0:
        dense = {}
        for name in dense_scenes.DENSE_SCENES if args.dense_scene == "both" else [args.dense_scene]:
            dense[name] = bench_dense_scene(name, scene, args)
            write_json(args.out / "results.json", {"encodings": results, "dense_background": dense})
    table = markdown(results, dense, device)
    with atomic_write(args.out / "results.md", "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
