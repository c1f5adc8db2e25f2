"""Which assumption the headline hangs on: each assumed parameter moved over a stated range, one at a time.

The headline is the hash-grid mean speedup over the four apps at 1080p (paper inputs, RTX 3090 profile) at
8 and at 64 NFPs. Every other parameter stays at its value and nothing is refitted, so a wide bar says how
much of the match to the paper rests on that one choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ngfx.ngpc_sim.calibrate import mean_speedup
from ngfx.ngpc_sim.config import NGPCConfig
from ngfx.ngpc_sim.paper import INPUTS, PaperInputs

HEADLINE_SCALES = (8, 64)


@dataclass(frozen=True)
class Assumption:
    name: str
    low_label: str
    high_label: str
    apply: Callable[[NGPCConfig, PaperInputs, bool], tuple[NGPCConfig, PaperInputs]]  # (cfg, inputs, high) -> moved


def _cfg(field: str, low, high):
    return lambda cfg, inputs, hi: (cfg.replace(**{field: high if hi else low}), inputs)


def _scaled_gpu(factor_low: float, factor_high: float):
    def apply(cfg, inputs, hi):
        import dataclasses

        factor = factor_high if hi else factor_low
        gpu = dataclasses.replace(cfg.gpu, memory_bytes_per_s=cfg.gpu.memory_bytes_per_s * factor)
        return dataclasses.replace(cfg, gpu=gpu), inputs
    return apply


def _inputs(change: Callable[[PaperInputs, bool], PaperInputs]):
    return lambda cfg, inputs, hi: (cfg, change(inputs, hi))


def _scaled(values: dict, factor: float) -> dict:
    return {k: v * factor for k, v in values.items()}


def _table_size(log2_low: int, log2_high: int):
    def change(inputs, hi):
        shape = dict(inputs.encoding_shape)
        levels, features, _ = shape["hash_grid"]
        shape["hash_grid"] = (levels, features, log2_high if hi else log2_low)
        return inputs.replace(encoding_shape=shape)
    return change


ASSUMPTIONS = (
    Assumption("A1 per-app share offsets", "none (all at the average)", "x1.5",
               _inputs(lambda i, hi: i.replace(share_offset=_scaled(i.share_offset, 1.5 if hi else 0.0)))),
    Assumption("A2 encoding part of the neural share", "0.45", "0.65",
               _inputs(lambda i, hi: i.replace(encoding_fraction=0.65 if hi else 0.45))),
    Assumption("A3 1080p frame times (NSDF, GIA, NVR)", "x0.5", "x2",
               _inputs(lambda i, hi: i.replace(frame_s={a: v if a == "nerf" else v * (2 if hi else 0.5)
                                                        for a, v in i.frame_s.items()}))),
    Assumption("A4 GPU encoding+MLP throughputs (fitted)", "x0.75", "x1.25",
               _inputs(lambda i, hi: i.replace(inputs_per_s=_scaled(i.inputs_per_s, 1.25 if hi else 0.75)))),
    Assumption("A5 hash table size T", "2^17", "2^19", _inputs(_table_size(17, 19))),
    Assumption("batches per frame", "64", "1024", _cfg("batches_per_frame", 64, 1024)),
    Assumption("NGPC clock", "1.2 GHz", "2.0 GHz", _cfg("clock_hz", 1.2e9, 2.0e9)),
    Assumption("grid SRAM per level unit", "512 KiB", "2 MiB", _cfg("grid_sram_bytes", 2**19, 2**21)),
    Assumption("L2/DRAM bandwidth", "x0.5", "x2", _scaled_gpu(0.5, 2.0)),
    Assumption("fused rest speedup (paper: 9.94x)", "5x", "20x", _cfg("fused_rest_speedup", 5.0, 20.0)),
    Assumption("level-unit pipeline fill", "4 cycles", "64 cycles", _cfg("encoding_pipeline_cycles", 4, 64)),
    Assumption("I/O bytes per input", "12", "48", _cfg("io_bytes_per_input", 12.0, 48.0)),
)


def sensitivity_table(cfg: NGPCConfig, inputs: PaperInputs = INPUTS) -> list[dict]:
    """One row per assumption: the headline speedups at its low and high ends, and the swing at 64 NFPs."""
    base = {s: mean_speedup("hash_grid", s, cfg, inputs) for s in HEADLINE_SCALES}
    rows = []
    for a in ASSUMPTIONS:
        row = {"assumption": a.name, "low": a.low_label, "high": a.high_label}
        for hi, end in ((False, "low"), (True, "high")):
            moved_cfg, moved_inputs = a.apply(cfg, inputs, hi)
            for s in HEADLINE_SCALES:
                row[f"{end}_{s}"] = mean_speedup("hash_grid", s, moved_cfg, moved_inputs)
        for s in HEADLINE_SCALES:
            row[f"base_{s}"] = base[s]
        row["swing_64"] = abs(row["high_64"] - row["low_64"])
        rows.append(row)
    return sorted(rows, key=lambda r: -r["swing_64"])


def plot_tornado(rows: list[dict], path, scale: int = 64) -> None:
    """Bars from each assumption's low-end to high-end headline, around the baseline (widest on top)."""
    import matplotlib.pyplot as plt

    from ngfx.ngpc_sim.report import save_figure

    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    base = rows[0][f"base_{scale}"]
    for y, r in enumerate(rows):
        low, high = r[f"low_{scale}"], r[f"high_{scale}"]
        ax.barh(y, low - base, left=base, color="C0", label="low end" if y == 0 else None)
        ax.barh(y, high - base, left=base, color="C3", label="high end" if y == 0 else None)
        ax.text(max(low, high, base) + 0.3, y, f"{r['low']} .. {r['high']}", va="center", fontsize=7)
    ax.axvline(base, color="k", lw=1)
    ax.set_yticks(range(len(rows)), [r["assumption"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"hash-grid mean speedup at {scale} NFPs (baseline {base:.1f}x)")
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)
