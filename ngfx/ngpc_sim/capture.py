"""Trace capture from a real renderer: the only module of ngfx.ngpc_sim that imports ngfx.render.

Two ways to time a frame, both grouped by the renderer's named stages (encoding / MLP / rest):

- **per kernel** (default on CUDA): ``torch.profiler`` (Kineto, CUPTI on the GPU) records every GPU kernel
  with its start and duration; each kernel belongs to the stage whose ``record_function`` range launched it
  (:func:`ngfx.render.stages.stage` opens one). Timer ``cupti``. On a CPU the same path records every
  top-level PyTorch op of each stage (timer ``cpu_op``).
- **per stage** (the fallback, default on CPU): one CUDA-event or ``perf_counter`` timing per stage (timers
  ``cuda_event`` / ``cpu``), launch gaps and host syncs included.

FLOPs and bytes are analytic either way (:mod:`ngfx.ngpc_sim.costs`): a kernel launched by a PyTorch op
from the op's input shapes; a kernel without one (a Triton launch) from its stage's grid or MLP shapes,
shared among such kernels by duration; a rest stage's bytes, and a fused MLP stage's, as its renderer declares them.
Each kernel keeps what its stage said it fused (``Kernel.fused``), so the simulator never speeds it up again.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import torch

from ngfx.errors import NgfxInputError
from ngfx.ngpc_sim import costs
from ngfx.ngpc_sim.trace import Kernel, Trace, encoding_kind, write_trace

GPU_WORK = ("kernel", "gpu_memcpy", "gpu_memset")  # Kineto categories of device work
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")  # ... and of the host calls that launched it


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def kernel_from_record(record, frame: int = 0, shapes: dict | None = None) -> Kernel:
    """A :class:`~ngfx.render.stages.StageRecord` as a trace :class:`Kernel` with analytic FLOPs and bytes.

    ``shapes``: table size and MLP layers read from the app's modules (:func:`_model_shapes`), which win over
    the stage's attrs."""
    a, shapes = record.attrs, shapes or {}
    enc = ""
    if record.category != "rest":
        enc = a.get("encoding") or encoding_kind(a.get("otype", "Hash"), int(a.get("n_levels", 16)))
    k = Kernel(name=record.name, category=record.category, n_inputs=int(record.n_inputs), flops=float(record.flops),
               bytes_read=float(record.bytes_read), bytes_written=float(record.bytes_written),
               duration_s=float(record.duration_s), frame=frame, app=str(a.get("app", "")), encoding=enc,
               n_levels=int(a.get("n_levels", 0)), n_features_per_level=int(a.get("n_features_per_level", 0)),
               log2_hashmap_size=int(a.get("log2_hashmap_size", 0)), n_dims=int(a.get("n_dims", 0)),
               mlp_layers=[list(l) for l in a.get("mlp_layers", [])], fused=fused_steps(record))
    if k.category != "rest" and "log2_hashmap_size" in shapes:
        k.log2_hashmap_size = shapes["log2_hashmap_size"]
    if k.category == "mlp" and not k.mlp_layers:
        k.mlp_layers = shapes.get("mlp_layers", [])
    cost = stage_cost(k)
    k.flops, k.bytes_read, k.bytes_written = cost
    return k


def fused_steps(record) -> str:
    """What a stage fused into one kernel: its ``fused`` attribute when it names the steps (``"march+compact"``),
    the stage's own step when it says only ``fused=True`` (a Triton kernel in place of PyTorch ops), else ""."""
    fused = record.attrs.get("fused")
    if isinstance(fused, str):
        return fused
    return record.name.rsplit(".", 1)[-1] if fused is True else ""


def stage_cost(k: Kernel) -> costs.Cost:
    """A stage's analytic cost from its shapes: grid lookups, a fused MLP, or (rest) what the renderer declared.

    An MLP stage that fused other steps with its layers (NeRF's field head: density MLP, SH, colour MLP) has its
    layers' FLOPs and the bytes its renderer declared: its kernel's real inputs and outputs, which a chain of
    layers does not describe."""
    if k.category == "encoding":
        return costs.grid_encoding(k.n_inputs, k.n_levels, k.n_features_per_level, k.n_dims)
    if k.category == "mlp" and k.mlp_layers:
        cost = costs.fused_mlp(k.n_inputs, k.mlp_layers)
        return costs.Cost(cost.flops, k.bytes_read, k.bytes_written) if k.fused else cost
    return costs.Cost(k.flops, k.bytes_read, k.bytes_written)


