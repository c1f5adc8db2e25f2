"""Trace capture from a real renderer: the only module of ngfx.ngpc_sim that imports ngfx.render."""

from __future__ import annotations

import math

import torch

from ngfx.errors import NgfxInputError
from ngfx.ngpc_sim.trace import Kernel, Trace, encoding_kind, write_trace


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def kernel_from_record(record, frame: int = 0) -> Kernel:
    """A :class:`~ngfx.render.stages.StageRecord` as a trace :class:`Kernel`."""
    a = record.attrs
    enc = ""
    if record.category != "rest":
        enc = a.get("encoding") or encoding_kind(a.get("otype", "Hash"), int(a.get("n_levels", 16)))
    return Kernel(name=record.name, category=record.category, n_inputs=int(record.n_inputs), flops=float(record.flops),
                  bytes_read=float(record.bytes_read), bytes_written=float(record.bytes_written),
                  duration_s=float(record.duration_s), frame=frame, app=str(a.get("app", "")), encoding=enc,
                  n_levels=int(a.get("n_levels", 0)), n_features_per_level=int(a.get("n_features_per_level", 0)),
                  log2_hashmap_size=int(a.get("log2_hashmap_size", 0)), n_dims=int(a.get("n_dims", 0)),
                  mlp_layers=[list(l) for l in a.get("mlp_layers", [])])


def _model_shapes(app) -> dict:
    """Table size and MLP layers the stage attrs lack, read from the app's grid and network configs.

    Dense grids carry an unused ``log2_hashmap_size`` in their config, so the largest level's real
    entry count is taken from the parsed :class:`~ngfx.encodings.config.GridConfig`; MLP layers are
    filled in only when the app has a single network (otherwise the model derives them from FLOPs).
    """
    from ngfx.encodings.config import GridConfig, MLPConfig

    grids, nets = [], []
    modules = app.modules() if isinstance(app, torch.nn.Module) else []
    for m in modules:
        cfg = getattr(m, "cfg", None)
        if isinstance(cfg, GridConfig):
            grids.append(cfg)
        elif isinstance(cfg, MLPConfig):
            nets.append(cfg)
    out = {}
    if len(grids) == 1:
        out["log2_hashmap_size"] = math.ceil(math.log2(max(grids[0].table_sizes)))
    if len(nets) == 1:
        out["mlp_layers"] = [list(s) for s in nets[0].layer_shapes]
    return out


def trace_frame(app, width: int, height: int, device: torch.device | str, n_frames: int = 1, warmup: int = 1,
                fused: bool = False) -> Trace:
    """Render ``n_frames`` frames of ``app`` with every stage timed -> a :class:`Trace`.

    ``fused`` traces the fused Triton rest kernels (the renderer as it runs) instead of the unfused PyTorch
    ones (the paper's baseline); the trace records which, so the simulator never speeds fused kernels up again.

    On a GPU the stages are timed with CUDA events (timer ``cuda_event``); on a CPU with
    ``time.perf_counter`` (timer ``cpu``: measured CPU times, marked as such). ``warmup`` untimed
    frames first, so compilation and caches do not land in the trace.
    """
    from ngfx.render.neural_field import use_triton
    from ngfx.render.stages import record_stages

    device = torch.device(device)
    fused = use_triton(fused, device)  # off the GPU (and the interpreter) the renderer runs the PyTorch kernels
    with torch.no_grad():
        for _ in range(warmup):
            app.render(width, height, view=0, fused=fused)
        kernels = []
        for frame in range(n_frames):
            with record_stages(device) as records:
                app.render(width, height, view=frame, fused=fused)
            kernels += [kernel_from_record(r, frame) for r in records]
    shapes = _model_shapes(app)
    for k in kernels:
        if k.category != "rest" and "log2_hashmap_size" in shapes:
            k.log2_hashmap_size = shapes["log2_hashmap_size"]
        if k.category == "mlp" and not k.mlp_layers:
            k.mlp_layers = shapes.get("mlp_layers", [])
    if not kernels:
        raise NgfxInputError(type(app).__name__, "render", "the renderer emitted no stages; nothing to trace")
    timer = "cuda_event" if device.type == "cuda" else "cpu"
    return Trace(device=_device_name(device), timer=timer, width=width, height=height, kernels=kernels,
                 n_frames=n_frames, rest="fused" if fused else "unfused")


def trace_run(run_dir: str, width: int, height: int, out: str, device: str | None = None, n_frames: int = 1,
              fused: bool = False, profiler: bool | None = None) -> Trace:
    """Load the trained run in ``run_dir``, trace a frame, write the Chrome trace JSON to ``out`` (checked
    writable before the run is loaded, so a bad path costs no rendering)."""
    from ngfx.io import check_output
    from ngfx.render.runs import load_run

    check_output(out, "--out", folder=False)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    trace = trace_frame(load_run(run_dir, device), width, height, device, n_frames=n_frames, fused=fused)
    write_trace(trace, out)
    return trace
