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

from ngfx.errors import NgfxInputError
from ngfx.io import atomic_write, write_json
from ngfx.ngpc_sim.config import GPUProfile, NGPCConfig, load_config
from ngfx.ngpc_sim.model import simulate
from ngfx.ngpc_sim.project import project_trace
from ngfx.ngpc_sim.schema import NFPS
from ngfx.ngpc_sim.trace import Trace, read_trace, scale_trace
from ngfx.progress import progress_bar

SCALES = (8, 16, 32, 64)
RESOLUTIONS = ((1920, 1080), (3840, 2160), (7680, 4320))
CONNECT_TIMEOUT_S = 10  # a scheduler that does not answer within this is reported, not waited for
_ORDER = ("app", "encoding", "device", "width", "height", "scale")


def sweep_trace(trace: Trace, scales, resolutions, cfg: NGPCConfig, project: bool = False,
                source: GPUProfile | None = None) -> list[dict]:
    """All points of one trace: a GPU-only baseline row (scale 0) and one row per scale, per resolution,
    each with the rest speedup it used and the GPU + NGPC's area and power. ``project``: the trace, scaled to
    each resolution, is projected onto ``cfg.gpu`` from ``source`` (its GPU's profile, None for a CPU)."""
    rows = []
    for width, height in resolutions:
        t = scale_trace(trace, width, height)
        if project:  # after scaling: a kernel's launch does not grow with the pixels
            t = project_trace(t, cfg.gpu, source)
        for point in [cfg.replace(enabled=False)] + [cfg.replace(n_nfps=s) for s in scales]:
            row = simulate(t, point).row()
            area, power = point.area_mm2(), point.power_w()
            row.update(rest_speedup=point.fused_rest_speedup, area_mm2=area, power_w=power,
                       speedup_per_mm2=row["speedup"] / area, speedup_per_w=row["speedup"] / power)
            rows.append(row)
    return rows


def measured_rest_speedups(traces: list[Trace]) -> dict[str, float]:
    """Per app, the rest kernels' unfused / fused time per pixel, from an unfused and a fused trace of it.

    The fused rest speedup differs by app (a ray-marching loop of small ops gains far more from fusion
    than one image lookup), so each app's unfused trace is replayed with its own measured ratio.
    """
    rest = {}  # (app, rest mode) -> rest seconds per pixel
    for t in traces:
        rest.setdefault((t.app, t.rest), t.frame_time_s() * t.share("rest") / (t.width * t.height))
    return {app: rest[(app, "unfused")] / rest[(app, "fused")] for app, mode in rest
            if mode == "unfused" and rest.get((app, "fused"), 0) > 0}


def connect(scheduler):
    """A ``dask.distributed.Client`` for ``scheduler`` (an address or a client); an address that does not parse
    or does not answer is refused naming ``--scheduler``."""
    from dask.distributed import Client

    if isinstance(scheduler, Client):
        return scheduler
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, ValueError) as e:  # TimeoutError is an OSError; a malformed address raises ValueError
        raise NgfxInputError("--scheduler", None, f"cannot reach a Dask scheduler at {scheduler!r}: {e}") from None


def _sort(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: tuple(r[k] for k in _ORDER))


def run_sweep(traces: list[Trace], scales=SCALES, resolutions=RESOLUTIONS, out_dir: str | Path | None = None,
              cfg: NGPCConfig | None = None, scheduler: str | None = None, workers: int | None = None,
              progress: bool = True, rest_speedups: dict[str, float] | None = None,
              project_from: list[GPUProfile | None] | None = None) -> list[dict]:
    """Sweep ``traces`` x ``scales`` x ``resolutions``; with ``out_dir``, write sweep.csv and sweep.json.

    ``scheduler``: a Dask scheduler address (``tcp://host:8786``) or a ``dask.distributed.Client``;
    otherwise ``workers`` local processes (default: the CPU count; 1 runs in this process).
    ``rest_speedups``: an app's fused rest speedup (:func:`measured_rest_speedups`) replacing the config's.
    ``project_from``: project each trace onto ``cfg.gpu`` by the roofline, from its GPU's profile (None: a CPU).
    Returns one dict per point (see :meth:`~ngfx.ngpc_sim.model.SimResult.row`), sorted.
    """
    cfg = cfg or load_config()
    if not traces:
        raise ValueError("run_sweep: no traces to sweep")
    scales = tuple(NFPS.check(s, "--scale") for s in scales)
    resolutions = tuple(tuple(r) for r in resolutions)
    rest_speedups = rest_speedups or {}
    cfgs = [cfg.replace(fused_rest_speedup=rest_speedups[t.app]) if t.app in rest_speedups else cfg for t in traces]
    project = project_from is not None
    sources = project_from if project else [None] * len(traces)
    n = len(traces)
    client = connect(scheduler) if scheduler is not None else None  # before the bar: a bad address is an input error
    bar = progress_bar(total=len(traces), desc="ngpc sweep", unit="trace", disable=not progress)
    rows: list[dict] = []
    if client is not None:
        from dask.distributed import as_completed

        try:
            futures = client.map(sweep_trace, traces, [scales] * n, [resolutions] * n, cfgs, [project] * n, sources,
                                 pure=False)
            for fut in as_completed(futures):
                rows += fut.result()
                bar.update()
        finally:
            if client is not scheduler:
                client.close()
    else:
        workers = workers or min(len(traces), os.cpu_count() or 1)
        if workers <= 1:
            for t, c, source in zip(traces, cfgs, sources):
                rows += sweep_trace(t, scales, resolutions, c, project, source)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for part in pool.map(sweep_trace, traces, [scales] * n, [resolutions] * n, cfgs, [project] * n,
                                     sources):
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


def load_traces(*paths: str | Path) -> list[Trace]:
    """The traces in ``paths``: trace files, and every ``*.json`` trace in folders (sorted by name)."""
    files = []
    for path in map(Path, paths):
        found = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if not found:
            raise NgfxInputError(str(path), None, "no *.json trace files in this folder")
        files += found
    return [read_trace(p) for p in files]
