"""Analytic FLOPs and bytes of each kernel type, from the shapes that launched it: one cost model per type.

These are counts from shapes, not measurements: a gather's bytes assume no cache reuse, an element-wise op
reads its inputs and writes one output of the largest input's size. Traces label them analytic; the
roofline projection (:mod:`ngfx.ngpc_sim.project`) and the MLP engine's tiling read them.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Cost(NamedTuple):
    flops: float
    bytes_read: float
    bytes_written: float


def grid_encoding(n_inputs: int, n_levels: int, n_features: int, n_dims: int, feature_bytes: int = 2) -> Cost:
    """A multi-resolution grid lookup: per input and level, 2^d corners gathered (hash or index: ~2d ops
    each), d-linear weights, and F features blended (2 FLOPs each per corner). Inputs are fp32
    coordinates; table entries and outputs ``feature_bytes`` per feature."""
    corners = 2 ** n_dims
    lookups = n_inputs * n_levels * corners
    return Cost(flops=float(lookups * (2 * n_features + 2 * n_dims)),
                bytes_read=float(n_inputs * n_dims * 4 + lookups * n_features * feature_bytes),
                bytes_written=float(n_inputs * n_levels * n_features * feature_bytes))


def fused_mlp(n_inputs: int, layers, activation_bytes: int = 2) -> Cost:
    """A fully fused MLP, ``layers`` as (out, in): 2 FLOPs per weight per input; weights read once, the first
    layer's inputs read and the last layer's outputs written; hidden activations stay on chip."""
    layers = [tuple(layer) for layer in layers]
    weights = sum(o * i for o, i in layers)
    return Cost(flops=2.0 * n_inputs * weights,
                bytes_read=float((n_inputs * layers[0][1] + weights) * activation_bytes),
                bytes_written=float(n_inputs * layers[-1][0] * activation_bytes))


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")
# ops that make a view or an empty tensor: no arithmetic, no data moved
FREE_OPS = {f"aten::{n}" for n in ("view", "_unsafe_view", "reshape", "slice", "select", "unsqueeze", "squeeze",
                                   "expand", "as_strided", "t", "transpose", "permute", "detach", "detach_",
                                   "lift_fresh", "alias", "empty", "empty_strided", "empty_like", "resolve_conj",
                                   "resolve_neg", "split", "chunk", "unbind", "narrow")}


def _numel(dims) -> int:
    return math.prod(dims) if dims else 1


def tensor_op(name: str, input_dims: list, element_bytes: int = 4) -> Cost:
    """One PyTorch op from its input shapes (torch.profiler's ``Input Dims``).

    Matrix products: 2 M N K FLOPs (batched over leading dims), reading both operands and writing M x N.
    Everything else is taken as element-wise: one FLOP per output element, every tensor input read, one
    output of the largest input's size written (reductions and copies are overestimated, gathers only
    roughly counted). Views and empty tensors (:data:`FREE_OPS`) cost nothing.
    """
    if name in FREE_OPS:
        return Cost(0.0, 0.0, 0.0)
    tensors = []
    for d in input_dims:  # a tensor's dims are a list of ints; a tensor list's, a list of such lists
        if isinstance(d, list) and d and all(isinstance(v, int) for v in d):
            tensors.append(d)
        elif isinstance(d, list):
            tensors += [t for t in d if isinstance(t, list) and t and all(isinstance(v, int) for v in t)]
    if name in MATMUL_OPS and len(tensors) >= 2:
        with_bias = name in ("aten::addmm", "aten::baddbmm") and len(tensors) >= 3  # bias comes first
        a, b = (tensors[1], tensors[2]) if with_bias else tensors[:2]
        if name == "aten::linear":
            b = list(reversed(b))  # weight is (out, in)
        m, k, n = _numel(a[:-1]), a[-1], b[-1]
        return Cost(2.0 * m * n * k, float((_numel(a) + _numel(b)) * element_bytes), float(m * n * element_bytes))
    if not tensors:
        return Cost(0.0, 0.0, 0.0)
    out = max(_numel(d) for d in tensors)
    return Cost(float(out), float(sum(_numel(d) for d in tensors) * element_bytes), float(out * element_bytes))
