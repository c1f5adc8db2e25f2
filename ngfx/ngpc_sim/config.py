"""All NGPC model parameters in one dataclass, loaded from a TOML file with each value's source.

The default file is ``ngfx/ngpc_sim/configs/ngpc.toml``; the comment after each value names where it
comes from (the paper, a vendor datasheet, a measurement, a fit, or "assumed"), and :func:`parameter_sources`
reads those comments back so reports can print them beside the numbers. Every value's type and range is
checked by :mod:`ngfx.ngpc_sim.schema`.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ngfx.errors import NgfxInputError
from ngfx.ngpc_sim.schema import GPU_FIELDS, NGPC_FIELDS, check_fields

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "ngpc.toml"
ENCODING_KINDS = ("hash_grid", "multires_dense_grid", "lowres_dense_grid")
# `ngfx train --encoding` names -> the NGPC's encoding kinds (the kinds themselves are accepted too)
ENCODING_NAMES = {"hashgrid": "hash_grid", "densegrid": "multires_dense_grid", "lowres": "lowres_dense_grid"}
REST_MODES = ("fused", "unfused")


def encoding_kind_of(name: str, source: str = "encoding") -> str:
    """``hashgrid`` | ``densegrid`` | ``lowres`` (as ``ngfx train``), or the kind itself -> the kind."""
    kind = ENCODING_NAMES.get(name, name)
    if kind not in ENCODING_KINDS:
        raise NgfxInputError(source, "encoding", f"expected one of {', '.join(ENCODING_NAMES)}, got {name!r}")
    return kind


@dataclass(frozen=True)
class GPUProfile:
    name: str
    n_sms: int
    l2_bytes: int
    memory_bytes_per_s: float
    peak_flops: float  # FP32, without tensor cores: the roofline's compute roof
    die_mm2: float
    tdp_w: float


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
    area_pct_per_nfp: float  # one NFP's area, in % of the GPU's die
    power_pct_per_nfp: float  # one NFP's power, in % of the GPU's TDP
    n_nfps: int = 8
    enabled: bool = True  # False: the GPU runs every kernel as traced (the baseline replay)

    def inputs_per_cycle(self, encoding: str) -> int:
        return getattr(self, f"{encoding}_inputs_per_cycle")

    @property
    def rest_speedup(self) -> float:
        """How much faster the SMs run the rest kernels than traced."""
        return self.fused_rest_speedup if (self.enabled and self.rest_mode == "fused") else 1.0

    def replace(self, **changes) -> "NGPCConfig":
        return dataclasses.replace(self, **check_fields(changes, NGPC_FIELDS, "NGPC config override"))

    def area_mm2(self) -> float:
        """The GPU's die plus ``n_nfps`` NFPs (0 when the NGPC is disabled)."""
        return self.gpu.die_mm2 * (1 + self.area_pct_per_nfp / 100 * (self.n_nfps if self.enabled else 0))

    def power_w(self) -> float:
        return self.gpu.tdp_w * (1 + self.power_pct_per_nfp / 100 * (self.n_nfps if self.enabled else 0))


def _fields_of(cls, values: dict, source: str, section: str) -> dict:
    """``values`` with unknown and missing parameters refused, naming ``section.key``."""
    names = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING} - {"gpu"}
    known = {f.name for f in dataclasses.fields(cls)} - {"gpu"}
    if unknown := sorted(set(values) - known):
        raise NgfxInputError(source, f"{section}.{unknown[0]}", "unknown parameter")
    if missing := sorted(names - set(values)):
        raise NgfxInputError(source, f"{section}.{missing[0]}", "missing")
    return values


def _read_toml(path: str | Path | None) -> tuple[dict, str]:
    source = str(path or DEFAULT_CONFIG)
    try:
        with open(source, "rb") as f:
            return tomllib.load(f), source
    except FileNotFoundError:
        raise NgfxInputError(source, None, "config file not found") from None
    except IsADirectoryError:
        raise NgfxInputError(source, None, "is a folder, expected a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise NgfxInputError(source, None, f"malformed TOML: {e}") from None


def _gpu_profiles(raw: dict, source: str) -> dict[str, GPUProfile]:
    gpus = raw.get("gpu", {})
    if not isinstance(gpus, dict) or not all(isinstance(v, dict) for v in gpus.values()):
        raise NgfxInputError(source, "gpu", "expected [gpu.NAME] tables")
    return {key: GPUProfile(**check_fields(_fields_of(GPUProfile, dict(values), source, f"gpu.{key}"), GPU_FIELDS,
                                           source, f"gpu.{key}."))
            for key, values in gpus.items()}


def gpu_profiles(path: str | Path | None = None) -> dict[str, GPUProfile]:
    """Every GPU profile in a config file (default: the packaged one), by key (``rtx3090``, ``h200``)."""
    return _gpu_profiles(*_read_toml(path))


def load_config(path: str | Path | None = None, gpu: str = "rtx3090", **overrides) -> NGPCConfig:
    """Read a config file (default: the packaged one) for GPU profile ``gpu``; ``overrides`` win."""
    raw, source = _read_toml(path)
    profiles = _gpu_profiles(raw, source)
    if gpu not in profiles:
        raise NgfxInputError(source, "gpu", f"unknown GPU profile {gpu!r}; known: {', '.join(profiles) or 'none'}")
    values = raw.get("ngpc", {})
    if not isinstance(values, dict):
        raise NgfxInputError(source, "ngpc", "expected a [ngpc] table")
    values = check_fields(_fields_of(NGPCConfig, dict(values), source, "ngpc"), NGPC_FIELDS, source, "ngpc.")
    if values.get("rest_mode") not in REST_MODES:
        raise NgfxInputError(source, "ngpc.rest_mode", f"expected one of {REST_MODES}, got {values.get('rest_mode')!r}")
    cfg = NGPCConfig(gpu=profiles[gpu], **values)
    # overrides come from flags; their callers check them against the schema naming the flag
    return cfg.replace(**overrides) if overrides else cfg


def parameter_sources(path: str | Path | None = None) -> dict[str, tuple[str, str]]:
    """``{"section.key": (value text, source comment)}`` from the config file's comments."""
    out, section = {}, ""
    for line in Path(path or DEFAULT_CONFIG).read_text().splitlines():
        if m := re.match(r"\s*\[(.+)\]", line):
            section = m.group(1)
        elif m := re.match(r"\s*(\w+)\s*=\s*([^#]+?)\s*(?:#\s*(.*))?$", line):
            out[f"{section}.{m.group(1)}"] = (m.group(2), m.group(3) or "")
    return out
