"""Pixel coordinates of a window of an image and the clamped write of rendered rows: GIA's rest ops, the
PyTorch twins of the kernels of the same names in :mod:`ngfx.render.ops.triton_window`."""

from __future__ import annotations

import torch


def window_coords(window: tuple[float, float, float, float], width: int, height: int, row0: int,
                  n_rows: int, device=None) -> torch.Tensor:
    """Image coordinates in [0, 1]^2 of the pixel centres of rows [row0, row0 + n_rows) of a ``width`` x
    ``height`` render of the window (x0, y0, x1, y1) -> [n_rows * width, 2] float32 (x, y), row by row."""
    x0, y0, x1, y1 = window
    xs = x0 + (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * ((x1 - x0) / width)
    ys = y0 + (torch.arange(row0, row0 + n_rows, device=device, dtype=torch.float32) + 0.5) * ((y1 - y0) / height)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def write_rows(frame: torch.Tensor, rgb: torch.Tensor, row0: int) -> None:
    """frame [H, W, 3] <- clamp(rgb [n_rows * W, 3]) at rows [row0, row0 + n_rows)."""
    n_rows = rgb.shape[0] // frame.shape[1]
    frame[row0:row0 + n_rows] = rgb.reshape(n_rows, frame.shape[1], 3).clamp(0.0, 1.0).to(frame.dtype)
