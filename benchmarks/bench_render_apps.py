"""Train GIA (albert.jpg), NSDF (armadillo) and NVR (cloud) for bounded times, then time 1080p and 4K frames.

For each app: quality (evaluate()), frame time fused and unfused at 1920x1080 and 3840x2160 (CUDA events on a GPU,
median of repeats after a warm-up), and the "rest" stages' share, timed with the stage recorder in the same run, so the
fused/unfused rest-kernel ratio comes from one process. NVR's fused per-ray kernel is also timed at 1080p
and 4K against the stage-by-stage kernels it would replace, with the samples and the PSNR of each. With
``--nvr-render-steps``, NVR's frames at 1080p and 4K are also timed at each render step (marching steps
across the cube's diagonal), with their samples and PSNR vs the true cloud, whose step stays put.
Writes ``results.md`` (Markdown tables), ``results.json`` and one PNG per app under ``--out``. ``--smoke``
runs tiny sizes on CPU in seconds.

    python benchmarks/bench_render_apps.py --out bench_out            # H200: about 6 minutes
    python benchmarks/bench_render_apps.py --out /tmp/smoke --smoke   # CPU check
    python benchmarks/bench_render_apps.py --out bench_nvr --apps nvr --nvr-render-steps 256,128,64,32
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import inspect
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ngfx.cli import positive_int  # noqa: E402
from ngfx.io import atomic_write, write_image, write_json  # noqa: E402
from ngfx.render.neural_field import fit  # noqa: E402
from ngfx.render.stages import record_stages  # noqa: E402

TARGET_MS = 16.7  # 60 FPS at 3840x2160, the target for NSDF, GIA and NVR


def scenes(scene_dir: Path, smoke: bool) -> dict[str, str]:
    """Real scenes when present (and not smoke), else the procedural ones."""
    albert, armadillo = scene_dir / "images" / "albert.jpg", scene_dir / "meshes" / "armadillo.obj"
    return {"gia": str(albert) if albert.is_file() and not smoke else "image",
            "nsdf": str(armadillo) if armadillo.is_file() and not smoke else "csg",
            "nvr": "cloud"}


def per_ray_option(app, per_ray: bool) -> dict:
    """``render``'s ``per_ray`` argument for apps with a fused per-ray renderer (NeRF, NVR, NSDF), else nothing."""
    return {"per_ray": per_ray} if "per_ray" in inspect.signature(app.render).parameters else {}


def frame_ms(app, width: int, height: int, fused: bool, repeats: int, **options) -> tuple[float, torch.Tensor]:
    """Median wall time of one frame (CUDA events on a GPU) after one warm-up frame; ``options`` go to render."""
    frame = app.render(width, height, 0, fused=fused, **options)
    times = []
    for _ in range(repeats):
        if app.device_.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            frame = app.render(width, height, 0, fused=fused, **options)
            end.record()
            torch.cuda.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t = time.perf_counter()
            frame = app.render(width, height, 0, fused=fused, **options)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), frame


def samples_per_frame(app, width: int, height: int, per_ray: bool) -> int:
    """Field samples one frame evaluates: counted by the fused per-ray kernel, or (stage by stage, Triton
    kernels) the inputs of the frame's recorded encoding stages."""
    if not per_ray:
        with record_stages(app.device_) as records:
            app.render(width, height, 0, fused=True, per_ray=False)
        return sum(r.n_inputs for r in records if r.category == "encoding")
    from ngfx.render.ops import triton_fused_volume

    counters = torch.zeros(2, dtype=torch.int64, device=app.device_)
    counting = functools.partial(triton_fused_volume.render_volume, counters=counters)
    with patched({(triton_fused_volume, "render_volume"): counting}):  # the apps import it at each call
        app.render(width, height, 0, fused=True, per_ray=True)
    return int(counters[1])


def per_ray_timings(app, resolutions: list[tuple[int, int]], repeats: int) -> list[dict]:
    """Per resolution, in one run: the fused per-ray frame and the stage-by-stage (Triton kernels) frame it
    replaces, median ms, and the field samples each evaluates."""
    rows = []
    for width, height in resolutions:
        fused, _ = frame_ms(app, width, height, True, repeats, per_ray=True)
        stage, _ = frame_ms(app, width, height, True, repeats, per_ray=False)
        rows.append({"width": width, "height": height, "per_ray_ms": fused, "stage_ms": stage,
                     "per_ray_samples": samples_per_frame(app, width, height, True),
                     "stage_samples": samples_per_frame(app, width, height, False)})
        print(f"{app.name} {width}x{height}: per-ray {fused:.2f} ms, stage by stage {stage:.2f} ms, samples "
              f"{rows[-1]['per_ray_samples'] / 1e6:.1f} M / {rows[-1]['stage_samples'] / 1e6:.1f} M", flush=True)
    return rows


