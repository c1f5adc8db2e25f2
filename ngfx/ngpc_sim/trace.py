"""The trace schema (version 1): what each kernel launch of a frame cost, as Chrome trace JSON.

A trace file is Chrome's JSON trace format, so Perfetto (ui.perfetto.dev) opens it as a timeline::

    {"traceEvents": [{"name": "nerf.encoding", "cat": "encoding", "ph": "X", "pid": 0, "tid": 0,
                      "ts": 0.0, "dur": 1234.5,            # microseconds
                      "args": {"frame": 0, "app": "nerf", "encoding": "hash_grid", "otype": "Hash",
                               "n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19,
                               "n_dims": 3, "n_inputs": 1048576, "flops": 0.0,
                               "bytes_read": 1.2e8, "bytes_written": 1.3e8,
                               "mlp_layers": [[64, 32], [64, 64], [16, 64]]}}, ...],
     "displayTimeUnit": "ms",
     "otherData": {"schema": "ngfx.trace", "version": 1, "device": "NVIDIA H200", "timer": "cuda_event",
                   "width": 1920, "height": 1080, "n_frames": 1, "rest": "unfused"}}

``cat`` is the category (``encoding`` | ``mlp`` | ``rest``); ``encoding`` is one of
``hash_grid``, ``multires_dense_grid``, ``lowres_dense_grid`` (encoding and mlp kernels only);
``mlp_layers`` lists (out, in) per layer (mlp kernels; optional). ``fused`` (optional, default ``""``) names the
steps the kernel fused, as its renderer declared them (``"march+compact"``; NeRF's field head
``"density_mlp+exp+sh+color_mlp"``): a rest kernel that says it is fused replays as timed whatever the trace's
label, and an MLP kernel that fused other steps moves to the NGPC's MLP engine whole. ``timer`` says how ``dur`` was
measured: ``cupti`` (each GPU kernel, from torch.profiler), ``cuda_event`` (a named stage on the GPU, launch
gaps included), ``cpu`` (a named stage's CPU time), ``cpu_op`` (each CPU op, from torch.profiler),
``roofline`` (projected to another GPU, :mod:`ngfx.ngpc_sim.project`) or ``model`` (generated from published
shares). ``flops`` and bytes are analytic (:mod:`ngfx.ngpc_sim.costs`), never measured.
``rest`` (optional, default ``unfused``) says how the renderer ran its rest kernels when traced: a trace of
the fused kernels (``fused``) is replayed with them as timed, never sped up again; ``per_ray`` is a frame whose
one kernel ran the field itself (march or trace, grid encoding, MLPs, shading): it holds no encoding or MLP
for the NGPC's engines and no rest time that can be told apart from them, so it is replayed as timed and gives
no fused-rest speedup (:func:`ngfx.ngpc_sim.sweep.measured_rest_speedups`).
A per-kernel table (CSV or JSON list of rows with the same field names, ``duration_s`` in seconds)
imports the same data, the way the paper fed Nsight breakdowns to its model.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ngfx.errors import NgfxInputError
from ngfx.io import read_json, write_json
from ngfx.ngpc_sim.config import ENCODING_KINDS, REST_MODES
from ngfx.ngpc_sim.schema import EVENT_TS, KERNEL_FIELDS, TRACE_HEADER_FIELDS, check_fields, check_layers

SCHEMA, VERSION = "ngfx.trace", 1
TRACE_REST_MODES = (*REST_MODES, "per_ray")  # how a traced renderer ran its rest kernels
CATEGORIES = ("encoding", "mlp", "rest")
TIMERS = ("cupti", "cuda_event", "cpu", "cpu_op", "roofline", "model")
CPU_TIMERS = ("cpu", "cpu_op")  # traces of a CPU frame, not of a GPU one
_NUMBERS = ("n_inputs", "flops", "bytes_read", "bytes_written", "duration_s")  # required in every kernel


@dataclass
class Kernel:
    """One kernel launch: its category, its size and its measured duration."""

    name: str
    category: str
    n_inputs: int
    flops: float
    bytes_read: float
    bytes_written: float
    duration_s: float
    frame: int = 0
    app: str = ""
    encoding: str = ""  # hash_grid | multires_dense_grid | lowres_dense_grid ("" for rest)
    n_levels: int = 0
    n_features_per_level: int = 0
    log2_hashmap_size: int = 0
    n_dims: int = 0
    mlp_layers: list = field(default_factory=list)  # [(out, in), ...]
    fused: str = ""  # the steps this kernel fused ("march+compact"); "" for a kernel of one step


@dataclass
class Trace:
    device: str
    timer: str
    width: int
    height: int
    kernels: list[Kernel]
    n_frames: int = 1
    rest: str = "unfused"  # how the traced renderer ran its rest kernels (TRACE_REST_MODES)

    @property
    def app(self) -> str:
        return next((k.app for k in self.kernels if k.app), "")

    @property
    def encoding(self) -> str:
        return next((k.encoding for k in self.kernels if k.encoding), "")

    @property
    def rest_as_timed(self) -> bool:
        """Whether the rest kernels replay as timed: traced fused (or per ray), so never sped up again."""
        return self.rest != "unfused"

    def frame_time_s(self) -> float:
        """The measured GPU time of one frame: kernels run one after another."""
        return sum(k.duration_s for k in self.kernels) / self.n_frames

    def share(self, category: str) -> float:
        total = sum(k.duration_s for k in self.kernels)
        return sum(k.duration_s for k in self.kernels if k.category == category) / total if total else 0.0


def encoding_kind(otype: str, n_levels: int) -> str:
    """Map a tiny-cuda-nn grid type to the NGPC's three encodings (a dense grid of <= 2 levels is low-res)."""
    key = str(otype).replace("Grid", "") or "Hash"
    if key == "Hash":
        return "hash_grid"
    if key == "Dense":  # ngfx's "lowres" preset is a dense grid of two coarse levels
        return "multires_dense_grid" if n_levels > 2 else "lowres_dense_grid"
    if key == "Tiled":
        return "lowres_dense_grid"
    raise ValueError(f"unknown grid type {otype!r}")


