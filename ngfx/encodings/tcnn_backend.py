"""tiny-cuda-nn (``tinycudann``) as an optional backend over the same flat parameter vector.

tiny-cuda-nn's grid encodings store their parameters in exactly the layout :mod:`ngfx.encodings.config`
describes, so its module is called functionally with our ``params`` in place of its own. Never required:
:func:`ngfx.encodings.grid.resolve_backend` refuses ``backend="tcnn"`` with a ValueError when it does not import.
"""

from __future__ import annotations

import functools

import torch

from ngfx.encodings.config import GridConfig


def _tcnn():
    try:
        import tinycudann
    except ImportError as error:
        raise ValueError("backend 'tcnn' requested but the 'tinycudann' module does not import") from error
    return tinycudann


@functools.lru_cache(maxsize=16)
def _encoding_module(cfg: GridConfig) -> torch.nn.Module:
    return _tcnn().Encoding(cfg.n_dims, cfg.to_dict(), dtype=torch.float32)


def grid_encode(x: torch.Tensor, params: torch.Tensor, cfg: GridConfig) -> torch.Tensor:
    """tiny-cuda-nn's grid encoding: [N, D] CUDA positions in [0, 1] -> [N, n_levels * F] float32.

    Differentiable with respect to ``params`` (and to ``x`` where tiny-cuda-nn supports it).
    """
    module = _encoding_module(cfg)
    if module.params.numel() != params.numel():
        raise ValueError(f"tcnn backend: tiny-cuda-nn expects {module.params.numel()} parameters for this config, "
                         f"got {params.numel()}")
    out = torch.func.functional_call(module, {"params": params}, (x.contiguous().float(),))
    return out[:, : cfg.n_output_dims].float()
