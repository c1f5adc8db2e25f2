"""The public encoding API: tiny-cuda-nn config dicts in, ``torch.nn.Module``s out, one backend chosen per call.

Backends compute the same function of the same flat parameter vector:

* ``torch``  -- :mod:`ngfx.encodings.reference`, readable float32, any device;
* ``triton`` -- :mod:`ngfx.encodings.triton_grid` / :mod:`ngfx.encodings.triton_mlp`, fused CUDA kernels;
* ``tcnn``   -- :mod:`ngfx.encodings.tcnn_backend`, when ``tinycudann`` imports.

``backend="auto"`` picks triton for CUDA inputs and torch otherwise; the ``NGFX_BACKEND`` environment
variable overrides ``auto`` (an explicit argument wins over both).
"""

from __future__ import annotations

import functools
import math
import os
import sys

import torch
from torch import nn

from ngfx.encodings import reference
from ngfx.encodings.config import GridConfig, MLPConfig, parse_grid_config, parse_network_config

BACKENDS = ("auto", "torch", "triton", "tcnn")
PARAM_INIT_RANGE = 1e-4  # tiny-cuda-nn's uniform initialisation of grid tables


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def resolve_backend(requested: str, device: torch.device) -> str:
    """The concrete backend for a call on ``device``."""
    backend = _check_backend(requested)
    if backend == "auto":
        backend = _check_backend(os.environ.get("NGFX_BACKEND", "auto"))
    if backend == "auto":
        backend = "triton" if device.type == "cuda" and triton_available(announce=True) else "torch"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for the CPU interpreter)")
    if backend == "tcnn" and not tcnn_available():
        raise ValueError("backend 'tcnn' requested but the 'tinycudann' module does not import")
    return backend


def triton_available(announce: bool = False) -> bool:
    """Whether triton imports (the base install has none: every kernel then falls back to its PyTorch twin).

    With ``announce``, a missing triton is said once per process on stderr, so a CUDA user learns why
    the fused kernels do not run.
    """
    available = _triton_imports()
    if announce and not available:
        _announce_missing_triton()
    return available


@functools.cache
def _triton_imports() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _announce_missing_triton() -> None:
    print("ngfx: triton is not installed, so the PyTorch twins run instead of the fused Triton kernels "
          "(pip install triton for them)", file=sys.stderr)


def tcnn_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return False
    return True


def _check_input(x: torch.Tensor, n_dims: int, what: str) -> None:
    if x.ndim != 2 or x.shape[1] != n_dims:
        raise ValueError(f"{what}: input must have shape [N, {n_dims}], got {list(x.shape)}")


class Encoding(nn.Module):
    """A multi-resolution grid encoding (HashGrid, DenseGrid or TiledGrid) of inputs in [0, 1]^D.

    ``params`` is tiny-cuda-nn's flat layout (see :mod:`ngfx.encodings.config`).
    """

    def __init__(self, n_input_dims: int, encoding_config: dict, backend: str = "auto"):
        super().__init__()
        self.cfg: GridConfig = parse_grid_config(n_input_dims, encoding_config)
        self.backend = _check_backend(backend)
        self.params = nn.Parameter(torch.empty(self.cfg.n_params).uniform_(-PARAM_INIT_RANGE, PARAM_INIT_RANGE))

    @property
    def n_input_dims(self) -> int:
        return self.cfg.n_dims

    @property
    def n_output_dims(self) -> int:
        return self.cfg.n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [N, n_levels * n_features_per_level], float32."""
        _check_input(x, self.cfg.n_dims, "Encoding")
        backend = resolve_backend(self.backend, x.device)
        if backend == "triton":
            from ngfx.encodings import triton_grid

            return triton_grid.grid_encode(x, self.params, self.cfg)
        if backend == "tcnn":
            from ngfx.encodings import tcnn_backend

            return tcnn_backend.grid_encode(x, self.params, self.cfg)
        return reference.grid_encode(x, self.params, self.cfg)

    @torch.no_grad()
    def features(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Inference: the features of :meth:`forward` in ``dtype``, without autograd; on the triton backend written
        in that dtype by the kernel (fp16 for an fp16 consumer: half the bytes to HBM and back)."""
        _check_input(x, self.cfg.n_dims, "Encoding")
        if resolve_backend(self.backend, x.device) == "triton":
            from ngfx.encodings import triton_grid

            return triton_grid.encode_forward(x.contiguous().float(), self.params, self.cfg, out_dtype=dtype,
                                              inference=True)
        return self(x).to(dtype)

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"{c.grid_type}Grid D={c.n_dims} levels={c.n_levels}x{c.n_features_per_level} "
                f"T=2^{c.log2_hashmap_size} base={c.base_resolution} scale={c.per_level_scale:.4g} "
                f"{c.interpolation} backend={self.backend}")


class Network(nn.Module):
    """A bias-free MLP as tiny-cuda-nn's FullyFusedMLP/CutlassMLP defines it."""

    def __init__(self, n_input_dims: int, n_output_dims: int, network_config: dict, backend: str = "auto"):
        super().__init__()
        self.cfg: MLPConfig = parse_network_config(n_input_dims, n_output_dims, network_config)
        self.backend = _check_backend(backend)
        self.weights = nn.ParameterList()
        for n_out, n_in in self.cfg.layer_shapes:
            bound = math.sqrt(6.0 / (n_in + n_out))  # Xavier-uniform, as tiny-cuda-nn initialises
            self.weights.append(nn.Parameter(torch.empty(n_out, n_in).uniform_(-bound, bound)))

    @property
    def n_output_dims(self) -> int:
        return self.cfg.n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.cfg.n_input_dims, "Network")
        backend = resolve_backend(self.backend, x.device)
        if backend == "triton":
            from ngfx.encodings import triton_mlp

            return triton_mlp.mlp_forward(x, list(self.weights), self.cfg)
        return reference.mlp_forward(x, list(self.weights), self.cfg)


class NetworkWithInputEncoding(nn.Module):
    """Encoding followed by a Network (same backend for both)."""

    def __init__(self, n_input_dims: int, n_output_dims: int, encoding_config: dict, network_config: dict,
                 backend: str = "auto"):
        super().__init__()
        self.encoding = Encoding(n_input_dims, encoding_config, backend)
        self.network = Network(self.encoding.n_output_dims, n_output_dims, network_config, backend)
        self.backend = self.encoding.backend

    @property
    def n_output_dims(self) -> int:
        return self.network.n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # On the triton backend this is the grid kernel then the MLP kernel, in training and inference alike:
        # on the H200 that pair ran 1.4x faster than triton_mlp.fused_grid_mlp_forward (whose tl.dot must use
        # BLOCK 32 x 4 warps, see triton_mlp), BENCHMARKS.md "Encodings".
        _check_input(x, self.encoding.cfg.n_dims, "NetworkWithInputEncoding")
        return self.network(self.encoding(x))