def kernels_from_profile(events: list[dict], stage_kernels: list[Kernel], device_work: bool,
                         app: str = "") -> list[Kernel]:
    """Per-kernel :class:`Kernel`s from a torch.profiler Chrome trace's ``traceEvents`` of one frame.

    ``stage_kernels``: the frame's stages (from :func:`kernel_from_record`, in the order they ran), matched to
    the profiler's ``ngfx.stage:NAME`` ranges in order. ``device_work``: take GPU kernels (placed in the stage
    whose range holds their launch on the host); otherwise each stage's top-level CPU ops. Each stage's
    inputs ride on its first kernel (the NGPC model counts them once); its other kernels carry their time.
    Work outside every stage is a rest kernel.
    """
    from ngfx.render.stages import PROFILER_PREFIX

    spans = [e for e in events if e.get("ph") == "X" and isinstance(e.get("dur"), (int, float))]
    ranges = sorted((e for e in spans if e.get("cat") == "user_annotation" and e["name"].startswith(PROFILER_PREFIX)),
                    key=lambda e: e["ts"])
    if [r["name"][len(PROFILER_PREFIX):] for r in ranges] != [k.name for k in stage_kernels]:
        raise ValueError("profiler ranges do not match the recorded stages (nested or missing stages?)")
    ops = sorted((e for e in spans if e.get("cat") == "cpu_op"), key=lambda e: (e["ts"], -e["dur"]))
    if device_work:
        # runtime launches (PyTorch's kernels) and driver launches (Triton's cuLaunchKernel) alike
        launches = {e["args"]["correlation"]: e["ts"] for e in spans
                    if e.get("cat") in LAUNCH_CATEGORIES and "correlation" in e.get("args", {})}
        # a kernel whose launch was not recorded still ran in the frame: it lands outside every stage
        work = [(launches.get(e.get("args", {}).get("correlation"), -math.inf), e)
                for e in spans if e.get("cat") in GPU_WORK]
        work = [(host_ts, e, op) for (host_ts, e), op in zip(work, _launching_ops([w[0] for w in work], ops))]
    else:
        work, end = [], -math.inf
        for op in ops:  # top-level ops: not inside an earlier op
            if op["ts"] >= end:
                work.append((op["ts"], op, op))
                end = op["ts"] + op["dur"]
    starts = [r["ts"] for r in ranges]
    per_stage: dict[int, list] = {}
    outside = []
    for host_ts, e, op in sorted(work, key=lambda w: w[1]["ts"]):
        i = bisect.bisect_right(starts, host_ts) - 1
        inside = i >= 0 and host_ts <= ranges[i]["ts"] + ranges[i]["dur"]
        (per_stage.setdefault(i, []) if inside else outside).append((e, op))
    kernels = []
    for i, stage in enumerate(stage_kernels):
        kernels += _split_stage(stage, per_stage.get(i, []))
    frame = stage_kernels[0].frame if stage_kernels else 0
    rest = Kernel("unstaged", "rest", 0, 0.0, 0.0, 0.0, 0.0, frame=frame, app=app)
    kernels += _split_stage(rest, outside)
    return kernels


def _launching_ops(host_times: list[float], ops: list[dict]) -> list[dict | None]:
    """For each host time, the innermost CPU op with input shapes whose span holds it, in one sweep (a frame
    has tens of thousands of kernels; ops on a thread nest, so a stack of open ops holds the answer on top).
    ``ops``: sorted by start, outer op first (as :func:`kernels_from_profile` sorts them)."""
    shaped = [op for op in ops if op.get("args", {}).get("Input Dims")]
    out, stack, i = [None] * len(host_times), [], 0
    for idx in sorted(range(len(host_times)), key=host_times.__getitem__):
        t = host_times[idx]
        while i < len(shaped) and shaped[i]["ts"] <= t:
            stack.append(shaped[i])
            i += 1
        while stack and stack[-1]["ts"] + stack[-1]["dur"] < t:
            stack.pop()
        out[idx] = stack[-1] if stack else None
    return out


def _split_stage(stage: Kernel, work: list) -> list[Kernel]:
    """One :class:`Kernel` per profiled ``(event, launching op)`` of ``stage``, costs from a PyTorch op's shapes
    or shared from the stage's."""
    if not work:
        return []
    out, unshaped = [], []
    for e, op in work:
        # only PyTorch's own ops have a cost model: a Triton kernel launched inside an autograd Function (the MLP's
        # _MLP, the grid's _GridEncode) is no element-wise op of the Function's inputs
        shapes = op.get("args", {}).get("Input Dims") if op and op["name"].startswith("aten::") else None
        cost = costs.tensor_op(op["name"], shapes) if shapes else None
        k = dataclasses.replace(stage, name=f"{stage.name}/{e['name']}"[:200], n_inputs=0, duration_s=e["dur"] * 1e-6,
                                mlp_layers=list(stage.mlp_layers))
        if cost:
            k.flops, k.bytes_read, k.bytes_written = cost
        else:
            unshaped.append(k)
        out.append(k)
    # kernels launched without a PyTorch op (Triton) share the stage's analytic cost by duration
    total = sum(k.duration_s for k in unshaped)
    for k in unshaped:
        share = k.duration_s / total if total > 0 else 1 / len(unshaped)
        stage_total = (stage.flops, stage.bytes_read, stage.bytes_written)
        k.flops, k.bytes_read, k.bytes_written = (share * v for v in stage_total)
    out[0].n_inputs = stage.n_inputs
    return out


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


