"""The SimPy model of a GPU with an NGPC beside its L2, replaying one frame of a trace.

Block diagram, one process or resource per box::

    batches --> [NFP i: encoding engine] --(on-chip hand-off)--> [NFP i: MLP engine] --+
                      |  table loads, I/O                                             |
                 [L2/DRAM bandwidth] (shared resource)                                v
                                                           [GPU SMs: rest kernels of batch k]

The frame's neural-field inputs are cut into batches; each NFP takes the next batch, loads the
grid tables it needs (bandwidth), encodes, evaluates the MLP, and hands the batch to the SMs, which
run that batch's share of the rest kernels (fused or unfused) while the NFPs work on later batches.
Events happen per batch, not per input, so a 144-point sweep takes seconds.

Modelling assumptions (also printed in the sweep report, see ``MODEL_ASSUMPTIONS``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import simpy

from ngfx.ngpc_sim.config import NGPCConfig
from ngfx.ngpc_sim.engines import encoding_cycles, mlp_cycles, table_load_bytes, tables_resident
from ngfx.ngpc_sim.trace import Kernel, Trace



MODEL_ASSUMPTIONS = (
    "A frame's neural-field inputs are cut into `batches_per_frame` equal batches; each batch carries the same "
    "share of every encoding/MLP kernel and of the rest kernels' time.",
    "The rest kernels of a batch run on the SMs after its MLP (the SMs run batch k while the NFPs run k+1); "
    "their traced time is divided by `fused_rest_speedup` when fused, except kernels traced fused (the trace's "
    "`rest` label, or a kernel's own `fused` steps), which replay as timed. Ray generation before the first batch "
    "is not modelled separately.",
    "An MLP kernel that fused other steps with its layers (NeRF's field head: SH of the direction between the "
    "density and colour MLPs) moves to the MLP engine whole: the engine's cycles are those of its layers, and the "
    "fused steps' arithmetic is not modelled apart.",
    "L2/DRAM is one FIFO port at the GPU profile's bandwidth; the SMs' own traffic is already inside their "
    "traced times and does not contend with the NGPC.",
    "Tables that fit a level unit's SRAM are loaded once per frame and broadcast to all NFPs; larger tables are "
    "streamed in SRAM-sized pieces for every batch, and the batch passes the level unit once per piece.",
    "Inside an NFP the encoding engine and MLP engine overlap through a one-batch buffer (activations stay on chip).",
    "The MLP engine is weight-stationary: one input vector per cycle per 64x64 weight tile, plus a fill latency of "
    "rows+cols cycles per tile per batch. Without layer shapes in the trace, tiles are taken from the FLOPs.",
    "With the NGPC disabled the GPU runs every kernel one after another, as traced.",
)


@dataclass
class SimResult:
    app: str
    encoding: str
    device: str
    timer: str  # how the trace was timed (a CPU-timed baseline is a CPU frame)
    width: int
    height: int
    scale: int  # number of NFPs (0: NGPC disabled)
    rest_mode: str  # how the SMs run the rest kernels in this replay
    traced_rest: str  # how the traced renderer ran them (a fused trace's rest is replayed as timed)
    baseline_s: float  # the trace's own GPU frame time
    frame_s: float
    speedup: float
    amdahl_bound: float
    utilisation: dict  # unit -> busy fraction of the frame
    n_batches: int
    timeline: list = field(default_factory=list)  # (unit, start_s, end_s) when recorded

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_s

    def row(self) -> dict:
        """A flat dict for CSV/JSON tables."""
        out = {k: getattr(self, k) for k in ("app", "encoding", "device", "timer", "width", "height", "scale",
                                             "rest_mode", "traced_rest",
                                             "baseline_s", "frame_s", "speedup", "amdahl_bound", "n_batches")}
        out["fps"] = self.fps
        out.update({f"util_{k}": v for k, v in self.utilisation.items()})
        return out


def rest_speedup(trace: Trace, cfg: NGPCConfig) -> float:
    """How much faster than traced the SMs run the unfused rest kernels: 1 for a trace of fused kernels."""
    return 1.0 if trace.rest_as_timed else cfg.rest_speedup


def kernel_s(k: Kernel, trace: Trace, cfg: NGPCConfig) -> float:
    """A kernel's time on the GPU's SMs in a replay: a rest kernel divided by the fused-rest speedup unless it ran
    fused already (the trace's label or the kernel's own ``fused`` steps say so), anything else as traced."""
    if k.category != "rest" or k.fused:
        return k.duration_s
    return k.duration_s / rest_speedup(trace, cfg)


def rest_replay_s(trace: Trace, cfg: NGPCConfig) -> float:
    """Seconds per frame the SMs take for the rest kernels in a replay (:func:`kernel_s`)."""
    return sum(kernel_s(k, trace, cfg) for k in trace.kernels if k.category == "rest") / trace.n_frames


def amdahl_bound(trace: Trace, cfg: NGPCConfig) -> float:
    """S_max = T / T_rest: the speedup if encoding and MLP took no time at all (with every rest kernel sped up by
    s_R, s_R / (1 - p) for an encoding and MLP share p)."""
    rest_s = rest_replay_s(trace, cfg)
    return math.inf if rest_s <= 0 else trace.frame_time_s() / rest_s


class _Units:
    """Busy-time bookkeeping (and optional intervals) of the model's units."""

    def __init__(self, env: simpy.Environment, record: bool):
        self.env, self.record = env, record
        self.busy = {"gpu_sms": 0.0, "encoding_engines": 0.0, "mlp_engines": 0.0, "memory": 0.0}
        self.timeline: list = []

    def work(self, unit: str, seconds: float, lane: str | None = None):
        start = self.env.now
        yield self.env.timeout(seconds)
        self.busy[unit] += seconds
        if self.record:
            self.timeline.append((lane or unit, start, self.env.now))