def per_ray_markdown(name: str, rows: list[dict], targets: dict) -> list[str]:
    """Table rows of :func:`per_ray_timings` (``targets``: ms per (width, height))."""
    lines = []
    for t in rows:
        target = targets.get((t["width"], t["height"]))
        # the target is the app's frame: the stage-by-stage path, which render() runs by default
        met = "-" if target is None else ("yes" if t["stage_ms"] <= target else f"no ({t['stage_ms'] / target:.2f}x)")
        lines.append(f"| {name} | {t['width']}x{t['height']} | {t['per_ray_ms']:.2f} | {t['stage_ms']:.2f} "
                     f"| {t['stage_ms'] / t['per_ray_ms']:.2f}x | {target if target is not None else '-'} | {met} "
                     f"| {t['per_ray_samples'] / 1e6:.1f} / {t['stage_samples'] / 1e6:.1f} |")
    return lines


def render_step_sweep(app, steps: list[int], resolutions: list[tuple[int, int]], repeats: int) -> list[dict]:
    """NVR at each render step (marching steps across the cube's diagonal), in one run: the default frame's
    median ms per resolution, the field samples of the largest frame and PSNR vs the true cloud (marched at
    its own step whatever the render step, so the PSNR says what a coarser step costs)."""
    rows = []
    for n_steps in steps:
        with patched({(app, "render_steps"): n_steps}):
            frames = [{"width": w, "height": h, "ms": frame_ms(app, w, h, True, repeats)[0]} for w, h in resolutions]
            rows.append({"render_steps": n_steps, "dt": app.dt, "frames": frames,
                         "samples": samples_per_frame(app, *resolutions[-1], per_ray=False),
                         "psnr_db": app.evaluate()["psnr_db"]})
        print(f"nvr render steps {n_steps}: " + ", ".join(f"{f['width']}x{f['height']} {f['ms']:.2f} ms"
                                                         for f in frames)
              + f", {rows[-1]['samples'] / 1e6:.1f} M samples, PSNR vs truth {rows[-1]['psnr_db']:.2f} dB", flush=True)
    return rows


def render_step_markdown(rows: list[dict]) -> list[str]:
    """The table of :func:`render_step_sweep`."""
    sizes = [f"{f['width']}x{f['height']}" for f in rows[0]["frames"]]
    lines = [f"NVR render steps (across the cube's diagonal; the truth keeps its own), target {TARGET_MS} ms at "
             f"{sizes[-1]}:", "",
             f"| render steps | dt | samples M ({sizes[-1]}) | " + " | ".join(f"ms {s}" for s in sizes)
             + " | PSNR vs truth dB |", "|---" * (len(sizes) + 4) + "|"]
    for r in rows:
        lines.append(f"| {r['render_steps']} | {r['dt']:.4f} | {r['samples'] / 1e6:.1f} | "
                     + " | ".join(f"{f['ms']:.2f}" for f in r["frames"]) + f" | {r['psnr_db']:.2f} |")
    return lines


PER_RAY_HEADER = ["| app | resolution | fused per-ray ms | stage-by-stage ms | speedup | target ms "
                  "| met (stage by stage) | samples M per-ray / stage |", "|---|---|---|---|---|---|---|---|"]


def stage_ms(app, width: int, height: int, fused: bool, **options) -> dict[str, float]:
    """Milliseconds per stage category (encoding, mlp, rest; encoding and MLP then run unfused) of one recorded
    frame; ``options`` go to render."""
    with record_stages(app.device_) as records:
        app.render(width, height, 0, fused=fused, **options)
    out = {"encoding": 0.0, "mlp": 0.0, "rest": 0.0}
    for r in records:
        out[r.category] += r.duration_s * 1e3
    return out


