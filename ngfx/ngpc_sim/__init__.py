"""Traces of per-kernel costs and a SimPy model of the NGPC cluster that replays them.

Public API (trace capture from a renderer lives in :mod:`ngfx.ngpc_sim.capture`, the one module
that imports :mod:`ngfx.render`)::

    trace = read_trace("trace.json")                      # or paper_trace("nerf", "hash_grid")
    cfg = load_config(gpu="rtx3090")
    on_3090 = project_trace(scale_trace(trace, 3840, 2160), cfg.gpu, gpu_profiles()["h200"])  # roofline model
    result = simulate(on_3090, cfg.replace(n_nfps=16))
    rows = run_sweep(traces, scales=(8, 16, 32, 64), resolutions=((1920, 1080),), out_dir="sweep")
    write_report(rows, "sweep", traces=traces, calibration=calibration_table(cfg))

What is fitted and what is predicted: :mod:`ngfx.ngpc_sim.calibrate`; which assumption a result hangs on:
:mod:`ngfx.ngpc_sim.sensitivity`; every number's type and range: :mod:`ngfx.ngpc_sim.schema`.
"""

from ngfx.ngpc_sim.calibrate import calibration_table
from ngfx.ngpc_sim.config import NGPCConfig, gpu_profiles, load_config
from ngfx.ngpc_sim.model import SimResult, simulate
from ngfx.ngpc_sim.paper import paper_trace, paper_traces
from ngfx.ngpc_sim.project import project_trace
from ngfx.ngpc_sim.report import write_report
from ngfx.ngpc_sim.sweep import load_traces, run_sweep
from ngfx.ngpc_sim.trace import Kernel, Trace, read_kernel_table, read_trace, scale_trace, write_trace

__all__ = [
    "NGPCConfig", "gpu_profiles", "load_config", "SimResult", "simulate", "paper_trace", "paper_traces",
    "calibration_table", "project_trace",
    "write_report", "load_traces", "run_sweep", "Kernel", "Trace", "read_kernel_table", "read_trace",
    "scale_trace", "write_trace",
]