def _profile_frame(app, width: int, height: int, view: int, device: torch.device, fused: bool) -> tuple[list, list]:
    """Render one frame under torch.profiler and the stage recorder -> (profiler events, stage records)."""
    from torch.profiler import ProfilerActivity, profile

    from ngfx.render.stages import record_stages

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof, record_stages(device) as records:
        app.render(width, height, view=view, fused=fused)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    with tempfile.TemporaryDirectory() as tmp:
        prof.export_chrome_trace(str(Path(tmp) / "profile.json"))
        events = json.loads((Path(tmp) / "profile.json").read_text())["traceEvents"]
    return events, records


def trace_frame(app, width: int, height: int, device: torch.device | str, n_frames: int = 1, warmup: int = 1,
                fused: bool = False, profiler: bool | None = None) -> Trace:
    """Render ``n_frames`` frames of ``app`` with every kernel (or every stage) timed -> a :class:`Trace`.

    ``fused`` traces the fused Triton rest kernels (the renderer as it runs) instead of the unfused PyTorch
    ones (the paper's baseline); the trace records which (its ``rest`` label, and each kernel's ``fused`` steps),
    so the simulator never speeds fused kernels up again. Each stage is a kernel that ran: NeRF's fused frame is
    ray generation, march-and-pack (``fused`` "march+compact"), the grid encoding, the field head (one MLP stage,
    ``nerf.field_head``, fused "density_mlp+exp+sh+color_mlp", both networks' layers) and compositing.
    A frame of NeRF's or NVR's fused per-ray kernel (``render(per_ray=True)``) is one rest stage
    ``{app}.fused_volume`` holding the march, grid encoding, MLPs and compositing, so the model replays the
    whole field as timed rather than moving its encoding and MLP onto the NGPC (nor speeding its rest up again);
    NSDF's fused tracer is likewise one rest stage, ``nsdf.fused_trace`` (trace, encoding, MLP, normals and
    shading). Such a trace is labelled ``per_ray``, and gives no fused-rest speedup to the sweep.
    ``profiler``: per kernel with torch.profiler (default on CUDA) or per stage (default on CPU); see the
    module docstring. ``warmup`` untimed frames first, so compilation and caches do not land in the trace.
    """
    from ngfx.render.neural_field import use_triton
    from ngfx.render.stages import record_stages

    device = torch.device(device)
    profiler = device.type == "cuda" if profiler is None else profiler
    fused = use_triton(fused, device)  # off the GPU (and the interpreter) the renderer runs the PyTorch kernels
    shapes = _model_shapes(app)
    kernels, all_records = [], []
    with torch.no_grad():
        for _ in range(warmup):
            app.render(width, height, view=0, fused=fused)
        for frame in range(n_frames):
            if profiler:
                events, records = _profile_frame(app, width, height, frame, device, fused)
                all_records += records
                stages = [kernel_from_record(r, frame, shapes) for r in sorted(records, key=lambda r: r.start_s)]
                app_name = stages[0].app if stages else ""
                kernels += kernels_from_profile(events, stages, device.type == "cuda", app=app_name)
            else:
                with record_stages(device) as records:
                    app.render(width, height, view=frame, fused=fused)
                all_records += records
                kernels += [kernel_from_record(r, frame, shapes) for r in records]
    if not kernels:
        raise NgfxInputError(type(app).__name__, "render", "the renderer emitted no stages; nothing to trace")
    on_gpu = device.type == "cuda"
    timer = ("cupti" if on_gpu else "cpu_op") if profiler else ("cuda_event" if on_gpu else "cpu")
    return Trace(device=_device_name(device), timer=timer, width=width, height=height, kernels=kernels,
                 n_frames=n_frames, rest=_rest_mode(all_records, fused))


def _rest_mode(records: list, fused: bool) -> str:
    """How the traced frame ran its rest kernels: ``per_ray`` when a rest stage said it fused the field's MLP
    (``stage(..., fused="march+grid_encoding+mlp+...")``, or an MLP by name, ``"...+color_mlp"``), else ``fused``
    or ``unfused``."""
    def fuses_mlp(record) -> bool:
        return any(step == "mlp" or step.endswith("_mlp") for step in fused_steps(record).split("+"))

    if any(r.category == "rest" and fuses_mlp(r) for r in records):
        return "per_ray"
    return "fused" if fused else "unfused"


def trace_run(run_dir: str, width: int, height: int, out: str, device: str | None = None, n_frames: int = 1,
              fused: bool = False, profiler: bool | None = None) -> Trace:
    """Load the trained run in ``run_dir``, trace a frame, write the Chrome trace JSON to ``out`` (checked
    writable before the run is loaded, so a bad path costs no rendering)."""
    from ngfx.io import check_output
    from ngfx.render.runs import load_run

    check_output(out, "--out", folder=False)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    trace = trace_frame(load_run(run_dir, device), width, height, device, n_frames=n_frames, fused=fused,
                        profiler=profiler)
    write_trace(trace, out)
    return trace