def validate_kernel(k: Kernel, source: str, where: str) -> Kernel:
    """Raise :class:`NgfxInputError` naming ``where`` (the event) and the bad field (its numbers and
    ``mlp_layers`` were checked as read, in :func:`_kernel_from_fields`)."""
    if k.category not in CATEGORIES:
        raise NgfxInputError(source, f"{where}.cat", f"unknown category {k.category!r}; expected one of {CATEGORIES}")
    if k.category != "rest" and k.encoding not in ENCODING_KINDS:
        raise NgfxInputError(source, f"{where}.encoding", f"expected one of {ENCODING_KINDS}, got {k.encoding!r}")
    if k.category == "encoding" and (k.n_levels < 1 or k.n_features_per_level < 1 or k.n_dims < 1):
        raise NgfxInputError(source, f"{where}.n_levels", "an encoding kernel needs n_levels, n_features_per_level, n_dims >= 1")
    return k


def _kernel_from_fields(name, category, fields: dict, source: str, where: str) -> Kernel:
    known = {f.name for f in dataclasses.fields(Kernel)} - {"name", "category"}
    values = {key: fields[key] for key in known & set(fields)}
    for key in _NUMBERS:
        if key not in values:
            raise NgfxInputError(source, f"{where}.{key}", "missing")
    values = check_fields(values, KERNEL_FIELDS, source, f"{where}.", text_ok=True)
    for key in ("app", "encoding"):
        if key in values:
            values[key] = "" if values[key] is None else str(values[key])
    if "fused" in values:
        values["fused"] = _fused_steps(values["fused"], source, f"{where}.fused")
    if "mlp_layers" in values:
        values["mlp_layers"] = check_layers(values["mlp_layers"] or [], source, f"{where}.mlp_layers")
    return validate_kernel(Kernel(name=str(name), category=str(category), **values), source, where)


