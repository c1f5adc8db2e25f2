"""Volume rendering of a grid-encoded field, one frame of rays at a time: the PyTorch twin of the fused kernel.

:func:`render_volume` here is the stage-by-stage path (:func:`ngfx.render.ops.raymarch.render_segments` with
the PyTorch "rest" ops and the field's own PyTorch query): march a segment, evaluate it, composite it, until
the rays leave the box or their transmittance drops. Its twin of the same name and signature in
:mod:`ngfx.render.ops.triton_fused_volume` does all of it in one persistent kernel per frame. Both read a
:class:`VolumeField`, which says how the field turns a point (and a direction) into density and colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ngfx.encodings.grid import Encoding, Network
from ngfx.render.ops import raymarch

FIELD_KINDS = ("nerf", "nvr")


@dataclass(frozen=True)
class VolumeField:
    """A grid-encoded radiance field as the renderers evaluate it.

    ``kind`` "nerf": ``h = density_net(encoding(x))``, density ``exp(h[0])``, colour
    ``colour_net([h, SH(dir)])`` (instant-ngp's NeRF); "nvr": ``raw = density_net(encoding(x))``, density
    ``max(raw[0], 0) * density_scale``, colour ``sigmoid(raw[1:4])``. ``x`` is the world point mapped from
    ``box`` [2, 3] onto the unit cube (clamped). ``query(points [S, 3] in that unit cube, dirs [S, 3]) ->
    (density [S], colour [S, 3])`` is the app's own PyTorch evaluation of the same field, which the twin runs.
    """

    kind: str
    encoding: Encoding
    density_net: Network
    colour_net: Network | None
    box: torch.Tensor
    query: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    density_scale: float = 1.0

    def __post_init__(self):
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"VolumeField.kind must be one of {FIELD_KINDS}, got {self.kind!r}")
        if (self.kind == "nerf") != (self.colour_net is not None):
            raise ValueError("VolumeField: a 'nerf' field has a colour network, an 'nvr' field has none")


def render_volume(origins: torch.Tensor, dirs: torch.Tensor, t_start: torch.Tensor, t_far: torch.Tensor,
                  occupancy: torch.Tensor, aabb: torch.Tensor, resolution: int, dt: float, field: VolumeField,
                  background: torch.Tensor, *, max_scan: int, min_transmittance: float,
                  counters: torch.Tensor | None = None, sub: int = 1) -> torch.Tensor:
    """Colour [n, 3] of rays (origins, unit dirs [n, 3]; marched from ``t_start`` to ``t_far`` [n]) through the
    occupancy grid (``occupancy`` [resolution^3] bool over ``aabb`` [2, 3], x-fastest) on a lattice of step
    ``dt``, over ``background`` [3]; rays stop once their transmittance is at most ``min_transmittance``.
    With ``sub`` > 1, ``occupancy`` is a two-level grid's int64 bits (:func:`ngfx.render.ops.raymarch.march_segment`).

    ``counters``: int32 [2], if given, gains the rays rendered and the field samples evaluated.
    """
    query = field.query
    if counters is not None:
        counters[0] += origins.shape[0]

        def query(points, sample_dirs):
            counters[1] += points.shape[0]
            return field.query(points, sample_dirs)

    return raymarch.render_segments(origins, dirs, t_start, t_far, occupancy, aabb, resolution, dt, query,
                                    background, app=field.kind, fused=False, max_scan=max_scan,
                                    min_transmittance=min_transmittance, sub=sub)
