"""Every number the simulator reads (config file, trace, kernel table, command line), checked in one place.

Each field has a kind (a whole number or a real one) and an inclusive range wide enough for any real GPU
or accelerator and narrow enough that a value which cannot run (``batches_per_frame = 1e12``,
``log2_hashmap_size = 5000``) or means nothing (NaN, infinity, ``true``, ``0.5`` MAC rows, ``-8`` NFPs)
is refused with the file (or flag) and the field named, before any simulation starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ngfx.errors import NgfxInputError
from ngfx.io import check_number


@dataclass(frozen=True)
class Number:
    """A field's kind (``int``: whole numbers only) and its inclusive range."""

    kind: type
    low: float
    high: float
    infinite_ok: bool = False  # +inf is a value (an Amdahl bound with no rest kernels), not an error

    def check(self, value, source: str, field: str | None = None, text_ok: bool = False):
        """``value`` as ``kind``, or :class:`NgfxInputError` naming ``source`` and ``field``.

        ``text_ok``: a string holding a number is read (CSV cells are text); elsewhere text is refused.
        """
        if text_ok and isinstance(value, str):
            try:
                value = float(value) if value.strip() else 0
            except ValueError:
                raise NgfxInputError(source, field, f"expected a number, got {value!r}") from None
        return check_number(value, source, field, self.low, self.high, self.kind is int, self.infinite_ok)


def whole(low: float, high: float) -> Number:
    return Number(int, low, high)


def real(low: float, high: float) -> Number:
    return Number(float, low, high)


NFPS = whole(1, 4096)  # scaling factors: a cluster of 1 .. 4096 NFPs
SPEEDUP = real(1e-3, 1e4)  # a rest-kernel speedup (below 1: a slowdown)

NGPC_FIELDS = {
    "clock_hz": real(1e6, 1e11),
    "n_level_units": whole(1, 1024),
    "grid_sram_bytes": whole(1024, 2**34),
    "table_bytes_per_feature": whole(1, 8),
    "hash_grid_inputs_per_cycle": whole(1, 1024),
    "multires_dense_grid_inputs_per_cycle": whole(1, 1024),
    "lowres_dense_grid_inputs_per_cycle": whole(1, 1024),
    "encoding_pipeline_cycles": whole(0, 10**6),
    "mac_rows": whole(1, 4096),
    "mac_cols": whole(1, 4096),
    "batches_per_frame": whole(1, 65536),
    "fused_rest_speedup": SPEEDUP,
    "io_bytes_per_input": real(0, 1e6),
    "area_pct_per_nfp": real(0, 100),
    "power_pct_per_nfp": real(0, 100),
    "n_nfps": NFPS,
}

GPU_FIELDS = {
    "n_sms": whole(1, 100_000),
    "l2_bytes": whole(1, 2**40),
    "memory_bytes_per_s": real(1e6, 1e15),
    "peak_flops": real(1e6, 1e18),
    "die_mm2": real(1, 1e5),
    "tdp_w": real(0.1, 1e5),
}

KERNEL_FIELDS = {
    "n_inputs": whole(0, 10**13),
    "flops": real(0, 1e18),
    "bytes_read": real(0, 1e18),
    "bytes_written": real(0, 1e18),
    "duration_s": real(0, 3600),
    "frame": whole(0, 10**6),
    "n_levels": whole(0, 64),
    "n_features_per_level": whole(0, 64),
    "log2_hashmap_size": whole(0, 40),
    "n_dims": whole(0, 8),
}
LAYER_WIDTH = whole(1, 65536)

EVENT_TS = real(0, 1e13)  # a trace event's start, in microseconds (about four months)

TRACE_HEADER_FIELDS = {"width": whole(1, 65536), "height": whole(1, 65536), "n_frames": whole(1, 10**6)}


# one row of a sweep's results (sweep.json): scale 0 is the GPU-only baseline of its trace
SWEEP_ROW_FIELDS = {
    "width": whole(1, 65536),
    "height": whole(1, 65536),
    "scale": whole(0, NFPS.high),
    "baseline_s": real(1e-12, 1e6),
    "frame_s": real(1e-12, 1e6),
    "fps": real(1e-6, 1e12),
    "speedup": real(1e-6, 1e9),
    "amdahl_bound": Number(float, 1e-6, math.inf, infinite_ok=True),
    "n_batches": whole(0, 10**9),
    **{f"util_{unit}": real(0, 1 + 1e-9) for unit in ("gpu_sms", "encoding_engines", "mlp_engines", "memory")},
    "rest_speedup": SPEEDUP,
    "area_mm2": real(0, 1e6),
    "power_w": real(0, 1e6),
    "speedup_per_mm2": real(0, 1e9),
    "speedup_per_w": real(0, 1e9),
}


def check_fields(values: dict, spec: dict[str, Number], source: str, prefix: str = "", text_ok: bool = False) -> dict:
    """``values`` with every field named in ``spec`` checked (fields absent from ``values`` are left out)."""
    return {k: (spec[k].check(v, source, prefix + k, text_ok) if k in spec else v) for k, v in values.items()}


def check_layers(value, source: str, field: str) -> list[list[int]]:
    """``mlp_layers``: a list of ``[out, in]`` pairs of whole numbers >= 1."""
    if not isinstance(value, (list, tuple)):
        raise NgfxInputError(source, field, f"expected a list of [out, in] pairs, got {type(value).__name__}")
    layers = []
    for i, layer in enumerate(value):
        if not isinstance(layer, (list, tuple)) or len(layer) != 2:
            raise NgfxInputError(source, f"{field}[{i}]", f"expected an [out, in] pair, got {layer!r}")
        layers.append([LAYER_WIDTH.check(v, source, f"{field}[{i}]") for v in layer])
    return layers