def rest_ratio(app, width: int, height: int) -> tuple[dict, dict, float]:
    """:func:`stage_ms` of one frame with the stage-by-stage Triton rest kernels and one with the PyTorch ops,
    and the ratio of their rest times (PyTorch / Triton). Both follow timed frames of their size but for NSDF's stage
    path, which no timed frame runs: it renders once first, so its kernels' compilation is not timed (it once showed
    1,628 ms of "rest")."""
    stage_path = per_ray_option(app, False)
    app.render(width, height, 0, fused=True, **stage_path)
    triton_stages = stage_ms(app, width, height, True, **stage_path)
    torch_stages = stage_ms(app, width, height, False)
    return triton_stages, torch_stages, torch_stages["rest"] / max(triton_stages["rest"], 1e-9)


def rest_cells(triton_stages: dict, torch_stages: dict, ratio: float) -> str:
    """The Markdown cells ``rest ms Triton / PyTorch | rest ratio | enc / mlp ms`` of a :func:`rest_ratio`."""
    return (f"| {triton_stages['rest']:.2f} / {torch_stages['rest']:.2f} | {ratio:.2f}x "
            f"| {triton_stages['encoding']:.2f} / {triton_stages['mlp']:.2f} |")


def profiled_frame(app, width: int, height: int, **options):
    """torch.profiler's key averages of one fused frame (host ops and, on a GPU, kernels); ``options`` go to
    render."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if app.device_.type == "cuda" else [])
    with profile(activities=activities) as prof:
        app.render(width, height, 0, fused=True, **options)
    return prof.key_averages()


def kernel_table(app, averages, rows: int = 15) -> str:
    """The GPU kernels of :func:`profiled_frame`'s frame, most time first (the host ops off the GPU)."""
    return averages.table(sort_by="cuda_time_total" if app.device_.type == "cuda" else "self_cpu_time_total",
                          row_limit=rows)


def kernel_profile(app, width: int, height: int, rows: int = 15, **options) -> str:
    """:func:`kernel_table` of one fused frame (for finding hot spots); ``options`` go to render."""
    return kernel_table(app, profiled_frame(app, width, height, **options), rows)


@contextlib.contextmanager
def patched(values: dict):
    """Attributes set for the duration: ``{(owner, name): value}``, each put back on exit, errors too."""
    saved = {key: getattr(*key) for key in values}
    try:
        for (owner, name), value in values.items():
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def positive_ints(text: str) -> list[int]:
    """A comma list of positive integers (a flag's type)."""
    return [positive_int(v) for v in text.split(",")]


def frame_path(out: Path, stem: str, width: int) -> Path:
    """PNG for frames up to 1080p wide, JPEG (quality 95 by default) above, so 4K stills stay small."""
    return out / f"{stem}.{'png' if width <= 1920 else 'jpg'}"


def bench_app(name: str, scene: str, args, out: Path) -> dict:
    module = importlib.import_module(f"ngfx.render.apps.{name}")
    size = "tiny" if args.smoke else "full"
    t = time.perf_counter()
    app = module.build_app(scene, args.encoding, size, device=args.device)
    setup_s = time.perf_counter() - t
    trained = fit(app, steps=3 if args.smoke else None, seconds=None if args.smoke else args.train_seconds,
                  progress=True)
    quality = app.evaluate()
    resolutions = [(64, 36), (96, 54)] if args.smoke else [(1920, 1080), (3840, 2160)]
    (small_w, small_h), (width, height) = resolutions
    # fused against unfused rest kernels at both sizes, in this process; the target is the larger frame's
    small_fused_ms, _ = frame_ms(app, small_w, small_h, True, args.repeats)
    small_unfused_ms, _ = frame_ms(app, small_w, small_h, False, args.repeats)
    fused_ms, frame = frame_ms(app, width, height, True, args.repeats)
    unfused_ms, _ = frame_ms(app, width, height, False, args.repeats)
    fused_stages, unfused_stages, ratio = rest_ratio(app, width, height)
    per_ray, render_steps = {}, []
    if hasattr(app, "volume_field"):  # NVR: its fused per-ray frame against the stage-by-stage one, 1080p and 4K
        per_ray = {"timings": per_ray_timings(app, resolutions, args.repeats),
                   "quality": app.evaluate(per_ray=True)}
    if name == "nvr" and args.nvr_render_steps:
        render_steps = render_step_sweep(app, args.nvr_render_steps, resolutions, args.repeats)
    write_image(frame_path(out, f"{name}_{width}x{height}", width), frame.cpu().numpy())
    if args.traces:  # a 1080p trace of the trained app for the NGPC simulator
        from ngfx.ngpc_sim.capture import trace_frame
        from ngfx.ngpc_sim.trace import write_trace

        w, h = (96, 54) if args.smoke else (1920, 1080)
        write_trace(trace_frame(app, w, h, app.device_), Path(args.traces) / f"{name}_{args.encoding}.json")
        # and of the fused rest kernels, in a sibling folder (one trace per app and encoding in each)
        fused_dir = Path(args.traces).with_name(Path(args.traces).name + "_fused")
        write_trace(trace_frame(app, w, h, app.device_, fused=True), fused_dir / f"{name}_{args.encoding}.json")
    return {"app": name, "scene": scene, "encoding": args.encoding, "setup_s": setup_s, **trained,
            "quality": quality, "width": width, "height": height, "fused_ms": fused_ms, "unfused_ms": unfused_ms,
            "small": {"width": small_w, "height": small_h, "fused_ms": small_fused_ms, "unfused_ms": small_unfused_ms},
            "fused_stages_ms": fused_stages, "unfused_stages_ms": unfused_stages,
            "rest_ratio": ratio, "per_ray": per_ray, "render_steps": render_steps}


