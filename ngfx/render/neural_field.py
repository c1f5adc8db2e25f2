"""The encoding + MLP field shared by GIA, NSDF and NVR, queried inside named stages.

Rendering calls :meth:`NeuralField.query`: while a stage recorder is active the encoding and the MLP run
as two stages (``{app}.encoding``, ``{app}.mlp``) so each is timed; otherwise the fused
``NetworkWithInputEncoding`` path runs, outside any stage. Training calls the module directly.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

import torch
from torch import nn

from ngfx.encodings import NetworkWithInputEncoding
from ngfx.encodings.grid import triton_available
from ngfx.progress import progress_bar
from ngfx.render import stages

SIZES = ("tiny", "quick", "full")


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return size


def preset_size(size: str) -> str:
    """The encoding preset size: "quick" (CPU demo) uses the tiny tables, trained for longer."""
    return "full" if check_size(size) == "full" else "tiny"


def use_triton(fused: bool, device: torch.device) -> bool:
    """Whether the fused Triton "rest" kernels run: asked for, on CUDA (or on CPU under TRITON_INTERPRET=1),
    and triton installed; otherwise the PyTorch twins run (a missing triton is said once)."""
    if not fused or not (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"):
        return False
    return triton_available(announce=True)


def is_recording() -> bool:
    return bool(stages._active)


def adam(params, lr: float = 1e-2) -> torch.optim.Optimizer:
    """instant-ngp's optimiser settings for grid + MLP parameters; on CUDA PyTorch's fused Adam (one kernel for
    every parameter instead of a dozen per parameter)."""
    params = list(params)
    fused = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), eps=1e-15, fused=fused or None)


class NeuralField(nn.Module):
    """[N, D] in [0, 1]^D -> [N, n_outputs] raw network outputs."""

    def __init__(self, n_dims: int, n_outputs: int, encoding_config: dict, network_config: dict, app: str):
        super().__init__()
        self.model = NetworkWithInputEncoding(n_dims, n_outputs, encoding_config, network_config)
        self.app = app

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _encoding_attrs(self) -> dict:
        c = self.model.encoding.cfg
        return {"app": self.app, "otype": c.grid_type, "n_levels": c.n_levels,
                "n_features_per_level": c.n_features_per_level, "log2_hashmap_size": c.log2_hashmap_size,
                "n_dims": c.n_dims}

    def _mlp_flops(self, n: int) -> float:
        return 2.0 * n * sum(o * i for o, i in self.model.network.cfg.layer_shapes)

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Inference, x: [N, D] in [0, 1]^D -> [N, n_outputs] float32; while recording, the encoding and the MLP are
        stages of their own."""
        if not is_recording():  # a stage records nothing then: no stage bookkeeping on a render's hot path
            return self.model(x).float()
        n = x.shape[0]
        enc, net = self.model.encoding, self.model.network
        c = enc.cfg
        enc_bytes = n * c.n_levels * (2 ** c.n_dims) * c.n_features_per_level * 4.0
        attrs = self._encoding_attrs()
        with stages.stage(f"{self.app}.encoding", "encoding", n_inputs=n, bytes_read=x.numel() * 4.0 + enc_bytes,
                          bytes_written=n * enc.n_output_dims * 4.0, **attrs):
            features = enc(x)
        with stages.stage(f"{self.app}.mlp", "mlp", n_inputs=n, flops=self._mlp_flops(n),
                          bytes_read=features.numel() * 4.0, bytes_written=n * net.n_output_dims * 4.0, **attrs):
            return net(features).float()


def drop_non_finite_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Zero NaN/inf gradient entries in place, without a host sync.

    One bad batch (seen on the H200: Lego turned NaN after ~3,700 steps with fp16 MLPs) must not poison every
    parameter through Adam's moments; zeroing costs one pass over the gradients.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)


# nerfacc's step decay (MultiStepLR, gamma 0.33) at these fractions of the training budget: Adam at a constant
# 1e-2 keeps jittering the grid's entries; the late decay settles them (it is what lifts fine detail at the end).
LR_DECAY_AT = (0.5, 0.75, 0.9)
LR_DECAY = 0.33


def learning_rate_scale(progress: float) -> float:
    """Factor on the base learning rate at ``progress`` in [0, 1] of the training budget (steps or seconds)."""
    return LR_DECAY ** sum(progress >= milestone for milestone in LR_DECAY_AT)


