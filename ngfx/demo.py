"""``ngfx demo``: the main job. (First version: fits one procedural image with a hash grid + MLP.)"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ngfx.encodings import NetworkWithInputEncoding
from ngfx.io import write_image, write_json

DEMO_SIZES = {"smoke": (64, 150), "quick": (256, 1500), "full": (1024, 5000)}  # (image side, steps)


def procedural_image(xy: torch.Tensor) -> torch.Tensor:
    """An analytic RGB test pattern with detail at several scales; xy in [0, 1]^2 -> [N, 3]."""
    x, y = xy[:, 0], xy[:, 1]
    r = torch.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2)
    rings = 0.5 + 0.5 * torch.cos(60.0 * r)
    checker = ((torch.floor(x * 8) + torch.floor(y * 8)) % 2)
    return torch.stack([rings, 0.5 + 0.5 * torch.sin(6 * math.pi * x * y), 0.3 + 0.4 * checker], dim=1)


def run_demo(out_dir: str, size: str | None = None, data_dir: str | None = None) -> dict:
    size = size or ("full" if torch.cuda.is_available() else "quick")
    side, steps = DEMO_SIZES[size]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out_dir)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = NetworkWithInputEncoding(
        2, 3, {"otype": "HashGrid", "n_levels": 8, "n_features_per_level": 2, "log2_hashmap_size": 14,
               "base_resolution": 8, "per_level_scale": 1.5},
        {"otype": "FullyFusedMLP", "n_neurons": 32, "n_hidden_layers": 1, "output_activation": "Sigmoid"}).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-15)
    for _ in tqdm(range(steps), desc="gia: train", unit="step"):
        xy = torch.rand(4096, 2, device=device)
        loss = torch.mean((model(xy) - procedural_image(xy)) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    u = (torch.arange(side, device=device) + 0.5) / side
    grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        pred = model(grid).clamp(0, 1)
        mse = torch.mean((pred - procedural_image(grid)) ** 2).item()
    psnr = -10.0 * math.log10(max(mse, 1e-12))
    write_image(out / "gia.png", pred.reshape(side, side, 3).cpu().numpy().astype(np.float32))
    metrics = {"app": "gia", "psnr_db": psnr, "steps": steps, "seconds": time.perf_counter() - t0}
    write_json(out / "metrics.json", metrics)
    print(f"demo: GIA PSNR {psnr:.2f} dB in {metrics['seconds']:.1f} s; image at {out / 'gia.png'}")
    return metrics
