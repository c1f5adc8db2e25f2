"""GIA's fused "rest" kernels, the twins of :func:`ngfx.render.ops.window.window_coords` and
:func:`ngfx.render.ops.window.write_rows` (same names, same arguments): pixel-coordinate generation and the
clamped row write, one launch each.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _window_coords_kernel(out_ptr, n, width, row0, x0, y0, step_x, step_y, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    col = idx % width
    row = idx // width + row0
    x = x0 + (col.to(tl.float32) + 0.5) * step_x
    y = y0 + (row.to(tl.float32) + 0.5) * step_y
    tl.store(out_ptr + idx * 2, x, mask=mask)
    tl.store(out_ptr + idx * 2 + 1, y, mask=mask)


def window_coords(window, width: int, height: int, row0: int, n_rows: int, device=None) -> torch.Tensor:
    """Fused twin of :func:`ngfx.render.ops.window.window_coords`."""
    x0, y0, x1, y1 = window
    n = n_rows * width
    out = torch.empty(n, 2, device=device, dtype=torch.float32)
    _window_coords_kernel[(triton.cdiv(n, BLOCK),)](out, n, width, row0, float(x0), float(y0),
                                                    float((x1 - x0) / width), float((y1 - y0) / height), BLOCK=BLOCK)
    return out


@triton.jit
def _write_rows_kernel(frame_ptr, rgb_ptr, n, offset, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    v = tl.load(rgb_ptr + idx, mask=mask, other=0.0)
    v = tl.minimum(tl.maximum(v, 0.0), 1.0)
    tl.store(frame_ptr + offset + idx, v, mask=mask)


def write_rows(frame: torch.Tensor, rgb: torch.Tensor, row0: int) -> None:
    """Fused twin of :func:`ngfx.render.ops.window.write_rows`."""
    rgb = rgb.contiguous()
    n = rgb.numel()
    _write_rows_kernel[(triton.cdiv(n, BLOCK),)](frame, rgb, n, row0 * frame.shape[1] * 3, BLOCK=BLOCK)
