"""The library calls behind ``ngfx sim run | sweep | report`` (one function per subcommand)."""

from __future__ import annotations

from pathlib import Path

from ngfx.errors import NgfxInputError
from ngfx.io import atomic_folder, check_output, read_json
from ngfx.ngpc_sim import paper as paper_module
from ngfx.ngpc_sim.config import ENCODING_KINDS, GPUProfile, NGPCConfig, encoding_kind_of, gpu_profiles, load_config
from ngfx.ngpc_sim.model import SimResult, simulate
from ngfx.ngpc_sim.calibrate import calibrate, calibration_table, table_markdown
from ngfx.ngpc_sim.paper import paper_trace, paper_traces
from ngfx.ngpc_sim.project import project_trace, source_profile
from ngfx.ngpc_sim.report import write_report
from ngfx.ngpc_sim.schema import NFPS, SPEEDUP, SWEEP_ROW_FIELDS, check_fields
from ngfx.ngpc_sim.sensitivity import sensitivity_table
from ngfx.ngpc_sim.sweep import RESOLUTIONS, SCALES, load_traces, measured_rest_speedups, run_sweep
from ngfx.ngpc_sim.trace import CPU_TIMERS, Trace, read_kernel_table, read_trace, scale_trace


def _overrides(rest_mode: str | None, rest_speedup: float | None) -> dict:
    """Config overrides from the command line (a measured fused-rest speedup replaces the paper's 9.94)."""
    out = {"rest_mode": rest_mode} if rest_mode else {}
    if rest_speedup is not None and rest_mode == "unfused":  # unfused rest kernels run as traced: no speedup
        raise NgfxInputError("--rest-speedup", None, "applies only to fused rest kernels; drop it or use --rest fused "
                                                     "(--rest unfused runs them as traced)")
    if rest_speedup is not None:
        out["fused_rest_speedup"] = SPEEDUP.check(rest_speedup, "--rest-speedup")
    return out


def load_any_trace(path: str | Path, table_resolution: tuple[int, int] | None = None) -> Trace:
    """A Chrome trace (.json with traceEvents) or a per-kernel table (.csv, or a .json list of rows)."""
    path = Path(path)
    if path.suffix.lower() == ".csv" or (path.suffix.lower() == ".json" and isinstance(read_json(path), list)):
        if table_resolution is None:
            raise NgfxInputError(str(path), "resolution", "a per-kernel table needs --table-resolution WxH (the traced frame size)")
        return read_kernel_table(path, *table_resolution)
    return read_trace(path)


def sim_run(trace_path: str | Path | None, scale: int, resolution: tuple[int, int] | None = None, gpu: str = "rtx3090",
            config: str | None = None, rest_mode: str | None = None, table_resolution=None,
            paper: tuple[str, str] | None = None, rest_speedup: float | None = None,
            project: bool = False) -> tuple[SimResult, SimResult]:
    """Replay one trace (or a paper-input trace ``(app, encoding)``) -> (NGPC result, GPU-only replay)."""
    scale = NFPS.check(scale, "--scale")
    overrides = _overrides(rest_mode, rest_speedup)
    if paper:
        trace = paper_trace(paper[0], encoding_kind_of(paper[1], "--paper"))
    else:
        trace = load_any_trace(trace_path, table_resolution)
    if rest_speedup is not None and trace.rest_as_timed:
        raise NgfxInputError("--rest-speedup", None, f"{trace_path} was traced with fused rest kernels (otherData.rest "
                                                     f"{trace.rest!r}), which replay as timed; drop --rest-speedup")
    if resolution:
        trace = scale_trace(trace, *resolution)
    cfg = load_config(config, gpu=gpu, **overrides)
    if project:
        trace = project_to(trace, cfg, gpu_profiles(config))
    return simulate(trace, cfg.replace(n_nfps=scale)), simulate(trace, cfg.replace(enabled=False))


def project_to(trace: Trace, cfg: NGPCConfig, profiles: dict[str, GPUProfile]) -> Trace:
    """``trace`` projected onto ``cfg``'s GPU by the per-kernel roofline (from its own GPU's profile in
    ``profiles``, from :func:`gpu_profiles`, if known). Scale a trace to its final resolution first: a kernel's
    launch does not grow with the pixels."""
    return project_trace(trace, cfg.gpu, source_profile(trace, profiles))


def format_result(result: SimResult, gpu_only: SimResult) -> str:
    util = ", ".join(f"{k} {v:.0%}" for k, v in result.utilisation.items())
    # a CPU-timed trace is a CPU frame: replaying it beside a GPU's NGPC is a model of nothing real
    cpu = result.timer in CPU_TIMERS
    rows = [("CPU baseline" if cpu else "baseline",
             f"{result.baseline_s * 1e3:.3f} ms  ({1 / result.baseline_s:.1f} FPS), "
             + ("a CPU-timed frame, not a GPU one (project it with --project)" if cpu else f"{result.timer} trace")
             + f"; replayed without NGPC: {gpu_only.frame_s * 1e3:.3f} ms"),
            ("with NGPC", f"{result.frame_s * 1e3:.3f} ms  ({result.fps:.1f} FPS)"),
            ("speedup", f"{result.speedup:.2f}x  (Amdahl bound {result.amdahl_bound:.2f}x)"),
            ("utilisation", util)]
    head = (f"{result.app or '?'} / {result.encoding or '?'} at {result.width}x{result.height}, {result.scale} NFPs, "
            f"rest {result.rest_mode} (trace device: {result.device})")
    return "\n".join([head] + [f"{label + ':':<14}{text}" for label, text in rows])