def training_progress(step: int, steps: int | None, elapsed_s: float, seconds: float | None) -> float:
    """How far into its budget a run is: the larger of the step and time fractions (whichever ends it first)."""
    return max(step / steps if steps else 0.0, elapsed_s / seconds if seconds else 0.0)


def optimisation_step(app, optimizer: torch.optim.Optimizer, step: int, progress: float | None = None,
                      lr_scale: Callable[[float], float] = learning_rate_scale) -> torch.Tensor:
    """One training step of any App: its loss, backward, non-finite gradients dropped, update -> detached loss.
    The backward and the update are named stages (``{app}.train.backward``, ``{app}.train.optimizer``), as an
    app may name those of its ``training_step``.

    With ``progress`` (fraction of the budget), each group's learning rate is its ``base_lr`` (its first ``lr``)
    times ``lr_scale(progress)``.
    """
    if progress is not None:
        for group in optimizer.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * lr_scale(progress)
    loss = app.training_step(step)
    optimizer.zero_grad(set_to_none=True)
    with stages.stage(f"{app.name}.train.backward", "mlp", app=app.name):
        loss.backward()
    with stages.stage(f"{app.name}.train.optimizer", "rest", app=app.name):
        drop_non_finite_gradients(optimizer)
        optimizer.step()
    return loss.detach()


class StopSignals:
    """SIGINT/SIGTERM become a request to stop after the current step (so the run saves first); a second
    signal acts at once, as it would without this."""

    def __init__(self):
        self.signal_number: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._request)
        return self

    def __call__(self) -> bool:
        """Whether a signal asked to stop (``training_loop``'s ``stop``)."""
        return self.signal_number is not None

    def _request(self, signal_number, frame) -> None:
        self.signal_number = signal_number
        self.__exit__()

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


LOSS_SHOWN_EVERY = 10  # steps between loss readings on the progress bar (each one is a host sync on the GPU)


def training_loop(app, optimizer: torch.optim.Optimizer, steps: int | None, seconds: float | None, step: int = 0,
                  trained_s: float = 0.0, after_step=None, stop=None, progress: bool = False,
                  lr_scale: Callable[[float], float] = learning_rate_scale,
                  desc: str | None = None) -> tuple[int, float]:
    """The one training loop (:func:`fit`, the run folders of :mod:`ngfx.render.runs`, the NeLF distillation):
    optimisation steps from ``step`` until ``steps`` steps, ``seconds`` of training (counting ``trained_s`` of
    earlier runs) or ``stop()``, whichever comes first -> (step reached, seconds trained in all).

    ``app`` is anything with ``name``, ``train()`` and ``training_step(step) -> loss``. ``after_step(step, loss)``
    runs after each step with the detached loss (no host sync unless it reads it); its time counts as training
    time. ``lr_scale`` is the learning-rate schedule over the budget's progress; ``desc`` the progress bar's label.
    """
    start = time.perf_counter()

    def elapsed() -> float:
        return trained_s + time.perf_counter() - start

    bar = progress_bar(total=steps, initial=step, desc=desc or f"train {app.name}", unit="step", disable=not progress)
    app.train()
    while (steps is None or step < steps) and (seconds is None or elapsed() < seconds) and not (stop and stop()):
        loss = optimisation_step(app, optimizer, step, training_progress(step, steps, elapsed(), seconds), lr_scale)
        step += 1
        bar.update(1)
        if progress and step % LOSS_SHOWN_EVERY == 0:  # float() waits for the device: only for a bar shown
            bar.set_postfix(loss=f"{float(loss):.3g}", refresh=False)  # shown at the bar's next redraw: a log
            # gets a line per LOG_EVERY_S, not per reading
        if after_step is not None:
            after_step(step, loss)
    bar.close()
    return step, elapsed()


def fit(app, steps: int | None = None, seconds: float | None = None, progress: bool = False) -> dict:
    """Train ``app`` with its own optimiser for ``steps`` steps and/or ``seconds`` -> {"steps", "seconds", "loss"}.

    :func:`training_loop` without a run folder: what tests and benchmarks use.
    """
    if steps is None and seconds is None:
        raise ValueError("fit needs steps or seconds")
    optimizer = app.optimizer() if hasattr(app, "optimizer") else adam(app.parameters())
    last_loss = [torch.tensor(float("nan"))]

    def keep(_step: int, loss: torch.Tensor) -> None:
        last_loss[0] = loss

    step, trained_s = training_loop(app, optimizer, steps, seconds, after_step=keep, progress=progress)
    return {"steps": step, "seconds": trained_s, "loss": float(last_loss[0])}
