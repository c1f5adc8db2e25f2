"""Design-space sweeps: traces x scaling factors x resolutions, run in local processes or on Dask.

Each point scales a trace to a resolution (:func:`~ngfx.ngpc_sim.trace.scale_trace`) and replays it
with N NFPs. Points are independent, so they run in parallel: local processes by default, or a
Dask cluster when given a scheduler address. Results come back sorted, so every way of running a
sweep gives the same table.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from ngfx.io import atomic_write, write_json
from ngfx.ngpc_sim.config import NGPCConfig, load_config
from ngfx.ngpc_sim.model import simulate
from ngfx.ngpc_sim.trace import Trace, read_trace, scale_trace

SCALES = (8, 16, 32, 64)
RESOLUTIONS = ((1920, 1080), (3840, 2160), (7680, 4320))
_ORDER = ("app", "encoding", "device", "width", "height", "scale")


def sweep_trace(trace: Trace, scales, resolutions, cfg: NGPCConfig) -> list[dict]:
    """All points of one trace: a GPU-only baseline row (scale 0) and one row per scale, per resolution."""
    rows = []
    for width, height in resolutions:
        t = scale_trace(trace, width, height)
        rows.append(simulate(t, cfg.replace(enabled=False)).row())
        rows += [simulate(t, cfg.replace(n_nfps=s)).row() for s in scales]
    return rows


def _sort(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: tuple(r[k] for k in _ORDER))


def run_sweep(traces: list[Trace], scales=SCALES, resolutions=RESOLUTIONS, out_dir: str | Path | None = None,
              cfg: NGPCConfig | None = None, scheduler: str | None = None, workers: int | None = None,
              progress: bool = True) -> list[dict]:
    """Sweep ``traces`` x ``scales`` x ``resolutions``; with ``out_dir``, write sweep.csv and sweep.json.

    ``scheduler``: a Dask scheduler address (``tcp://host:8786``) or a ``dask.distributed.Client``;
    otherwise ``workers`` local processes (default: the CPU count; 1 runs in this process).
    Returns one dict per point (see :meth:`~ngfx.ngpc_sim.model.SimResult.row`), sorted.
    """
    cfg = cfg or load_config()
    if not traces:
        raise ValueError("run_sweep: no traces to sweep")
    scales, resolutions = tuple(int(s) for s in scales), tuple(tuple(r) for r in resolutions)
    if any(s <= 0 for s in scales):
        raise ValueError(f"run_sweep: scaling factors must be positive, got {scales}")
    bar = tqdm(total=len(traces), desc="ngpc sweep", unit="trace", disable=not progress)
    rows: list[dict] = []
    if scheduler is not None:
        from dask.distributed import Client, as_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            futures = client.map(sweep_trace, traces, scales=scales, resolutions=resolutions, cfg=cfg, pure=False)
            for fut in as_completed(futures):
                rows += fut.result()
                bar.update()
        finally:
            if client is not scheduler:
                client.close()
    else:
        workers = workers or min(len(traces), os.cpu_count() or 1)
        if workers <= 1:
            for t in traces:
                rows += sweep_trace(t, scales, resolutions, cfg)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for part in pool.map(sweep_trace, traces, [scales] * len(traces), [resolutions] * len(traces),
                                     [cfg] * len(traces)):
                    rows += part
                    bar.update()
    bar.close()
    rows = _sort(rows)
    if out_dir is not None:
        write_results(rows, out_dir)
    return rows


def write_results(rows: list[dict], out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    write_json(out_dir / "sweep.json", rows)
    with atomic_write(out_dir / "sweep.csv", "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def load_traces(trace_dir: str | Path) -> list[Trace]:
    """Every ``*.json`` trace in ``trace_dir`` (sorted by name)."""
    paths = sorted(Path(trace_dir).glob("*.json"))
    if not paths:
        raise ValueError(f"{trace_dir}: no *.json trace files")
    return [read_trace(p) for p in paths]
