"""Published mobile networks in their deployed (inference) form, for checking the latency model on held-out data.

Only the layer structure matters (the latency model reads shapes, not weights), so the weights are random:
- MobileOne S0-S4 (Vasu et al., CVPR 2023, arXiv 2206.04040) after re-parameterisation: a 3x3 stride-2 stem, then
  stages of [3x3 depthwise + ReLU, 1x1 + ReLU] blocks ([2, 8, 10, 1] blocks, the first of each stage with
  stride 2), S4 with squeeze-excitation in the second half of stage 3 and in stage 4; global pooling, a
  1000-way classifier. Stage widths and the stem follow the authors' code (apple/ml-mobileone).
- MobileNetV2 x1.0 (Sandler et al., CVPR 2018): inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1
  project), the paper's Table 2 settings, a 1280-wide last conv and a 1000-way classifier.
"""

from __future__ import annotations

import torch
from torch import nn

MOBILEONE_WIDTHS = {"s0": (0.75, 1.0, 1.0, 2.0), "s1": (1.5, 1.5, 2.0, 2.5), "s2": (1.5, 2.0, 2.5, 4.0),
                    "s3": (2.0, 2.5, 3.0, 4.0), "s4": (3.0, 3.5, 3.5, 4.0)}
MOBILEONE_BLOCKS = (2, 8, 10, 1)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: nn.Module | None = None) -> nn.Module:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups)]
    return nn.Sequential(*layers, act) if act is not None else layers[0]


class SqueezeExcite(nn.Module):
    """MobileOne's SE: global pool, 1x1 down to a sixteenth, ReLU, 1x1 up, sigmoid, scale."""

    def __init__(self, c: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, c // 16, 1), nn.Conv2d(c // 16, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.expand(s))


def mobileone(variant: str) -> nn.Module:
    """MobileOne-``variant`` (s0..s4) in inference form, for 224x224 RGB input."""
    widths = MOBILEONE_WIDTHS[variant]
    in_planes = min(64, int(64 * widths[0]))
    layers: list[nn.Module] = [_conv(3, in_planes, 3, 2, act=nn.ReLU())]
    for stage, (base, blocks) in enumerate(zip((64, 128, 256, 512), MOBILEONE_BLOCKS)):
        planes = int(base * widths[stage])
        n_se = (blocks // 2 if stage == 2 else blocks if stage == 3 else 0) if variant == "s4" else 0
        for i in range(blocks):
            se = i >= blocks - n_se
            for conv in (nn.Conv2d(in_planes, in_planes, 3, 2 if i == 0 else 1, 1, groups=in_planes),
                         nn.Conv2d(in_planes, planes, 1)):
                layers.append(nn.Sequential(conv, SqueezeExcite(conv.out_channels), nn.ReLU()) if se else
                              nn.Sequential(conv, nn.ReLU()))
                in_planes = conv.out_channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_planes, 1000)).eval()


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers = [_conv(c_in, hidden, 1, act=nn.ReLU6())] if expand != 1 else []
        layers += [_conv(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6()), _conv(hidden, c_out, 1)]
        self.block = nn.Sequential(*layers)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.skip else self.block(x)


def mobilenet_v2() -> nn.Module:
    """MobileNetV2 x1.0 for 224x224 RGB input (paper Table 2: expansion t, channels c, repeats n, stride s)."""
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
    layers: list[nn.Module] = [_conv(3, 32, 3, 2, act=nn.ReLU6())]
    c_in = 32
    for t, c, n, s in settings:
        for i in range(n):
            layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
            c_in = c
    layers += [_conv(c_in, 1280, 1, act=nn.ReLU6()), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    return nn.Sequential(*layers).eval()


def build(name: str) -> nn.Module:
    """A network of the held-out table by name: mobileone_s0..s4, mobilenet_v2."""
    if name.startswith("mobileone_") and name[len("mobileone_"):] in MOBILEONE_WIDTHS:
        return mobileone(name[len("mobileone_"):])
    if name == "mobilenet_v2":
        return mobilenet_v2()
    raise ValueError(f"unknown reference network {name!r}")
