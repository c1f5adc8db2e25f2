"""Per-layer cost of a NeLF frame: shapes, parameters, MACs/FLOPs and bytes moved, from shapes alone.

Two sources, one table: a NeLF config traced on PyTorch's ``meta`` device (a 1008x756 paper-size frame
costs no compute), or an ONNX graph (:func:`onnx_layer_costs`), so a model is costed from the very file
that would ship; any ONNX network of convs and fully connected layers works, not only NeLF.
Counting conventions (stated in the report):
- A layer is a conv or transposed conv; its BatchNorm, GELU and residual add are fused into it, as mobile
  runtimes (Core ML, NNAPI, TFLite) do, so BatchNorm is folded into the conv's weights and bias.
- MACs: conv = H_out * W_out * C_out * (C_in / groups) * k * k; transposed conv = H_in * W_in * C_in *
  (C_out / groups) * k * k (every input pixel scatters a k x k patch); fully connected = C_in * C_out.
  FLOPs = 2 * MACs.
- Parameters: conv weights + biases after folding (what is deployed). Storage = parameters * bytes/element.
- Bytes moved: weights once + input activations read + output activations written, at ``bytes_per_element``;
  a grid student's lookup tables (an ONNX graph's Gather nodes) once + every value its lookups gather.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ngfx.nelf.network import NeLF, NeLFConfig, low_resolution


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str  # "conv1x1", "convT4x4/2", ...
    in_shape: tuple[int, int, int]  # (C, H, W)
    out_shape: tuple[int, int, int]
    params: int
    macs: int
    weight_bytes: int
    activation_bytes: int  # input read + output written

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def bytes_moved(self) -> int:
        return self.weight_bytes + self.activation_bytes

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved."""
        return self.flops / max(self.bytes_moved, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(flops=self.flops, bytes_moved=self.bytes_moved, intensity=self.intensity)
        return d


def layer_costs(cfg: NeLFConfig, width: int, height: int, bytes_per_element: int = 2) -> list[LayerCost]:
    """Costs of every conv layer of one ``width x height`` frame (batch 1), in execution order."""
    w, h = low_resolution(cfg, width, height)
    with torch.device("meta"):
        model = NeLF(cfg).eval()
        rays = torch.empty(1, cfg.in_channels, h, w)
    shapes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: shapes.__setitem__(
        name, (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))))
        for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model(rays)
    for hk in hooks:
        hk.remove()
    costs = []
    for name, m in model.named_modules():
        if name not in shapes:
            continue
        params = m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        costs.append(_conv_cost(name, isinstance(m, nn.ConvTranspose2d), m.kernel_size, m.stride[0], m.groups,
                                *shapes[name], params, bytes_per_element))
    return costs


def totals(costs: list[LayerCost]) -> dict:
    params = sum(c.params for c in costs)
    return {
        "layers": len(costs),
        "params": params,
        "macs": sum(c.macs for c in costs),
        "flops": sum(c.flops for c in costs),
        "bytes_moved": sum(c.bytes_moved for c in costs),
        "storage_mb_fp16": params * 2 / 1e6,
        "storage_mb_fp32": params * 4 / 1e6,
    }


