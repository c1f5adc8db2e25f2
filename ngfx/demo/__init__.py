"""``ngfx demo``: the whole system on embedded procedural scenes, ending in ``OUT/report.html``.

Trains the four applications and a NeLF, renders them, captures a trace of each frame, sweeps the NGPC
model over the traces, estimates the NeLF's phone latency and writes one report. Sizes follow the
machine: ``smoke`` (CI: every stage runs), ``quick`` (the CPU default), ``full`` (GPU: real sizes, and the
real scenes under ``--data`` when given); README.md gives each size's measured time.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ngfx.demo.plan import APPS, DEMO_SIZES, REAL_SCENES, build_stages
from ngfx.demo.report import write_report
from ngfx.demo.stages import StageRunner


@dataclass
class DemoResult:
    report: Path | None  # None when the environment check stopped the demo before it began
    status: dict  # stage name -> {"state": done | failed | skipped, ...}
    problems: list[str]  # what the environment check found

    @property
    def ok(self) -> bool:
        return not self.problems and all(entry["state"] == "done" for entry in self.status.values())


def run_demo(out_dir: str, size: str | None = None, data_dir: str | None = None) -> DemoResult:
    """Run (or resume) the demo into ``out_dir``. The environment is checked first (every pending stage's
    imports, in seconds); a problem stops the demo before any training, with one line per problem."""
    size = size or ("full" if torch.cuda.is_available() else "quick")
    if size not in DEMO_SIZES:
        raise ValueError(f"demo size must be one of {', '.join(DEMO_SIZES)}, got {size!r}")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"--data {data_dir}: not a folder")
    _warn_if_data_ignored(data_dir, size)
    out = Path(out_dir)
    if (out / "run.json").is_file():  # a training run's folder: the demo's runs and report would land among its records
        raise ValueError(f"--out {out_dir}: is a run folder (holds run.json); give the demo a folder of its own")
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"ngfx demo: size {size} on {device}, writing {out.resolve()}")
    print(f"ngfx demo: {size} shows {DEMO_SIZES[size].shows}")
    start = time.perf_counter()
    runner = StageRunner(out)
    stages = build_stages(out, size, device, data_dir)
    problems = runner.check(stages)
    if problems:
        for line in problems:
            print(f"ngfx demo: environment: {line}", file=sys.stderr)
        print("ngfx demo: stopped before any stage ran; install what is missing (pip install -e . installs "
              "every package the demo needs) and run it again", file=sys.stderr)
        return DemoResult(None, runner.status, problems)
    status = runner.run_all(stages)
    report = write_report(out, status, size=size, device=device)
    states = [entry["state"] for entry in status.values()]
    print(f"ngfx demo: {states.count('done')} stages done, {states.count('failed')} failed, "
          f"{states.count('skipped')} skipped in {time.perf_counter() - start:.1f} s")
    print(f"ngfx demo: report at {report.resolve()}")
    return DemoResult(report, status, [])


def _warn_if_data_ignored(data_dir: str | None, size: str) -> None:
    if data_dir is None:
        return
    if size != "full":
        print(f"ngfx demo: warning: --data {data_dir} is ignored at size {size}: real scenes are used with --full "
              "only (the CPU sizes train on the embedded procedural scenes)", file=sys.stderr)
        return
    missing = [f"{app} ({REAL_SCENES[app]})" for app in APPS
               if app in REAL_SCENES and not (Path(data_dir) / REAL_SCENES[app]).exists()]
    if missing:
        print(f"ngfx demo: warning: --data {data_dir} lacks {', '.join(missing)}: those apps use their procedural "
              "scenes", file=sys.stderr)
