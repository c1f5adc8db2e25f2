"""Run folders: train any application into a folder, resume it, load it back, render it.

A run folder holds ``run.json`` ({"app", "scene", "encoding", "size", "options"}), ``checkpoint.safetensors``
(model state, Adam state, step; written atomically every ``CHECKPOINT_SECONDS`` and at the end),
``metrics.json`` (``evaluate()`` + training seconds and steps), ``curve.json`` (loss per step) and
``preview.png``.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ngfx.errors import NgfxInputError
from ngfx.io import load_checkpoint, read_json, require, save_checkpoint, write_image, write_json
from ngfx.render.app import App
from ngfx.render.neural_field import optimisation_step, training_progress

APP_MODULES = {"nerf": "ngfx.render.nerf", "nsdf": "ngfx.render.nsdf", "gia": "ngfx.render.gia",
               "nvr": "ngfx.render.nvr"}
CHECKPOINT_SECONDS = 60.0
CURVE_EVERY = 10  # steps between loss readings (each one is a host sync on the GPU)
PREVIEW_WIDTH = 256
VIDEO_FPS = 24


def app_module(app: str):
    if app not in APP_MODULES:
        raise ValueError(f"app must be one of {', '.join(APP_MODULES)}, got {app!r}")
    return importlib.import_module(APP_MODULES[app])


def _save(path: Path, app: App, optimizer: torch.optim.Optimizer, step: int, seconds: float) -> None:
    tensors = {f"model.{k}": v for k, v in app.state_dict().items()}
    for i, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{i}.{name}"] = value.reshape(-1) if value.ndim == 0 else value
    save_checkpoint(path, tensors, {"step": step, "seconds": seconds, "app": app.name})


def _restore(path: Path, app: App, optimizer: torch.optim.Optimizer | None) -> dict:
    tensors, meta = load_checkpoint(path)
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        app.load_state_dict(model)
    except RuntimeError as e:
        raise NgfxInputError(str(path), "model", f"does not match the run's app ({str(e).splitlines()[0]})") from None
    if optimizer is not None:
        state = optimizer.state_dict()
        for i in range(len(state["param_groups"][0]["params"])):
            entry = {name: tensors[f"optim.{i}.{name}"] for name in ("step", "exp_avg", "exp_avg_sq")
                     if f"optim.{i}.{name}" in tensors}
            if entry:
                entry["step"] = entry.get("step", torch.zeros(1)).reshape(())
                state["state"][i] = entry
        optimizer.load_state_dict(state)
    return meta


def _preview(app: App, out: Path) -> None:
    width = PREVIEW_WIDTH if app.config().get("size") != "tiny" else PREVIEW_WIDTH // 4
    k = getattr(app, "intrinsics", None)
    height = round(width * k.height / k.width) if k is not None else width * 3 // 4
    on_gpu = any(p.is_cuda for p in app.parameters())  # off the GPU, the PyTorch path beats the Triton interpreter
    write_image(out, app.render(width, height, 0, fused=on_gpu).cpu().numpy())


def train(app: str, scene: str, encoding: str, out_dir: str | Path, size: str = "full", steps: int | None = None,
          seconds: float | None = None, device=None, resume: bool = False, progress: bool = True,
          **options) -> dict:
    """Train ``app`` on ``scene`` into ``out_dir`` for ``steps`` (default: the app's) and/or ``seconds``
    (whichever ends first; with neither, the app's ``DEFAULT_STEPS`` capped by its ``DEFAULT_SECONDS`` if any).

    With ``resume``, an existing checkpoint is loaded and training continues up to ``steps``.
    Returns the metrics written to ``metrics.json``.
    """
    module = app_module(app)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_json, ckpt, curve_path = out / "run.json", out / "checkpoint.safetensors", out / "curve.json"
    if resume and run_json.is_file():
        saved = read_json(run_json)
        if require(saved, "app", str(run_json), str) != app:
            raise NgfxInputError(str(run_json), "app", f"run is a {saved['app']!r} run, not {app!r}")
        options = {**require(saved, "options", str(run_json), dict), **options}
        scene, encoding, size = saved["scene"], saved["encoding"], saved["size"]
    instance: App = module.build_app(scene, encoding, size, device, **options)
    config = instance.config()
    write_json(run_json, {"app": app, "scene": scene, "encoding": encoding, "size": size,
                          "options": {k: v for k, v in config.items() if k not in ("scene", "encoding", "size")}})
    optimizer = instance.optimizer()
    total = steps if steps is not None else (None if seconds is not None else module.DEFAULT_STEPS[size])
    if steps is None and seconds is None:  # an app may cap its CPU sizes by time as well (DEFAULT_SECONDS)
        seconds = getattr(module, "DEFAULT_SECONDS", {}).get(size)
    step, trained_s, curve = 0, 0.0, []
    if resume and ckpt.is_file():
        meta = _restore(ckpt, instance, optimizer)
        step, trained_s = int(meta.get("step", 0)), float(meta.get("seconds", 0.0))
        if curve_path.is_file():
            curve = read_json(curve_path).get("loss", [])
    start, last_save = time.perf_counter(), time.perf_counter()
    bar = tqdm(total=total, initial=step, desc=f"train {app}", unit="step", disable=not progress)
    losses = []
    instance.train()
    while (total is None or step < total) and (seconds is None or time.perf_counter() - start < seconds):
        progress = training_progress(step, total, time.perf_counter() - start, seconds)
        losses.append(optimisation_step(instance, optimizer, step, progress))
        step += 1
        bar.update(1)
        if step % CURVE_EVERY == 0:
            values = torch.stack(losses).float().cpu().tolist()
            curve.extend([[step - len(values) + i + 1, v] for i, v in enumerate(values)])
            losses.clear()
            bar.set_postfix(loss=f"{values[-1]:.3g}")
        if time.perf_counter() - last_save > CHECKPOINT_SECONDS:
            _save(ckpt, instance, optimizer, step, trained_s + time.perf_counter() - start)
            last_save = time.perf_counter()
    bar.close()
    if losses:
        values = torch.stack(losses).float().cpu().tolist()
        curve.extend([[step - len(values) + i + 1, v] for i, v in enumerate(values)])
    trained_s += time.perf_counter() - start
    _save(ckpt, instance, optimizer, step, trained_s)
    write_json(curve_path, {"loss": curve})
    instance.eval()
    metrics = {**instance.evaluate(), "seconds": trained_s, "steps": step, "app": app, "scene": scene,
               "encoding": encoding, "size": size}
    write_json(out / "metrics.json", metrics)
    _preview(instance, out / "preview.png")
    return metrics


def load_run(run_dir: str | Path, device=None) -> App:
    """The trained app of a run folder (from ``run.json`` and ``checkpoint.safetensors``)."""
    run = Path(run_dir)
    run_json = run / "run.json"
    saved = read_json(run_json)
    source = str(run_json)
    app = require(saved, "app", source, str)
    module = app_module(app) if app in APP_MODULES else None
    if module is None:
        raise NgfxInputError(source, "app", f"must be one of {', '.join(APP_MODULES)}, got {app!r}")
    instance = module.build_app(require(saved, "scene", source, str), require(saved, "encoding", source, str),
                                require(saved, "size", source, str), device,
                                **require(saved, "options", source, dict))
    _restore(run / "checkpoint.safetensors", instance, None)
    instance.eval()
    return instance


def camera_views(app: App, camera_path: str | None, n_frames: int) -> list:
    """Views to render: the app's evaluation views (None) or an orbit around the scene ("orbit")."""
    if camera_path is None:
        return list(range(n_frames))
    if camera_path != "orbit":
        raise ValueError(f"camera path must be 'orbit' (or none for the evaluation views), got {camera_path!r}")
    if hasattr(app, "orbit_poses"):
        return list(app.orbit_poses(n_frames))
    radius = getattr(importlib.import_module(type(app).__module__), "ORBIT_RADIUS", None)
    if radius is None:  # no 3D camera (GIA): its views are zoom levels
        return list(range(n_frames))
    from ngfx.render.cameras import orbit_poses

    return list(orbit_poses(n_frames, radius, elevation_deg=20.0))


def render_run(run_dir: str | Path, out_dir: str | Path, resolution: tuple[int, int], camera_path: str | None = None,
               n_frames: int = 1, video: bool = False, fused: bool = True, device=None,
               progress: bool = True) -> list[Path]:
    """Render ``n_frames`` PNG frames (and ``video.mp4`` when asked) of a run and write ``metrics.json``."""
    width, height = resolution
    app = load_run(run_dir, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    views = tqdm(camera_views(app, camera_path, n_frames), desc=f"render {app.name}", unit="frame",
                 disable=not progress)
    paths = write_frames((app.render(width, height, view, fused=fused).cpu().numpy() for view in views), out, video)
    write_json(out / "metrics.json", {**app.evaluate(), "app": app.name, "run": str(run_dir)})
    return paths


def write_frames(frames, out_dir: Path, video: bool = False) -> list[Path]:
    """Float frames [H, W, 3] in [0, 1] -> ``out_dir/frame_0000.png`` ... (and ``video.mp4``) -> written paths."""
    paths, video_frames = [], []
    for i, frame in enumerate(frames):
        path = Path(out_dir) / f"frame_{i:04d}.png"
        write_image(path, frame)
        paths.append(path)
        if video:
            video_frames.append((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8))
    if video:
        paths.append(write_video(Path(out_dir) / "video.mp4", video_frames))
    return paths


def write_video(path: Path, frames: list[np.ndarray], fps: int = VIDEO_FPS) -> Path:
    """MP4 through imageio-ffmpeg, written beside ``path`` and renamed into place (atomic)."""
    import os

    import imageio.v2 as imageio

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    # even sizes for yuv420p; macro_block_size=1 keeps the frames' size as is
    with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, quality=8) as writer:
        for frame in frames:
            h, w = frame.shape[:2]
            writer.append_data(frame[: h - h % 2, : w - w % 2])
    os.replace(tmp, path)
    return path
