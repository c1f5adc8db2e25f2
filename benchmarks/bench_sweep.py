"""CPU time of the 144-point NGPC sweep: 4 apps x 3 encodings x 4 scaling factors x 3 resolutions.

    python benchmarks/bench_sweep.py [--out OUT_DIR]

Runs the paper-input traces through ``run_sweep`` (plus the 36 GPU-only baseline rows) serially and
with the default local process pool, best of ``--repeat`` runs each, and checks both give the same
table. Target: <= 10 s on the 2-core CI machine. Writes ``bench_sweep.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ngfx.io import write_json  # noqa: E402
from ngfx.ngpc_sim.paper import paper_traces
from ngfx.ngpc_sim.sweep import RESOLUTIONS, SCALES, run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    traces = paper_traces()
    results, rows = {}, {}
    for label, workers in (("serial", 1), (f"{os.cpu_count()} processes", None)):
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            rows[label] = run_sweep(traces, SCALES, RESOLUTIONS, workers=workers, progress=False)
            times.append(time.perf_counter() - t)
        results[label] = min(times)
    labels = list(rows)
    assert rows[labels[0]] == rows[labels[1]], "serial and parallel sweeps differ"
    n_points = sum(1 for r in rows[labels[0]] if r["scale"] > 0)
    for label, seconds in results.items():
        print(f"{n_points}-point sweep, {label}: {seconds:.2f} s (best of {args.repeat})")
    if args.out:
        write_json(os.path.join(args.out, "bench_sweep.json"),
                   {"n_points": n_points, "cpu_count": os.cpu_count(), "seconds": results})


if __name__ == "__main__":
    main()
