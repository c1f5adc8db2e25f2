"""Named stages of a frame, so a renderer's kernels can be timed and traced.

Renderers wrap each kernel (or fused group) in ``with stage("nerf.march", "rest", n_inputs=...)``.
Outside :func:`record_stages` a stage costs one list check; inside, each stage is timed with CUDA
events (GPU) or ``time.perf_counter`` (CPU) and returned as :class:`StageRecord`s, which
:mod:`ngfx.ngpc_sim.capture` turns into a trace. A stage that fused several steps into one kernel says which
in its ``fused`` attribute (``fused="march+compact"``), so the simulator never speeds them up again.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

CATEGORIES = ("encoding", "mlp", "rest")
PROFILER_PREFIX = "ngfx.stage:"


@dataclass
class StageRecord:
    name: str
    category: str
    n_inputs: int
    flops: float
    bytes_read: float
    bytes_written: float
    attrs: dict = field(default_factory=dict)
    start_s: float = 0.0  # host time at entry, relative to the recording's start
    duration_s: float = 0.0
    timer: str = "cpu"  # "cuda_event" or "cpu"


class _Recorder:
    def __init__(self, device: torch.device):
        self.use_cuda = device.type == "cuda"
        self.records: list[StageRecord] = []
        self._events: list[tuple] = []
        self.t0 = time.perf_counter()


_active: list[_Recorder] = []


def is_recording() -> bool:
    """True inside :func:`record_stages`: renderers then run encoding and MLP as separate, timed stages."""
    return bool(_active)


@contextlib.contextmanager
def stage(name: str, category: str, n_inputs: int = 0, flops: float = 0.0, bytes_read: float = 0.0,
          bytes_written: float = 0.0, **attrs) -> Iterator[StageRecord | None]:
    """Mark the work inside as one named stage of category ``encoding``, ``mlp`` or ``rest``.

    Yields the stage's :class:`StageRecord` (None when nothing records), so a renderer can set what it learns
    only by running the stage (the bytes its outputs take)."""
    if category not in CATEGORIES:
        raise ValueError(f"stage '{name}': category must be one of {CATEGORIES}, got {category!r}")
    if not _active:
        yield None
        return
    rec = _active[-1]
    record = StageRecord(name, category, int(n_inputs), float(flops), float(bytes_read), float(bytes_written),
                         dict(attrs), start_s=time.perf_counter() - rec.t0,
                         timer="cuda_event" if rec.use_cuda else "cpu")
    # a profiler range of the same name, so torch.profiler's kernels can be grouped by stage (ngpc_sim.capture)
    with torch.profiler.record_function(PROFILER_PREFIX + name):
        if rec.use_cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            yield record
            end.record()
            rec._events.append((record, begin, end))
        else:
            t = time.perf_counter()
            yield record
            record.duration_s = time.perf_counter() - t
    rec.records.append(record)


@contextlib.contextmanager
def record_stages(device: torch.device | str = "cpu") -> Iterator[list[StageRecord]]:
    """Collect every stage run inside; durations are filled in (after a sync) when the block exits."""
    rec = _Recorder(torch.device(device))
    _active.append(rec)
    try:
        yield rec.records
    finally:
        _active.remove(rec)
        if rec.use_cuda:
            torch.cuda.synchronize()
            for record, begin, end in rec._events:
                record.duration_s = begin.elapsed_time(end) / 1e3
