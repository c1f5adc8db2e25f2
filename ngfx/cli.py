"""The one command-line interface, ``ngfx``. Thin: parse arguments, call one library function, print.

Each subsystem registers its subcommands in its own ``_add_*`` function below; library code never
imports this module.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings


def _resolution(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 1920x1080, got {text!r}") from None
    if w <= 0 or h <= 0 or w * h > 8192 * 8192:
        raise argparse.ArgumentTypeError(f"resolution {text!r} is out of range (1x1 .. 8192x8192 pixels)")
    return w, h


def positive_int(text: str, low: int = 1) -> int:
    """A whole number >= 1 (steps, frames, scales)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (optional phases: 0 skips them)."""
    return positive_int(text, low=0)


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds > 0, got {text!r}")
    return value


def torch_device(text: str) -> str:
    """'cpu', 'cuda' or 'cuda:N', refused when this machine cannot run it."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine (PyTorch "
                                         f"{torch.__version__}); use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


# --- demo (issue: the main job) -------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, render, trace and simulate on embedded procedural scenes",
                       description="Exits 0 only when every stage is done; re-running resumes.")
    p.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick",
                      help="small sizes (the default on a CPU)")
    size.add_argument("--full", action="store_const", dest="size", const="full",
                      help="real sizes (the default on a GPU)")
    size.add_argument("--smoke", action="store_const", dest="size", const="smoke",
                      help="tiny sizes: every stage runs, quality is not the point (CI)")
    p.add_argument("--data", default=None,
                   help="folder of real scenes, used with --full only (default: none; e.g. ../shared/scenes)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ngfx.demo import run_demo
    from ngfx.io import check_output

    check_output(args.out, "--out", folder=True)
    result = run_demo(out_dir=args.out, size=args.size, data_dir=args.data)
    return 0 if result.ok else 1  # a failed stage or a missing package fails the command (and CI)


# --- render: train / render (issue: the four applications) ----------------------------------------
def _add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an application (nerf, nsdf, gia, nvr) into a run folder")
    p.add_argument("app", choices=("nerf", "nsdf", "gia", "nvr"))
    p.add_argument("--scene", required=True, help="procedural name (synthetic, csg, image, cloud) or a path")
    p.add_argument("--encoding", default=None, choices=("hashgrid", "densegrid", "lowres"),
                   help="grid encoding (default: hashgrid; with --resume, the run's)")
    p.add_argument("--out", required=True, help="run folder (refused if it holds a run, unless --resume/--overwrite)")
    p.add_argument("--size", default=None, choices=("tiny", "quick", "full"),
                   help="model and data sizes (default: full on CUDA, quick on CPU, as the demo; with --resume, the "
                        "run's)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="total training steps (default: the app's for --size; with --resume, the run's budget)")
    p.add_argument("--seconds", type=positive_seconds, default=None,
                   help="time budget of the training loop in seconds, total over resumed runs; loading, "
                        "evaluation and the preview come on top (default: none, or the app's cap on CPU sizes)")
    p.add_argument("--device", type=torch_device, default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint (starts one if there is none)")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run in --out; the old one stays until the new one's first checkpoint")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="let a dataset's file_path entries leave its folder (or set NGFX_ALLOW_OUTSIDE_PATHS=1)")
    p.set_defaults(func=_run_train)
    p = sub.add_parser("render", help="render a trained run folder to PNG frames (and an MP4)")
    p.add_argument("run_dir")
    p.add_argument("--resolution", type=_resolution, default=None,
                   help="WIDTHxHEIGHT (default: the cameras file's size, else 800x800)")
    views = p.add_mutually_exclusive_group()
    views.add_argument("--camera-path", default=None, choices=("orbit",),
                       help="orbit the scene (default: the run's evaluation views)")
    views.add_argument("--cameras", default=None,
                       help="render these poses: a Blender/instant-ngp transforms JSON (its frames' images, when "
                            "named, are scored: PSNR/SSIM in metrics.json) or a nerfstudio camera-path JSON "
                            "(default: none)")
    p.add_argument("--eval", action="store_true",
                   help="also run the app's evaluation (val split or full image) into metrics.json; minutes on a CPU")
    p.add_argument("--frames", type=positive_int, default=None,
                   help="number of frames (default: 1, or 60 with --camera-path)")
    p.add_argument("--video", action="store_true", help="also write video.mp4")
    p.add_argument("--unfused", action="store_true", help="use the unfused PyTorch 'rest' kernels")
    p.add_argument("--render-steps", type=positive_int, default=None,
                   help="NVR runs: marching steps across the cube's diagonal for this render (default: the run's; "
                        "fewer are faster: 32 renders 3840x2160 in 14 ms on an H200, 47.7 dB against the true cloud)")
    p.add_argument("--device", type=torch_device, default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run_render)


def _run_train(args: argparse.Namespace) -> int:
    import os

    from ngfx.render.metrics import quality_summary
    from ngfx.render.runs import train

    if args.allow_outside_paths:  # the dataset loader reads it, here and when the run is rendered
        os.environ["NGFX_ALLOW_OUTSIDE_PATHS"] = "1"
    metrics = train(args.app, args.scene, args.encoding, args.out, size=args.size, steps=args.steps,
                    seconds=args.seconds, device=args.device, resume=args.resume, overwrite=args.overwrite)
    quality = quality_summary({k: v for k, v in metrics.items() if k != "seconds"})
    print(f"trained {args.app} for {metrics['steps']} steps in {metrics['seconds']:.1f} s: {quality} -> {args.out}")
    return 0


def _run_render(args: argparse.Namespace) -> int:
    from ngfx.io import check_output, read_json

    check_output(args.out, "--out", folder=True)  # refuses a run folder: a render never replaces a run's records
    n_frames = args.frames or (60 if args.camera_path else 1)  # --frames is >= 1 (positive_int)
    if read_json(f"{args.run_dir}/run.json").get("app") == "nelf":
        from ngfx.nelf.runs import render_nelf_run

        if args.cameras or args.eval or args.render_steps:
            raise ValueError(f"{args.run_dir}: a NeLF run renders its own views (metrics.json always); "
                             "--cameras, --eval and --render-steps are for nerf, nsdf, gia and nvr runs")

        paths = render_nelf_run(args.run_dir, args.out, args.resolution, camera_path=args.camera_path,
                                n_frames=n_frames, video=args.video)
    else:
        from ngfx.render.runs import render_run

        paths = render_run(args.run_dir, args.out, args.resolution, camera_path=args.camera_path, n_frames=n_frames,
                           video=args.video, fused=not args.unfused, device=args.device, cameras=args.cameras,
                           evaluate=args.eval, render_steps=args.render_steps)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


# --- nelf: distill / mobile-report (issue: NeLF) --------------------------------------------------
def _add_nelf(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nelf", help="neural light fields distilled from a NeRF run (MobileR2L)")
    nelf = p.add_subparsers(dest="nelf_command", required=True)
    d = nelf.add_parser("distill", help="distil a NeLF student from a NeRF teacher run (resumes)")
    d.add_argument("teacher_run", help="NeRF run folder (ngfx train nerf ...)")
    d.add_argument("--out", required=True, help="NeLF run folder to write")
    d.add_argument("--size", choices=("tiny", "quick", "full"), default="quick")
    d.add_argument("--arch", choices=("mobile_r2l", "lightslab", "oracle"), default="mobile_r2l",
                   help="student: MobileR2L (deep 1x1-conv body), a grid-encoded light slab (LightSpeed-style) or a "
                        "depth oracle (a network reading the ray's points on a coarse 3D grid picks where a small 3D "
                        "grid field is sampled, DONeRF-style); BENCHMARKS.md compares them; default mobile_r2l")
    d.add_argument("--pseudo-views", type=positive_int, default=None, help="teacher-rendered views (default by size)")
    d.add_argument("--steps", type=positive_int, default=None, help="distillation steps (default by size)")
    d.add_argument("--long-side", type=positive_int, default=None,
                   help="long side in pixels of the student's frames, rounded to its upscale factor (default by "
                        "size; full: the teacher's)")
    d.add_argument("--finetune-steps", type=non_negative_int, default=None,
                   help="fine-tuning steps on real images (0: none)")
    d.add_argument("--seconds", type=positive_seconds, default=None,
                   help="training time budget (both phases, shared as their steps are): stop early")
    d.add_argument("--batch", type=positive_int, default=None,
                   help="frames a training step; rays a step for --arch oracle (default by size)")
    d.add_argument("--lr", type=float, default=None,
                   help="peak learning rate of the distillation, fine-tuning a fifth of it (default by size)")
    d.add_argument("--student-config", default=None,
                   help="JSON file of student config fields replacing the size's preset, e.g. "
                        "{\"log2_hashmap_size\": 19} (run.json's nelf_config lists them)")
    d.add_argument("--compile", action="store_true",
                   help="compile the student's residual blocks with torch.compile (its compile time counts in "
                        "--seconds)")
    d.add_argument("--device", type=torch_device, default=None, help="cuda or cpu (default: cuda when available)")
    d.set_defaults(func=_run_nelf_distill)
    e = nelf.add_parser("export", help="export a NeLF run to ONNX and check it with onnxruntime")
    e.add_argument("run_dir")
    e.add_argument("--out", required=True, help="model.onnx path")
    e.add_argument("--resolution", type=_resolution, default=None, help="frame size WxH (default: the run's)")
    e.set_defaults(func=_run_nelf_export)
    m = sub.add_parser("mobile-report", help="per-layer costs and estimated phone latency of a NeLF (or ONNX) network")
    m.add_argument("source", help="NeLF run folder, NeLF config JSON, preset (paper, mobile_r2l_x8, r2l, ...) or an "
                                  "ONNX file (costed from its graph, at its exported size)")
    m.add_argument("--phone", default="iphone13", help="phone: a device key of the device file (default iphone13)")
    m.add_argument("--unit", choices=("neural_engine", "gpu"), default="neural_engine")
    m.add_argument("--resolution", type=_resolution, default=(1008, 756), help="frame size WxH (default 1008x756)")
    m.add_argument("--devices", default=None, help="device profiles JSON (default: the packaged devices.json)")
    m.add_argument("--measured-h200", default=None, help="JSON written by benchmarks/bench_nelf.py")
    m.add_argument("--heldout", action="store_true",
                   help="also check the latency model on published latencies of other networks (held-out points)")
    m.add_argument("--out", required=True, help="report folder")
    m.set_defaults(func=_run_mobile_report)


def _run_nelf_distill(args: argparse.Namespace) -> int:
    from ngfx.io import check_output
    from ngfx.nelf.distill import distill

    check_output(args.out, "--out", folder=True, run=True)
    run = distill(args.teacher_run, args.out, size=args.size, device=args.device, arch=args.arch,
                  n_pseudo=args.pseudo_views, **({"long_side": args.long_side} if args.long_side else {}),
                  steps=args.steps, finetune_steps=args.finetune_steps, seconds=args.seconds, batch=args.batch,
                  lr=args.lr, student_config=args.student_config, compiled=args.compile)
    m = run["metrics"]
    print(f"{args.out}: student {m['student_psnr_db']:.2f} dB, teacher {m['teacher_psnr_db']:.2f} dB, "
          f"constant colour {m['constant_colour_psnr_db']:.2f} dB on {m['eval_views']} eval views")
    return 0


def _run_nelf_export(args: argparse.Namespace) -> int:
    from ngfx.io import check_output
    from ngfx.nelf.onnx_export import export_run

    check_output(args.out, "--out", folder=False)
    r = export_run(args.run_dir, args.out, args.resolution)
    print(f"{r['path']}: {r['bytes'] / 1e6:.2f} MB, max |onnxruntime - PyTorch| = {r['max_abs_error_vs_pytorch']:.2e}")
    return 0


def _run_mobile_report(args: argparse.Namespace) -> int:
    from ngfx.io import read_json
    from ngfx.nelf.mobile_report import write_mobile_report

    path = write_mobile_report(args.source, args.phone, args.resolution, args.out, unit=args.unit,
                               devices_file=args.devices, measured_h200=args.measured_h200, heldout=args.heldout)
    report = read_json(path.with_name("report.json"))
    frame, (width, height) = report["frame"], report["resolution"]
    print(f"{args.phone} {args.unit} {width}x{height}: estimate "
          f"{frame['estimate_s'] * 1e3:.2f} ms ({1 / frame['estimate_s']:.1f} frames/s), compute bound "
          f"{frame['compute_bound_s'] * 1e3:.2f} ms -> {path}")
    return 0


# --- ngpc_sim: trace / sim (issue: NGPC simulator) ------------------------------------------------
def _scales(text: str) -> list[int]:
    """'8,16,32' -> [8, 16, 32]; each checked (whole, >= 1) when the sweep starts."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated NFP counts like 8,16,32,64, got {text!r}") from None


def _resolutions(text: str) -> list[tuple[int, int]]:
    return [_resolution(r) for r in text.split(",")]


def _add_sim(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="render a frame of a trained run with every kernel timed -> Chrome trace JSON")
    p.add_argument("run_dir", help="a run folder written by `ngfx train`")
    p.add_argument("--resolution", type=_resolution, default=(1920, 1080), help="frame size WxH (default 1920x1080)")
    p.add_argument("--out", default="trace.json", help="trace file to write (opens in Perfetto)")
    p.add_argument("--device", type=torch_device, default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--frames", type=positive_int, default=1, help="frames to trace (averaged by the simulator)")
    p.add_argument("--fused", action="store_true",
                   help="trace the fused Triton kernels as the renderer runs them (each says what it fused, so the "
                        "simulator does not speed it up again) instead of the unfused baseline")
    p.add_argument("--stages", action="store_true",
                   help="time named stages (CUDA events) instead of every kernel with torch.profiler (on a CPU, "
                        "stages are always timed, with the CPU timer)")
    p.set_defaults(func=_run_trace)

    sim = sub.add_parser("sim", help="replay traces through the NGPC model").add_subparsers(dest="sim_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gpu", default="rtx3090", help="GPU profile in the config (rtx3090 | h200)")
    common.add_argument("--config", default=None, help="NGPC parameter file (TOML; default: the packaged one)")
    common.add_argument("--rest", choices=("fused", "unfused"), default=None, help="how the SMs run the rest kernels")
    common.add_argument("--rest-speedup", type=float, default=None,
                        help="fused-rest speedup for every app (default: each app's measured ratio when its fused "
                             "and unfused traces are both given, else the paper's 9.94)")

    p = sim.add_parser("run", parents=[common], help="one trace at one scaling factor: frame time, FPS, speedup")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="Chrome trace JSON, or a per-kernel table (.csv / .json rows)")
    src.add_argument("--paper", nargs=2, metavar=("APP", "ENCODING"),
                     help="a paper-input trace: APP nerf|nsdf|gia|nvr, ENCODING hashgrid|densegrid|lowres (as train)")
    p.add_argument("--table-resolution", type=_resolution, default=None, help="frame size of a per-kernel table")
    p.add_argument("--scale", type=int, default=16, help="number of NFPs, a whole number >= 1 (default 16)")
    p.add_argument("--resolution", type=_resolution, default=None, help="scale the trace to WxH first")
    p.add_argument("--project", action="store_true",
                   help="project the trace to --gpu through the per-kernel roofline first (a model, not a measurement)")
    p.set_defaults(func=_run_sim_run)

    p = sim.add_parser("sweep", parents=[common], help="apps x encodings x scales x resolutions -> CSV, JSON, plots, report")
    p.add_argument("--trace", "--traces", dest="trace", nargs="+", default=(),
                   help="trace files and/or folders of trace JSONs (default: the paper-input traces)")
    p.add_argument("--scale", "--scales", dest="scale", type=_scales, default=[8, 16, 32, 64],
                   help="comma-separated NFP counts (default 8,16,32,64)")
    p.add_argument("--resolution", "--resolutions", dest="resolution", type=_resolutions,
                   default=[(1920, 1080), (3840, 2160), (7680, 4320)],
                   help="comma-separated WxH (default 1920x1080,3840x2160,7680x4320)")
    p.add_argument("--out", default="ngpc_sweep", help="output folder")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786); default: local processes")
    p.add_argument("--workers", type=positive_int, default=None, help="local worker processes (default: CPU count)")
    p.add_argument("--project", action="store_true",
                   help="project each trace onto --gpu through the per-kernel roofline first (a model; what a CPU "
                        "trace needs before it says anything about a GPU)")
    p.set_defaults(func=_run_sim_sweep)

    p = sim.add_parser("calibrate", parents=[common],
                       help="refit the calibrated constants from their published targets; fitted vs predicted table")
    p.add_argument("--out", default=None, help="also write calibration.json and calibration.md into this folder")
    p.set_defaults(func=_run_sim_calibrate)

    p = sim.add_parser("report", parents=[common],
                       help="rebuild a sweep's report (plots, tables) from its sweep.json, e.g. after merging sweeps")
    p.add_argument("--results", required=True, help="sweep.json written by `ngfx sim sweep`")
    p.add_argument("--out", default=None, help="output folder (default: beside the results)")
    p.set_defaults(func=_run_sim_report)


def _run_trace(args: argparse.Namespace) -> int:
    from ngfx.ngpc_sim.capture import trace_run
    from ngfx.progress import frame_progress

    with frame_progress():  # a large frame shows its bands (host-side counts: the timings do not change)
        trace = trace_run(args.run_dir, *args.resolution, out=args.out, device=args.device, n_frames=args.frames,
                          fused=args.fused, profiler=False if args.stages else None)
    print(f"wrote {args.out}: {len(trace.kernels)} kernels, {trace.frame_time_s() * 1e3:.3f} ms per frame "
          f"({trace.timer} timer, rest kernels {trace.rest})")
    return 0


def _run_sim_run(args: argparse.Namespace) -> int:
    from ngfx.ngpc_sim.api import format_result, sim_run

    print(format_result(*sim_run(args.trace, args.scale, args.resolution, gpu=args.gpu, config=args.config,
                                 rest_mode=args.rest, table_resolution=args.table_resolution, paper=args.paper,
                                 rest_speedup=args.rest_speedup, project=args.project)))
    return 0


def _run_sim_sweep(args: argparse.Namespace) -> int:
    from ngfx.ngpc_sim.api import sim_sweep

    path = sim_sweep(args.out, args.trace, args.scale, args.resolution, gpu=args.gpu, config=args.config,
                     scheduler=args.scheduler, workers=args.workers, rest_mode=args.rest, rest_speedup=args.rest_speedup,
                     project=args.project)
    print(f"wrote {path} (and sweep.csv, sweep.json, plots) in {args.out}")
    return 0


def _run_sim_calibrate(args: argparse.Namespace) -> int:
    from ngfx.ngpc_sim.api import sim_calibrate

    print(sim_calibrate(args.out, gpu=args.gpu, config=args.config))
    return 0


def _run_sim_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ngfx.ngpc_sim.api import sim_report

    print(f"wrote {sim_report(args.results, args.out or Path(args.results).parent, gpu=args.gpu, config=args.config)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ngfx import __version__

    parser = argparse.ArgumentParser(prog="ngfx", description="Neural graphics toolkit and NGPC simulator")
    parser.add_argument("--version", action="version", version=f"ngfx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_render, _add_nelf, _add_sim):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; every expected failure is one ``ngfx CMD: error: ...`` line and exit 2."""
    from ngfx.errors import NgfxWarning, TrainingInterrupted

    args = build_parser().parse_args(argv)
    prefix = f"ngfx {args.command}"
    default_format = warnings.formatwarning

    def one_line(message, category, *rest, **kwargs) -> str:
        if issubclass(category, NgfxWarning):
            return f"{prefix}: warning: {message}\n"
        return default_format(message, category, *rest, **kwargs)

    warnings.formatwarning = one_line
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # NgfxInputError and config errors: one clear line, no traceback
        print(f"{prefix}: error: {e}", file=sys.stderr)
    except OSError as e:  # unreadable input, unwritable output, disk full, unreachable scheduler
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prefix}: error: {where}{e.strerror or e}", file=sys.stderr)
    except MemoryError:
        print(f"{prefix}: error: out of memory; try a smaller --size or --resolution", file=sys.stderr)
    except RuntimeError as e:
        if "out of memory" not in str(e):  # torch.cuda.OutOfMemoryError; anything else is a bug: show it
            raise
        print(f"{prefix}: error: out of GPU memory; try a smaller --size or --resolution", file=sys.stderr)
    except KeyboardInterrupt as e:  # a TrainingInterrupted says where the run stopped and that it was saved
        what = str(e) if isinstance(e, TrainingInterrupted) else "interrupted"
        resumes = "; re-run the demo to resume its unfinished stages" if args.command == "demo" else ""
        print(f"{prefix}: {what}{resumes}", file=sys.stderr)
        return 128 + getattr(e, "signal_number", 2)  # 130 for SIGINT, 143 for SIGTERM
    finally:
        warnings.formatwarning = default_format
    return 2


if __name__ == "__main__":
    sys.exit(main())