def markdown(results: list[dict], device: str) -> str:
    small = f"{results[0]['small']['width']}x{results[0]['small']['height']}"
    lines = [f"Render apps on {device}: frame time at {results[0]['width']}x{results[0]['height']} "
             f"(target {TARGET_MS} ms) and {small}, rest kernels fused vs unfused in one run.", "",
             f"| app | scene | train s / steps | quality | {small} fused / unfused ms | fused ms | unfused ms "
             "| target met | rest ms fused / unfused | rest ratio | enc / mlp ms (recorded) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        quality = ", ".join(f"{k} {v:.4g}" for k, v in r["quality"].items() if isinstance(v, float))
        lines.append(f"| {r['app']} | {Path(r['scene']).name} | {r['seconds']:.0f} / {r['steps']} | {quality} "
                     f"| {r['small']['fused_ms']:.2f} / {r['small']['unfused_ms']:.2f} | {r['fused_ms']:.2f} "
                     f"| {r['unfused_ms']:.2f} | {'yes' if r['fused_ms'] <= TARGET_MS else 'no'} "
                     + rest_cells(r["fused_stages_ms"], r["unfused_stages_ms"], r["rest_ratio"]))
    per_ray = [r for r in results if r["per_ray"]]
    if per_ray:
        lines += ["", "Fused per-ray renderer against the stage-by-stage kernels (quality: per-ray / stage):", "",
                  *PER_RAY_HEADER]
        for r in per_ray:
            lines += per_ray_markdown(f"{r['app']} ({r['per_ray']['quality']['psnr_db']:.2f} / "
                                      f"{r['quality']['psnr_db']:.2f} dB)", r["per_ray"]["timings"],
                                      {(3840, 2160): TARGET_MS})
    for r in results:
        if r["render_steps"]:
            lines += ["", *render_step_markdown(r["render_steps"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps, CPU-friendly")
    parser.add_argument("--apps", default="gia,nsdf,nvr")
    parser.add_argument("--encoding", default="hashgrid")
    parser.add_argument("--train-seconds", type=float, default=90.0)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--scenes", type=Path, default=ROOT.parent / "shared" / "scenes")
    parser.add_argument("--device", default=None)
    parser.add_argument("--backend", default=None, help="encoding backend (torch|triton|tcnn), else auto")
    parser.add_argument("--traces", default=None, type=Path,
                        help="also write a 1080p trace per app into this folder (fused rest kernels: FOLDER_fused)")
    parser.add_argument("--nvr-render-steps", type=positive_ints,
                        default=None, help="NVR only: also time 1080p and 4K frames and PSNR vs the truth at each of "
                                           "these render steps across the cube's diagonal, e.g. 256,128,64,32")
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["NGFX_BACKEND"] = args.backend
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.repeats = args.repeats or (1 if args.smoke else 5)
    chosen = scenes(args.scenes, args.smoke)
    results = []
    for name in args.apps.split(","):
        results.append(bench_app(name, chosen[name], args, args.out))
        print(f"{name}: {results[-1]['quality']} fused {results[-1]['fused_ms']:.2f} ms "
              f"unfused {results[-1]['unfused_ms']:.2f} ms", flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    write_json(args.out / "results.json", results)
    table = markdown(results, device)
    with atomic_write(args.out / "results.md", "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
