"""Per-kernel traces of the four apps for the NGPC simulator, and their roofline projection onto the RTX 3090.

For each app (procedural scene, hash grid): train for ``--train-seconds`` (or load ``--runs DIR/APP``), then
trace one frame with torch.profiler (CUPTI kernels on a GPU, PyTorch ops on a CPU) twice: with the unfused
PyTorch rest kernels (the paper's baseline) and with the fused ones (the renderer as it runs), into
``OUT/traces/{app}_hashgrid.json`` and ``{app}_hashgrid_fused.json``. Then ``ngfx sim sweep`` over them,
projected onto the RTX 3090 by the per-kernel roofline, with each app's own measured rest ratio
(``OUT/sweep/report.md``), and ``OUT/summary.json`` / ``summary.md``: per app the traced frame, its projection
and the paper's RTX 3090 figure where one is published (NeRF: 231 ms at 1080p).

    python benchmarks/bench_trace.py --out OUT                      # H200: about 1.5 minutes
    python benchmarks/bench_trace.py --out OUT --smoke --apps gia   # CPU check, seconds
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ngfx.io import atomic_write, check_output, write_json  # noqa: E402
from ngfx.ngpc_sim.api import project_to, sim_sweep  # noqa: E402
from ngfx.ngpc_sim.capture import trace_frame  # noqa: E402
from ngfx.ngpc_sim.config import gpu_profiles, load_config  # noqa: E402
from ngfx.ngpc_sim.report import PAPER_BASELINE_MS  # noqa: E402
from ngfx.ngpc_sim.trace import scale_trace, write_trace  # noqa: E402
from ngfx.render.neural_field import fit  # noqa: E402

SCENES = {"nerf": "synthetic", "nsdf": "csg", "gia": "image", "nvr": "cloud"}


def trained_app(name: str, args):
    """A run from ``--runs DIR/NAME`` when given, else the procedural scene trained for a bounded time."""
    if args.runs:
        from ngfx.render.runs import load_run

        return load_run(args.runs / name, args.device)
    app = importlib.import_module(f"ngfx.render.apps.{name}").build_app(SCENES[name], "hashgrid", args.size,
                                                                   device=args.device)
    fit(app, steps=3 if args.smoke else None, seconds=None if args.smoke else args.train_seconds, progress=False)
    return app


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 64x36 frames, CPU-friendly")
    parser.add_argument("--apps", default="gia,nsdf,nvr,nerf")
    parser.add_argument("--runs", default=None, type=Path, help="folder of trained runs named by app (else train)")
    parser.add_argument("--train-seconds", type=float, default=15.0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    check_output(args.out, "--out", folder=True)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.size = "tiny" if args.smoke else "full"
    width, height = (64, 36) if args.smoke else (1920, 1080)
    traces_dir = args.out / "traces"
    cfg, profiles = load_config(gpu="rtx3090"), gpu_profiles()
    summary = []
    for name in args.apps.split(","):
        t = time.perf_counter()
        app = trained_app(name, args)
        row = {"app": name, "setup_and_train_s": time.perf_counter() - t}
        print(f"{name}: built and trained in {row['setup_and_train_s']:.1f} s; tracing", flush=True)
        for fused, suffix in ((False, ""), (True, "_fused")):
            trace = trace_frame(app, width, height, args.device, fused=fused, profiler=True)
            write_trace(trace, traces_dir / f"{name}_hashgrid{suffix}.json")
            projected = project_to(scale_trace(trace, 1920, 1080), cfg, profiles)  # launches do not scale with pixels
            unstaged_s = sum(k.duration_s for k in trace.kernels if k.name.startswith("unstaged"))
            row.update({f"traced_ms{suffix}": trace.frame_time_s() * 1e3, f"kernels{suffix}": len(trace.kernels),
                        f"outside_stages_share{suffix}": unstaged_s / trace.n_frames / trace.frame_time_s(),
                        f"rest_share{suffix}": trace.share("rest"), "device": trace.device, "timer": trace.timer,
                        f"rtx3090_projected_ms_1080p{suffix}": projected.frame_time_s() * 1e3,
                        f"rest{suffix}": trace.rest})
        row["paper_rtx3090_ms_1080p"] = PAPER_BASELINE_MS.get((name, 1920, 1080))
        summary.append(row)
        print(f"{name}: traced {row['traced_ms']:.2f} ms unfused / {row['traced_ms_fused']:.2f} ms fused "
              f"({row['kernels']} / {row['kernels_fused']} kernels, {row['timer']}); RTX 3090 roofline at 1080p "
              f"{row['rtx3090_projected_ms_1080p']:.2f} ms", flush=True)
    report = sim_sweep(args.out / "sweep", [traces_dir], scales=(8, 64) if args.smoke else (8, 16, 32, 64),
                       resolutions=((1920, 1080),), gpu="rtx3090", workers=1, project=True)
    write_json(args.out / "summary.json", summary)
    lines = [f"Traces at {width}x{height} on {summary[0]['device']} ({summary[0]['timer']}), projected onto the "
             "RTX 3090 at 1920x1080 by the per-kernel roofline (a model).", "",
             "| app | traced ms unfused / fused | kernels | RTX 3090 projected ms unfused / fused | paper's ms |",
             "|---|---|---|---|---|"]
    for r in summary:
        paper = r["paper_rtx3090_ms_1080p"]
        lines.append(f"| {r['app']} | {r['traced_ms']:.2f} / {r['traced_ms_fused']:.2f} | {r['kernels']} / "
                     f"{r['kernels_fused']} | {r['rtx3090_projected_ms_1080p']:.2f} / "
                     f"{r['rtx3090_projected_ms_1080p_fused']:.2f} | {'-' if paper is None else paper} |")
    with atomic_write(args.out / "summary.md", "w") as f:
        f.write("\n".join(lines) + f"\n\nSweep report: {report.relative_to(args.out)}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
