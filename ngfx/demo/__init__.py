"""``ngfx demo``: the whole system on embedded procedural scenes, ending in ``OUT/report.html``.

Trains the four applications and a NeLF, renders them, captures a trace of each frame, sweeps the NGPC
model over the traces, estimates the NeLF's phone latency and writes one report. Sizes follow the
machine: ``smoke`` (CI, about a minute), ``quick`` (CPU default, <= 10 minutes on 2 cores), ``full``
(GPU: real sizes, and the real scenes under ``--data`` when given).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ngfx.demo.plan import build_stages
from ngfx.demo.report import write_report
from ngfx.demo.stages import StageRunner

SIZES = ("smoke", "quick", "full")


def run_demo(out_dir: str, size: str | None = None, data_dir: str | None = None) -> Path:
    """Run (or resume) the demo into ``out_dir``; returns the report's path."""
    size = size or ("full" if torch.cuda.is_available() else "quick")
    if size not in SIZES:
        raise ValueError(f"demo size must be one of {', '.join(SIZES)}, got {size!r}")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"--data {data_dir}: not a folder")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"ngfx demo: size {size} on {device}, writing {out.resolve()}")
    start = time.perf_counter()
    runner = StageRunner(out)
    status = runner.run_all(build_stages(out, size, device, data_dir))
    report = write_report(out, status, size=size, device=device)
    states = [entry["state"] for entry in status.values()]
    print(f"ngfx demo: {states.count('done')} stages done, {states.count('failed')} failed, "
          f"{states.count('skipped')} skipped in {time.perf_counter() - start:.1f} s")
    print(f"ngfx demo: report at {report.resolve()}")
    return report