def _fused_steps(value, source: str, where: str) -> str:
    """A kernel's ``fused`` field: its steps as text; null or false is a kernel of one step. ``true`` is refused: it
    does not say what was fused, and a replay must not guess whether to speed the kernel up."""
    if value is None or value is False:
        return ""
    if not isinstance(value, str):
        raise NgfxInputError(source, where, f"expected the fused steps as text (\"march+compact\"), got {value!r}")
    return value


def _header_int(meta: dict, key: str, source: str) -> int:
    return TRACE_HEADER_FIELDS[key].check(meta.get(key), source, f"otherData.{key}")


def _checked(trace: Trace, source: str, wheres: list[str]) -> Trace:
    """A trace is one app's frame with one encoding (it is labelled, replayed and reported as such), and a trace
    whose kernels all last 0 s has no frame to speed up: anything else is refused, not mislabelled or divided by.
    ``wheres``: each kernel's place in the file, for the message."""
    for key in ("app", "encoding"):
        labelled = [(getattr(k, key), where) for k, where in zip(trace.kernels, wheres) if getattr(k, key)]
        for value, where in labelled[1:]:
            if value != labelled[0][0]:
                raise NgfxInputError(source, f"{where}.{key}", f"{value!r}, but {labelled[0][1]} has {labelled[0][0]!r}: "
                                                               f"a trace is one {key}'s frame; write one trace per {key}")
    if trace.frame_time_s() <= 0:
        raise NgfxInputError(source, "dur", "every kernel lasts 0 s: the trace has no frame time to replay")
    return trace


def read_trace(path: str | Path) -> Trace:
    """Read a trace file (Chrome trace JSON); any malformed part raises naming event and field."""
    source = str(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise NgfxInputError(source, "traceEvents", "missing or not a list (is this an ngfx trace?)")
    meta = data.get("otherData")
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise NgfxInputError(source, "otherData.schema", f"expected {SCHEMA!r}")
    if meta.get("version") != VERSION:
        raise NgfxInputError(source, "otherData.version", f"unsupported version {meta.get('version')!r}; this reader knows {VERSION}")
    timer = meta.get("timer")
    if timer not in TIMERS:
        raise NgfxInputError(source, "otherData.timer", f"expected one of {TIMERS}, got {timer!r}")
    rest = meta.get("rest", "unfused")
    if rest not in TRACE_REST_MODES:
        raise NgfxInputError(source, "otherData.rest", f"expected one of {TRACE_REST_MODES}, got {rest!r}")
    kernels, wheres = [], []
    for i, ev in enumerate(data["traceEvents"]):
        if not isinstance(ev, dict) or ev.get("ph") != "X":
            continue  # metadata events (process names) are allowed and ignored
        where = f"traceEvents[{i}] ({ev.get('name', '?')})"
        args = ev.get("args")
        if not isinstance(args, dict):
            raise NgfxInputError(source, f"{where}.args", "missing or not an object")
        dur = ev.get("dur")
        if isinstance(dur, bool) or not isinstance(dur, (int, float)):
            raise NgfxInputError(source, f"{where}.dur", f"expected microseconds, got {dur!r}")
        EVENT_TS.check(ev.get("ts"), source, f"{where}.ts")  # the replay lays kernels end to end, but a bad start is a bad file
        wheres.append(where)
        kernels.append(_kernel_from_fields(ev.get("name", f"event{i}"), ev.get("cat"), {**args, "duration_s": dur / 1e6},
                                           source, where))
    if not kernels:
        raise NgfxInputError(source, "traceEvents", "no kernel events (ph 'X')")
    return _checked(Trace(device=str(meta.get("device", "unknown")), timer=timer, width=_header_int(meta, "width", source),
                          height=_header_int(meta, "height", source), kernels=kernels,
                          n_frames=_header_int(meta, "n_frames", source) if "n_frames" in meta else 1, rest=rest),
                    source, wheres)


def trace_to_chrome(trace: Trace) -> dict:
    """The Chrome trace JSON dict of ``trace``: kernels laid end to end per frame, as they ran."""
    events, t_us = [], 0.0
    for k in trace.kernels:
        args = {f.name: getattr(k, f.name) for f in dataclasses.fields(Kernel) if f.name not in ("name", "category", "duration_s")}
        events.append({"name": k.name, "cat": k.category, "ph": "X", "pid": 0, "tid": 0,
                       "ts": t_us, "dur": k.duration_s * 1e6, "args": args})
        t_us += k.duration_s * 1e6
    meta = {"schema": SCHEMA, "version": VERSION, "device": trace.device, "timer": trace.timer,
            "width": trace.width, "height": trace.height, "n_frames": trace.n_frames, "rest": trace.rest}
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}


