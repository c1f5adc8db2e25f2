"""All NGPC model parameters in one dataclass, loaded from a TOML file with each value's source.

The default file is ``ngfx/ngpc_sim/configs/ngpc.toml``; the comment after each value names where it
comes from (the paper, REFERENCE.md, or "assumed"), and :func:`parameter_sources` reads those
comments back so reports can print them beside the numbers.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ngfx.errors import NgfxInputError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "ngpc.toml"
ENCODING_KINDS = ("hash_grid", "multires_dense_grid", "lowres_dense_grid")
REST_MODES = ("fused", "unfused")


@dataclass(frozen=True)
class GPUProfile:
    name: str
    n_sms: int
    l2_bytes: int
    memory_bytes_per_s: float


@dataclass(frozen=True)
class NGPCConfig:
    """One NGPC design point beside one GPU. ``n_nfps`` is the scaling factor."""

    gpu: GPUProfile
    clock_hz: float
    n_level_units: int
    grid_sram_bytes: int
    table_bytes_per_feature: int
    hash_grid_inputs_per_cycle: int
    multires_dense_grid_inputs_per_cycle: int
    lowres_dense_grid_inputs_per_cycle: int
    encoding_pipeline_cycles: int
    mac_rows: int
    mac_cols: int
    batches_per_frame: int
    rest_mode: str
    fused_rest_speedup: float
    io_bytes_per_input: float
    n_nfps: int = 8
    enabled: bool = True  # False: the GPU runs every kernel as traced (the baseline replay)

    def inputs_per_cycle(self, encoding: str) -> int:
        return getattr(self, f"{encoding}_inputs_per_cycle")

    @property
    def rest_speedup(self) -> float:
        """How much faster the SMs run the rest kernels than traced."""
        return self.fused_rest_speedup if (self.enabled and self.rest_mode == "fused") else 1.0

    def replace(self, **changes) -> "NGPCConfig":
        return dataclasses.replace(self, **changes)


def _check(cfg: NGPCConfig, source: str) -> NGPCConfig:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise NgfxInputError(source, f.name, f"must be positive, got {value}")
    if cfg.rest_mode not in REST_MODES:
        raise NgfxInputError(source, "rest_mode", f"must be one of {REST_MODES}, got {cfg.rest_mode!r}")
    if cfg.gpu.memory_bytes_per_s <= 0:
        raise NgfxInputError(source, "memory_bytes_per_s", "must be positive")
    return cfg


def load_config(path: str | Path | None = None, gpu: str = "rtx3090", **overrides) -> NGPCConfig:
    """Read a config file (default: the packaged one) for GPU profile ``gpu``; ``overrides`` win."""
    source = str(path or DEFAULT_CONFIG)
    try:
        with open(source, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise NgfxInputError(source, None, "config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise NgfxInputError(source, None, f"malformed TOML: {e}") from None
    gpus = raw.get("gpu", {})
    if gpu not in gpus:
        raise NgfxInputError(source, "gpu", f"unknown GPU profile {gpu!r}; known: {', '.join(gpus)}")
    try:
        profile = GPUProfile(**gpus[gpu])
    except TypeError as e:
        raise NgfxInputError(source, f"gpu.{gpu}", str(e)) from None
    fields = {f.name for f in dataclasses.fields(NGPCConfig)} - {"gpu"}
    values = dict(raw.get("ngpc", {}))
    unknown = set(values) - fields
    if unknown:
        raise NgfxInputError(source, sorted(unknown)[0], "unknown parameter")
    values.update(overrides)
    try:
        cfg = NGPCConfig(gpu=profile, **values)
    except TypeError as e:
        raise NgfxInputError(source, "ngpc", str(e)) from None
    return _check(cfg, source)


def parameter_sources(path: str | Path | None = None) -> dict[str, tuple[str, str]]:
    """``{"section.key": (value text, source comment)}`` from the config file's comments."""
    out, section = {}, ""
    for line in Path(path or DEFAULT_CONFIG).read_text().splitlines():
        if m := re.match(r"\s*\[(.+)\]", line):
            section = m.group(1)
        elif m := re.match(r"\s*(\w+)\s*=\s*([^#]+?)\s*(?:#\s*(.*))?$", line):
            out[f"{section}.{m.group(1)}"] = (m.group(2), m.group(3) or "")
    return out