def _frame_workload(trace: Trace, cfg: NGPCConfig):
    """Per-frame totals: rest seconds on the SMs, neural inputs, and the encoding and MLP kernels."""
    frames = trace.n_frames
    rest_s = rest_replay_s(trace, cfg)
    enc = [k for k in trace.kernels if k.category == "encoding"]
    mlp = [k for k in trace.kernels if k.category == "mlp"]
    inputs = sum(k.n_inputs for k in (enc or mlp)) / frames
    return rest_s, inputs, enc, mlp


def _grid_key(k) -> tuple:
    return (k.app, k.encoding, k.n_levels, k.n_features_per_level, k.log2_hashmap_size, k.n_dims)


def simulate(trace: Trace, cfg: NGPCConfig, record_timeline: bool = False) -> SimResult:
    """Replay one frame of ``trace`` on the GPU + NGPC described by ``cfg`` (``cfg.n_nfps`` NFPs)."""
    env = simpy.Environment()
    units = _Units(env, record_timeline)
    rest_s, n_inputs, enc_kernels, mlp_kernels = _frame_workload(trace, cfg)
    baseline = trace.frame_time_s()

    if not cfg.enabled or n_inputs <= 0:
        # The GPU alone: every kernel, one after another, as traced (or with the rest fused).
        def gpu_only():  # one span: a frame of a per-kernel trace holds tens of thousands of kernels
            yield from units.work("gpu_sms", sum(kernel_s(k, trace, cfg) for k in trace.kernels) / trace.n_frames)
        env.process(gpu_only())
        env.run()
        n_batches, scale = 0, 0
    else:
        n_batches = max(1, min(cfg.batches_per_frame, math.ceil(n_inputs)))
        batch_fraction = 1.0 / n_batches
        frames = trace.n_frames
        memory = simpy.Resource(env, capacity=1)  # one shared L2/DRAM port: transfers queue for bandwidth
        todo = simpy.Store(env)
        done = simpy.Store(env)
        for b in range(n_batches):
            todo.put(b)

        def transfer(n_bytes: float, lane: str):
            if n_bytes <= 0:
                return
            with memory.request() as req:
                yield req
                yield from units.work("memory", n_bytes / cfg.gpu.memory_bytes_per_s, lane="memory")

        # One table per distinct grid: a renderer that queries the same field many times per frame
        # (sphere-tracing steps) launches many encoding kernels over one set of tables.
        grids = list({_grid_key(k): k for k in enc_kernels}.values())
        resident = [k for k in grids if tables_resident(k, cfg)]
        streamed = [k for k in grids if not tables_resident(k, cfg)]

        def table_broadcast():
            # Resident tables are read from L2 once and written to every NFP's level units at once.
            yield from transfer(sum(table_load_bytes(k, cfg) for k in resident), "tables")
            tables_ready.succeed()

        tables_ready = env.event()
        env.process(table_broadcast())

        # every batch carries the same share of every kernel, so its cycles are counted once
        enc_cycles = sum(encoding_cycles(k, round(k.n_inputs / frames * batch_fraction), cfg) for k in enc_kernels)
        mlp_cycles_per_batch = sum(mlp_cycles(k, round(k.n_inputs / frames * batch_fraction), cfg) for k in mlp_kernels)

        def encoding_engine(nfp: int, handoff: simpy.Store):
            yield tables_ready
            while len(todo.items):
                b = yield todo.get()
                load = sum(table_load_bytes(k, cfg) for k in streamed)  # pieces streamed for every batch
                yield from transfer(load + n_inputs * batch_fraction * cfg.io_bytes_per_input, f"nfp{nfp}")
                yield from units.work("encoding_engines", enc_cycles / cfg.clock_hz, lane=f"enc{nfp}")
                yield handoff.put(b)
            yield handoff.put(None)

        def mlp_engine(nfp: int, handoff: simpy.Store):
            while True:
                b = yield handoff.get()
                if b is None:
                    return
                yield from units.work("mlp_engines", mlp_cycles_per_batch / cfg.clock_hz, lane=f"mlp{nfp}")
                yield done.put(b)

        def gpu_sms():
            for _ in range(n_batches):
                yield done.get()
                yield from units.work("gpu_sms", rest_s * batch_fraction)

        for nfp in range(cfg.n_nfps):
            handoff = simpy.Store(env, capacity=1)  # the activations buffer between the two engines
            env.process(encoding_engine(nfp, handoff))
            env.process(mlp_engine(nfp, handoff))
        env.process(gpu_sms())
        env.run()
        scale = cfg.n_nfps

    frame_s = env.now
    per_unit = {"gpu_sms": 1, "encoding_engines": max(1, scale), "mlp_engines": max(1, scale), "memory": 1}
    utilisation = {u: units.busy[u] / per_unit[u] / frame_s if frame_s > 0 else 0.0 for u in units.busy}
    rest_mode = "fused" if trace.rest_as_timed else (cfg.rest_mode if cfg.enabled else "unfused")
    return SimResult(app=trace.app, encoding=trace.encoding, device=trace.device, timer=trace.timer, width=trace.width,
                     height=trace.height,
                     scale=scale, rest_mode=rest_mode, traced_rest=trace.rest, baseline_s=baseline,
                     frame_s=frame_s, speedup=baseline / frame_s if frame_s > 0 else math.inf,
                     amdahl_bound=amdahl_bound(trace, cfg), utilisation=utilisation, n_batches=n_batches,
                     timeline=units.timeline)