def write_trace(trace: Trace, path: str | Path) -> None:
    write_json(path, trace_to_chrome(trace))


def read_kernel_table(path: str | Path, width: int, height: int, device: str = "unknown", timer: str = "cpu") -> Trace:
    """Import a per-kernel breakdown (CSV with a header row, or a JSON list of objects).

    Columns: name, category, n_inputs, flops, bytes_read, bytes_written, duration_s, and for
    encoding/mlp rows app, encoding, n_levels, n_features_per_level, log2_hashmap_size, n_dims;
    optional frame, mlp_layers (JSON text in CSV, e.g. ``[[64, 32], [16, 64]]``) and fused (the steps a kernel
    fused: a table has no ``rest`` label, so its fused rest kernels are told apart by this column alone).
    """
    source, path = str(path), Path(path)
    if path.suffix.lower() == ".json":
        rows = read_json(path)
        if not isinstance(rows, list):
            raise NgfxInputError(source, None, "expected a JSON list of kernel rows")
    else:
        if not path.is_file():
            raise NgfxInputError(source, None, "file not found")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    kernels, wheres = [], []
    for i, row in enumerate(rows):
        where = f"row {i + 1}"
        wheres.append(where)
        if not isinstance(row, dict) or "category" not in row:
            raise NgfxInputError(source, f"{where}.category", "missing")
        row = dict(row)
        if isinstance(row.get("mlp_layers"), str):
            try:
                row["mlp_layers"] = json.loads(row["mlp_layers"]) if row["mlp_layers"].strip() else []
            except json.JSONDecodeError:
                raise NgfxInputError(source, f"{where}.mlp_layers", "not JSON") from None
        kernels.append(_kernel_from_fields(row.get("name", where), row["category"], row, source, where))
    if not kernels:
        raise NgfxInputError(source, None, "no kernel rows")
    n_frames = max(k.frame for k in kernels) + 1
    return _checked(Trace(device=device, timer=timer, width=width, height=height, kernels=kernels, n_frames=n_frames),
                    source, wheres)


def scale_trace(trace: Trace, width: int, height: int, samples_scale: float = 1.0) -> Trace:
    """The trace at another resolution and/or sample count.

    Assumes every kernel's work (inputs, FLOPs, bytes, duration) is proportional to the number of
    samples, i.e. pixels x samples per pixel: the kernels are throughput-bound at these sizes, so
    per-launch overheads are neglected. ``samples_scale`` multiplies the samples per pixel.
    """
    if width <= 0 or height <= 0 or samples_scale <= 0:
        raise ValueError(f"scale_trace: width, height and samples_scale must be positive, got {width}, {height}, {samples_scale}")
    factor = width * height / (trace.width * trace.height) * samples_scale
    kernels = [dataclasses.replace(k, n_inputs=int(round(k.n_inputs * factor)), flops=k.flops * factor,
                                   bytes_read=k.bytes_read * factor, bytes_written=k.bytes_written * factor,
                                   duration_s=k.duration_s * factor, mlp_layers=list(k.mlp_layers))
               for k in trace.kernels]
    return dataclasses.replace(trace, width=width, height=height, kernels=kernels)
