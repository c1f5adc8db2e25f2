"""Per-layer cost of a NeLF frame: shapes, parameters, MACs/FLOPs and bytes moved, from shapes alone.

The network is traced on PyTorch's ``meta`` device, so a 1008x756 paper-size frame costs no compute.
Counting conventions (stated in the report):
- A layer is a conv or transposed conv; its BatchNorm, GELU and residual add are fused into it, as mobile
  runtimes (Core ML, NNAPI, TFLite) do, so BatchNorm is folded into the conv's weights and bias.
- MACs: conv = H_out * W_out * C_out * C_in * k * k; transposed conv = H_in * W_in * C_in * C_out * k * k
  (every input pixel scatters a k x k patch). FLOPs = 2 * MACs.
- Parameters: conv weights + biases after folding (what is deployed). Storage = parameters * bytes/element.
- Bytes moved: weights once + input activations read + output activations written, at ``bytes_per_element``.
"""

from __future__ import annotations

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
        (c_in, h_in, w_in), (c_out, h_out, w_out) = shapes[name]
        k = m.kernel_size[0] * m.kernel_size[1]
        params = m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        if isinstance(m, nn.ConvTranspose2d):
            macs = h_in * w_in * c_in * c_out * k
            kind = f"convT{m.kernel_size[0]}x{m.kernel_size[1]}/{m.stride[0]}"
        else:
            macs = h_out * w_out * c_out * (c_in // m.groups) * k
            kind = f"conv{m.kernel_size[0]}x{m.kernel_size[1]}"
        act = (c_in * h_in * w_in + c_out * h_out * w_out) * bytes_per_element
        costs.append(LayerCost(name, kind, (c_in, h_in, w_in), (c_out, h_out, w_out), params, macs,
                               params * bytes_per_element, act))
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
