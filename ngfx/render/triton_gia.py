"""GIA's "rest" kernels, each beside its PyTorch twin: pixel-coordinate generation and the clamped row write.

``window_coords`` maps the pixel centres of rows [row0, row0 + n_rows) of a ``width`` x ``height`` render of
the normalised window (x0, y0, x1, y1) to image coordinates in [0, 1]^2; ``write_rows`` clamps the network's
colours to [0, 1] and stores them into the frame at ``row0``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


def window_coords_torch(window: tuple[float, float, float, float], width: int, height: int, row0: int,
                        n_rows: int, device=None) -> torch.Tensor:
    """-> [n_rows * width, 2] float32 (x, y), row by row."""
    x0, y0, x1, y1 = window
    xs = x0 + (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * ((x1 - x0) / width)
    ys = y0 + (torch.arange(row0, row0 + n_rows, device=device, dtype=torch.float32) + 0.5) * ((y1 - y0) / height)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


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


def window_coords_triton(window, width: int, height: int, row0: int, n_rows: int, device=None) -> torch.Tensor:
    x0, y0, x1, y1 = window
    n = n_rows * width
    out = torch.empty(n, 2, device=device, dtype=torch.float32)
    _window_coords_kernel[(triton.cdiv(n, BLOCK),)](out, n, width, row0, float(x0), float(y0),
                                                    float((x1 - x0) / width), float((y1 - y0) / height), BLOCK=BLOCK)
    return out


def write_rows_torch(frame: torch.Tensor, rgb: torch.Tensor, row0: int) -> None:
    """frame [H, W, 3] <- clamp(rgb [n_rows * W, 3]) at rows [row0, row0 + n_rows)."""
    n_rows = rgb.shape[0] // frame.shape[1]
    frame[row0:row0 + n_rows] = rgb.reshape(n_rows, frame.shape[1], 3).clamp(0.0, 1.0).to(frame.dtype)


@triton.jit
def _write_rows_kernel(frame_ptr, rgb_ptr, n, offset, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    v = tl.load(rgb_ptr + idx, mask=mask, other=0.0)
    v = tl.minimum(tl.maximum(v, 0.0), 1.0)
    tl.store(frame_ptr + offset + idx, v, mask=mask)


def write_rows_triton(frame: torch.Tensor, rgb: torch.Tensor, row0: int) -> None:
    rgb = rgb.contiguous()
    n = rgb.numel()
    _write_rows_kernel[(triton.cdiv(n, BLOCK),)](frame, rgb, n, row0 * frame.shape[1] * 3, BLOCK=BLOCK)
