"""The library calls behind ``ngfx sim run | sweep | report`` (one function per subcommand)."""

from __future__ import annotations

from pathlib import Path

from ngfx.io import read_json
from ngfx.errors import NgfxInputError
from ngfx.ngpc_sim import paper as paper_module
from ngfx.ngpc_sim.config import load_config
from ngfx.ngpc_sim.model import SimResult, simulate
from ngfx.ngpc_sim.paper import paper_trace, paper_traces, paper_validation
from ngfx.ngpc_sim.report import write_report
from ngfx.ngpc_sim.sweep import RESOLUTIONS, SCALES, load_traces, run_sweep
from ngfx.ngpc_sim.trace import Trace, read_kernel_table, read_trace, scale_trace


def _overrides(rest_mode: str | None, rest_speedup: float | None) -> dict:
    """Config overrides from the command line (a measured fused-rest speedup replaces the paper's 9.94)."""
    out = {"rest_mode": rest_mode} if rest_mode else {}
    if rest_speedup is not None:
        out["fused_rest_speedup"] = float(rest_speedup)
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
            paper: tuple[str, str] | None = None, rest_speedup: float | None = None) -> tuple[SimResult, SimResult]:
    """Replay one trace (or a paper-input trace ``(app, encoding)``) -> (NGPC result, GPU-only replay)."""
    trace = paper_trace(*paper) if paper else load_any_trace(trace_path, table_resolution)
    if resolution:
        trace = scale_trace(trace, *resolution)
    cfg = load_config(config, gpu=gpu, **_overrides(rest_mode, rest_speedup))
    return simulate(trace, cfg.replace(n_nfps=scale)), simulate(trace, cfg.replace(enabled=False))


def format_result(result: SimResult, gpu_only: SimResult) -> str:
    util = ", ".join(f"{k} {v:.0%}" for k, v in result.utilisation.items())
    return "\n".join([
        f"{result.app or '?'} / {result.encoding or '?'} at {result.width}x{result.height}, {result.scale} NFPs, "
        f"rest {result.rest_mode} (trace device: {result.device})",
        f"GPU baseline (trace):  {result.baseline_s * 1e3:.3f} ms  ({1 / result.baseline_s:.1f} FPS); "
        f"replayed without NGPC: {gpu_only.frame_s * 1e3:.3f} ms",
        f"with NGPC:             {result.frame_s * 1e3:.3f} ms  ({result.fps:.1f} FPS)",
        f"speedup:               {result.speedup:.2f}x  (Amdahl bound {result.amdahl_bound:.2f}x)",
        f"utilisation:           {util}",
    ])


def sim_sweep(out_dir: str | Path, trace_dir: str | Path | None = None, scales=SCALES, resolutions=RESOLUTIONS,
              gpu: str = "rtx3090", config: str | None = None, scheduler: str | None = None,
              workers: int | None = None, rest_mode: str | None = None, rest_speedup: float | None = None) -> Path:
    """Sweep the paper-input traces (or every trace in ``trace_dir``), write CSV/JSON, plots and the report."""
    cfg = load_config(config, gpu=gpu, **_overrides(rest_mode, rest_speedup))
    traces = load_traces(trace_dir) if trace_dir else paper_traces()
    rows = run_sweep(traces, scales, resolutions, out_dir, cfg=cfg, scheduler=scheduler, workers=workers)
    notes = f"Traces: real renderer traces from {trace_dir}." if trace_dir else (
        "## Traces from the paper's inputs (ngfx.ngpc_sim.paper)\n\n" + paper_module.__doc__.split("\n", 2)[2])
    return write_report(rows, out_dir, traces=traces, cfg=cfg,
                        validation=None if trace_dir else paper_validation(cfg), notes=notes)


def sim_report(results_path: str | Path, out_dir: str | Path, gpu: str = "rtx3090", config: str | None = None) -> Path:
    """Rebuild the report from a saved sweep.json."""
    rows = read_json(results_path)
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "speedup" in r for r in rows):
        raise NgfxInputError(str(results_path), "speedup", "not a sweep.json written by `ngfx sim sweep`")
    return write_report(rows, out_dir, cfg=load_config(config, gpu=gpu))