def _conv_cost(name: str, transposed: bool, kernel: tuple[int, int], stride: int, groups: int,
               in_shape: tuple, out_shape: tuple, params: int, bytes_per_element: int) -> LayerCost:
    """One conv layer's cost from its shapes (C, H, W); the one formula both sources use."""
    (c_in, h_in, w_in), (c_out, h_out, w_out) = in_shape, out_shape
    k = kernel[0] * kernel[1]
    if transposed:
        macs = h_in * w_in * c_in * (c_out // groups) * k
        kind = f"convT{kernel[0]}x{kernel[1]}/{stride}"
    else:
        macs = h_out * w_out * c_out * (c_in // groups) * k
        depthwise = "dw" if groups == c_in > 1 else ""
        kind = f"conv{kernel[0]}x{kernel[1]}" + (f"/{stride}" if stride > 1 else "") + depthwise
    act = (c_in * h_in * w_in + c_out * h_out * w_out) * bytes_per_element
    return LayerCost(name, kind, tuple(in_shape), tuple(out_shape), params, macs, params * bytes_per_element, act)


def onnx_layer_costs(path, bytes_per_element: int = 2) -> list[LayerCost]:
    """Costs of every Conv, ConvTranspose and fully connected layer (Gemm, or MatMul by a constant) of the
    ONNX graph at ``path`` (batch 1, static shapes), in graph order. Other nodes (activations, BatchNorm,
    adds, pooling, reshapes) count as fused into the layer before them, as for a NeLF config."""
    import onnx
    from onnx import numpy_helper, shape_inference

    from ngfx.errors import NgfxInputError

    source = str(path)
    try:
        model = shape_inference.infer_shapes(onnx.load(source))
    except Exception as e:  # protobuf decode errors have many types
        raise NgfxInputError(source, None, f"not a readable ONNX model ({type(e).__name__}: {e})") from None
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t).shape for t in graph.initializer}
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    float_weights = {t.name for t in graph.initializer if t.data_type in float_types}
    shapes = {}
    for v in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)

    def shape(name: str, node_name: str, batch_one: bool = True) -> tuple:
        """A tensor's static shape, without its batch dimension of 1 (with ``batch_one``) or whole (rows of a
        fully connected layer: a depth oracle's rays are [R, C])."""
        dims = shapes.get(name)
        if dims is None or None in dims or not dims or (batch_one and dims[0] != 1):
            raise NgfxInputError(source, node_name, f"tensor {name!r} has no static {'batch-1 ' if batch_one else ''}"
                                 f"shape ({dims}); export with fixed input sizes")
        return dims[1:] if batch_one else dims

    costs = []
    for i, node in enumerate(graph.node):
        node_name = node.name or f"node{i}"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        params = sum(int(math.prod(weights[n])) for n in node.input[1:] if n in weights)
        # a weight's own name, unless the exporter made one up (a constant-folded transpose: "onnx::MatMul_12")
        named = len(node.input) > 1 and node.input[1] in weights and not node.input[1].startswith("onnx::")
        name = node.input[1].removesuffix(".weight") if named else node_name
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in weights:
            kernel = tuple(weights[node.input[1]][2:])
            in_shape, out_shape = shape(node.input[0], node_name), shape(node.output[0], node_name)
            if len(kernel) != 2 or len(in_shape) != 3:
                raise NgfxInputError(source, node_name, f"only 2D convs are costed, got kernel {kernel}")
            costs.append(_conv_cost(name, node.op_type == "ConvTranspose", kernel, int(attrs.get("strides", [1])[0]),
                                    int(attrs.get("group", 1)), in_shape, out_shape, params, bytes_per_element))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in weights:
            w = weights[node.input[1]]
            c_in, c_out = (w[1], w[0]) if node.op_type == "Gemm" and attrs.get("transB", 0) else (w[0], w[1])
            rows = int(math.prod(shape(node.input[0], node_name, batch_one=False)[:-1]))
            act = (rows * c_in + rows * c_out) * bytes_per_element
            costs.append(LayerCost(name, "fc", (c_in, rows, 1), (c_out, rows, 1), params, rows * c_in * c_out,
                                   params * bytes_per_element, act))
    if not costs:
        raise NgfxInputError(source, None, "no Conv, ConvTranspose or fully connected layer with constant weights")
    # constant tables that Gather nodes look up (a light slab's or a depth oracle's grids, one table a level): stored,
    # and costed as one read of every table per frame plus every value the lookups gather (each corner of each
    # level for each point: scattered reads, which no cache holds once the points outnumber the table)
    lookups = [node for node in graph.node if node.op_type == "Gather" and node.input[0] in float_weights]
    tables = sum(int(math.prod(weights[name])) for name in {node.input[0] for node in lookups})
    gathered = sum(int(math.prod(shape(node.output[0], node.name or "Gather", batch_one=False))) for node in lookups)
    if tables:
        costs.append(LayerCost("lookup tables", "table", (tables, 1, 1), (gathered, 1, 1), tables, 0,
                               tables * bytes_per_element, gathered * bytes_per_element))
    return costs
