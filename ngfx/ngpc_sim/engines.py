"""Cycle and byte counts of one NFP's engines for one batch: the arithmetic the SimPy processes wait on.

Kept apart from the event loop so each count can be checked by hand (tests/test_sim_engines.py).
"""

from __future__ import annotations

import math

from ngfx.ngpc_sim.config import NGPCConfig
from ngfx.ngpc_sim.trace import Kernel


def level_table_bytes(k: Kernel, cfg: NGPCConfig) -> int:
    """Bytes of one level's table: 2^log2_hashmap_size entries of F features (the largest level).

    Traces give the table size as ``log2_hashmap_size`` (for dense grids: log2 of the largest level's
    entries); coarser levels are smaller, so this is an upper bound the engine must plan for.
    """
    return (2 ** k.log2_hashmap_size) * k.n_features_per_level * cfg.table_bytes_per_feature


def sram_passes(k: Kernel, cfg: NGPCConfig) -> int:
    """How many SRAM-sized pieces a level's table is split into (1: the whole level is resident).

    A table larger than the grid SRAM is streamed in pieces; the batch flows through the level unit
    once per piece, each pass serving the inputs whose vertices fall in the piece.
    """
    return max(1, math.ceil(level_table_bytes(k, cfg) / cfg.grid_sram_bytes))


def encoding_cycles(k: Kernel, n_inputs: int, cfg: NGPCConfig) -> int:
    """Cycles for the encoding engine to encode ``n_inputs`` inputs of encoding kernel ``k``.

    The 16 level units work on the same input(s) in parallel, one level each; levels beyond 16 take
    extra rounds. Per round: ceil(n / inputs_per_cycle) cycles per SRAM pass, plus the pipeline fill.
    """
    if n_inputs <= 0:
        return 0
    rounds = math.ceil(k.n_levels / cfg.n_level_units)
    per_pass = math.ceil(n_inputs / cfg.inputs_per_cycle(k.encoding))
    return rounds * (sram_passes(k, cfg) * per_pass + cfg.encoding_pipeline_cycles)


def table_load_bytes(k: Kernel, cfg: NGPCConfig) -> int:
    """Bytes moved from L2/DRAM to load every level's table once into the level units' SRAMs."""
    return k.n_levels * level_table_bytes(k, cfg)


def tables_resident(k: Kernel, cfg: NGPCConfig) -> bool:
    """A resident table is loaded once per NFP per frame; otherwise it is streamed for every batch."""
    return sram_passes(k, cfg) == 1 and k.n_levels <= cfg.n_level_units


def mlp_layer_cycles(n_out: int, n_in: int, n_inputs: int, cfg: NGPCConfig) -> int:
    """One layer on the MAC array, weight-stationary: one input vector per cycle per weight tile.

    A layer larger than the array is split into ceil(out/rows) x ceil(in/cols) tiles run one after
    another; each tile costs its fill latency (rows + cols cycles) once per batch.
    """
    if n_inputs <= 0:
        return 0
    tiles = math.ceil(n_out / cfg.mac_rows) * math.ceil(n_in / cfg.mac_cols)
    return tiles * (n_inputs + cfg.mac_rows + cfg.mac_cols)


def mlp_cycles(k: Kernel, n_inputs: int, cfg: NGPCConfig) -> int:
    """Cycles for the MLP engine to evaluate kernel ``k``'s network on ``n_inputs`` inputs, layer by layer.

    Without ``mlp_layers`` in the trace, the FLOPs give the MACs per input, packed into full tiles.
    """
    if k.mlp_layers:
        return sum(mlp_layer_cycles(o, i, n_inputs, cfg) for o, i in k.mlp_layers)
    if n_inputs <= 0 or k.n_inputs <= 0:
        return 0
    macs_per_input = k.flops / (2.0 * k.n_inputs)
    tiles = max(1, math.ceil(macs_per_input / (cfg.mac_rows * cfg.mac_cols)))
    return tiles * (n_inputs + cfg.mac_rows + cfg.mac_cols)