def sim_sweep(out_dir: str | Path, trace_paths=(), scales=SCALES, resolutions=RESOLUTIONS,
              gpu: str = "rtx3090", config: str | None = None, scheduler: str | None = None,
              workers: int | None = None, rest_mode: str | None = None, rest_speedup: float | None = None,
              project: bool = False) -> Path:
    """Sweep the paper-input traces (or the traces in ``trace_paths``: files or folders), write CSV/JSON,
    plots and the report. ``project``: replay the traces projected onto ``gpu`` by the per-kernel roofline
    (what a CPU trace needs before it says anything about a GPU). Every input and the output folder are checked
    before the sweep runs; the outputs are written to a temp folder beside ``out_dir`` and renamed into it only
    when all of them are done."""
    if isinstance(trace_paths, (str, Path)):
        trace_paths = [trace_paths]
    check_output(out_dir, "--out", folder=True)
    cfg = load_config(config, gpu=gpu, **_overrides(rest_mode, rest_speedup))
    recorded = load_traces(*trace_paths) if trace_paths else paper_traces()
    # each app's own measured fused-rest ratio, unless the flag set one for all
    rest_speedups = measured_rest_speedups(recorded) if rest_speedup is None else {}
    profiles = gpu_profiles(config)
    with atomic_folder(out_dir) as tmp:
        rows = run_sweep(recorded, scales, resolutions, tmp, cfg=cfg, scheduler=scheduler, workers=workers,
                         rest_speedups=rest_speedups,
                         project_from=[source_profile(t, profiles) for t in recorded] if project else None)
        if trace_paths:
            notes = (f"Traces: renderer traces from {', '.join(map(str, trace_paths))}"
                     + (f", projected onto the {cfg.gpu.name} by the per-kernel roofline (a model)." if project else
                        ", replayed as recorded."))
        else:
            notes = ("## Traces from the paper's inputs (ngfx.ngpc_sim.paper)\n\n"
                     + paper_module.__doc__.split("\n", 2)[2])
        full_hd = [scale_trace(t, 1920, 1080) for t in recorded]
        write_report(rows, tmp, traces=recorded, cfg=cfg, calibration=calibration_table(cfg),
                     sensitivity=sensitivity_table(cfg), notes=notes, rest_speedups=rest_speedups,
                     projection=[(t, project_to(t, cfg, profiles)) for t in full_hd] if trace_paths else None)
    return Path(out_dir) / "report.md"


def sim_report(results_path: str | Path, out_dir: str | Path, gpu: str = "rtx3090", config: str | None = None) -> Path:
    """Rebuild the report's plots and tables from a saved sweep.json (after editing or merging sweeps)."""
    check_output(out_dir, "--out", folder=True)
    rows = read_json(results_path)
    needed = ("app", "encoding", "width", "height", "scale", "frame_s", "fps", "speedup", "amdahl_bound")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise NgfxInputError(str(results_path), None, "not a sweep.json written by `ngfx sim sweep` (a list of rows)")
    for i, row in enumerate(rows):
        if missing := [k for k in needed if k not in row]:
            raise NgfxInputError(str(results_path), f"[{i}].{missing[0]}", "missing")
        check_sweep_row(row, str(results_path), f"[{i}].")
    cfg = load_config(config, gpu=gpu)
    with atomic_folder(out_dir) as tmp:
        write_report(rows, tmp, cfg=cfg, calibration=calibration_table(cfg), sensitivity=sensitivity_table(cfg))
    return Path(out_dir) / "report.md"


def check_sweep_row(row: dict, source: str, prefix: str) -> dict:
    """One sweep.json row with every number in range and known app/encoding text (a hand-edited or merged
    sweep is read like a trace: a NaN speedup or a scale of -8 is refused, not plotted)."""
    for key in ("app", "encoding"):
        if not isinstance(row[key], str) or not row[key]:
            raise NgfxInputError(source, prefix + key, f"expected a name, got {row[key]!r}")
    if row["encoding"] not in ENCODING_KINDS:
        raise NgfxInputError(source, prefix + "encoding", f"expected one of {ENCODING_KINDS}, got {row['encoding']!r}")
    return check_fields(row, SWEEP_ROW_FIELDS, source, prefix)


def sim_calibrate(out_dir: str | Path | None = None, gpu: str = "rtx3090", config: str | None = None) -> str:
    """Refit the calibrated constants from their targets; the refit beside the frozen values and the
    fitted-vs-predicted table (also written to ``out_dir`` as calibration.json and calibration.md)."""
    from ngfx.io import atomic_write, write_json

    if out_dir is not None:
        check_output(out_dir, "--out", folder=True)
    result = calibrate(load_config(config, gpu=gpu))
    refit, frozen = result["refit"], result["frozen"]
    lines = ["| constant | refit from its targets | frozen | relative difference |", "|---|---:|---:|---:|"]
    for key in ("area_pct_per_nfp", "power_pct_per_nfp"):
        lines.append(f"| {key} | {refit[key]:.4g} | {frozen[key]:.4g} | {refit[key] / frozen[key] - 1:+.2%} |")
    for app, rate in refit["inputs_per_s"].items():
        old = frozen["inputs_per_s"][app]
        lines.append(f"| inputs_per_s[{app}] | {rate:.4g} | {old:.4g} | {rate / old - 1:+.2%} |")
    text = "# NGPC model calibration\n\n" + "\n".join(lines) + "\n\n" + table_markdown(result["table"]) + "\n"
    if out_dir is not None:
        with atomic_folder(out_dir) as tmp:
            write_json(Path(tmp) / "calibration.json", result)
            with atomic_write(Path(tmp) / "calibration.md", "w") as f:
                f.write(text)
    return text
