"""What every application (NeRF, NSDF, GIA, NVR) provides, so one trainer, renderer and tracer serve all four.

An application is a ``torch.nn.Module`` built from a scene and an encoding preset. The generic pieces
(training loop, checkpoints, ``ngfx render``, trace capture, the demo) only use this interface.
Run folders hold ``run.json`` (``{"app", "scene", "encoding", "app_config", ...}``),
``checkpoint.safetensors`` and ``metrics.json``.
"""

from __future__ import annotations

import abc

import torch
from torch import nn


class App(nn.Module, abc.ABC):
    """Base class of the four applications."""

    name: str = ""  # "nerf" | "nsdf" | "gia" | "nvr"

    @abc.abstractmethod
    def training_step(self, step: int) -> torch.Tensor:
        """Sample one batch from the scene and return the scalar loss (the trainer does backward/step)."""

    @abc.abstractmethod
    def render(self, width: int, height: int, view: int | torch.Tensor = 0, fused: bool = True) -> torch.Tensor:
        """Render a frame of ``width`` x ``height`` -> float [H, W, 3] in [0, 1], chunked so any size fits.

        ``view`` is a camera index of the scene's evaluation set or a camera-to-world [4, 4] pose (for GIA,
        a window). ``fused`` picks the fused Triton "rest" kernels (True) or the unfused PyTorch ones.
        Every kernel runs inside a named :func:`ngfx.render.stages.stage`.
        """

    @abc.abstractmethod
    def evaluate(self) -> dict:
        """Quality on held-out data, e.g. ``{"psnr_db": ..., "ssim": ...}`` or SDF errors."""

    @abc.abstractmethod
    def config(self) -> dict:
        """JSON-able arguments that rebuild this app (with the scene) for ``load_run``."""
