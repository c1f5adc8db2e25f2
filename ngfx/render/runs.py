"""Run folders: train any application into a folder, resume it, load it back, render it.

A run folder holds ``run.json`` ({"app", "scene", "encoding", "size", "options", "budget"}),
``checkpoint.safetensors`` (model state, Adam state, step, the run it belongs to) and ``curve.json`` (loss per
step), both written atomically every ``CHECKPOINT_SECONDS``, on SIGINT/SIGTERM and at the end; then
``metrics.json`` (``evaluate()`` + training seconds and steps) and ``preview.png``. While training, ``.lock``
holds the process's PID, so a second process is refused.
"""

from __future__ import annotations

import importlib
import inspect
import math
import time
import types
import typing
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ngfx.errors import NgfxInputError, TrainingInterrupted
from ngfx.io import (CURVE_HINT, RUN_RECORDS, check_output, folder_lock, load_checkpoint, read_json, require,
                     require_number, require_rows, save_checkpoint, write_image, write_json)
from ngfx.progress import frame_progress, progress_bar
from ngfx.render.apps.base import App
from ngfx.render.metrics import psnr, ssim
from ngfx.render.neural_field import StopSignals, training_loop
from ngfx.render.ops.volume import over_background

APP_MODULES = {"nerf": "ngfx.render.apps.nerf", "nsdf": "ngfx.render.apps.nsdf", "gia": "ngfx.render.apps.gia",
               "nvr": "ngfx.render.apps.nvr"}
CHECKPOINT_SECONDS = 60.0
PREVIEW_WIDTH = 256
VIDEO_FPS = 24
DEFAULT_RESOLUTION = (800, 800)  # render size without --resolution or a cameras file
PROCEDURAL_SCENES = {"nerf": "synthetic", "nsdf": "csg", "gia": "image", "nvr": "cloud"}  # embedded, no files


def scene_reference(scene: str) -> str:
    """How ``run.json`` names a scene: a procedural name as is, a path made absolute, so the run folder
    renders from any working directory."""
    if scene in PROCEDURAL_SCENES.values() or not Path(scene).exists():
        return scene
    return str(Path(scene).resolve())


def app_module(app: str):
    if app not in APP_MODULES:
        raise ValueError(f"app must be one of {', '.join(APP_MODULES)}, got {app!r}")
    return importlib.import_module(APP_MODULES[app])


def _save(path: Path, app: App, optimizer: torch.optim.Optimizer, step: int, seconds: float, run: dict) -> None:
    tensors = {f"model.{k}": v for k, v in app.state_dict().items()}
    for i, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{i}.{name}"] = value.reshape(-1) if value.ndim == 0 else value
    save_checkpoint(path, tensors, {"step": step, "seconds": seconds, "app": app.name, "run": _identity(run)})


def _identity(run: dict) -> dict:
    """What a checkpoint must match: the run's app, scene, encoding and size."""
    return {key: run[key] for key in ("app", "scene", "encoding", "size")}


def _restore(path: Path, app: App, optimizer: torch.optim.Optimizer | None, run: dict | None = None) -> dict:
    tensors, meta = load_checkpoint(path)
    if run is not None and isinstance(meta.get("run"), dict) and meta["run"] != _identity(run):
        raise NgfxInputError(str(path), "metadata.run", f"checkpoint of another run ({meta['run']}), not of "
                                                        f"run.json's {_identity(run)}; use --overwrite to start over")
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


def default_size(device=None) -> str:
    """The size ``train`` uses when none is given, as the demo chooses: full on CUDA, quick on a CPU."""
    on_cuda = torch.device(device).type == "cuda" if device else torch.cuda.is_available()
    return "full" if on_cuda else "quick"


def check_options(module, options: dict, source: str) -> dict:
    """Refuse option keys the app's constructor does not take, and values of another type than it declares
    (a hand-edited or foreign run.json): one clear line instead of a TypeError deep in the app."""
    if not isinstance(options, dict):
        raise NgfxInputError(source, "options", f"expected an object, got {type(options).__name__}")
    app_class = typing.get_type_hints(module.build_app)["return"]
    hints = typing.get_type_hints(app_class.__init__)
    accepted = set(inspect.signature(app_class.__init__).parameters) - {"self", "scene", "encoding", "size", "device"}
    for key, value in options.items():
        if key not in accepted:
            raise NgfxInputError(source, f"options.{key}", f"unknown option of {app_class.__name__} "
                                                           f"(known: {', '.join(sorted(accepted))})")
        hint = hints.get(key, object)
        kinds = _runtime_types(hint)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(sorted({k.__name__ for k in kinds}))
            raise NgfxInputError(source, f"options.{key}", f"expected {names}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value) or key == "lr" and not value > 0:
            raise NgfxInputError(source, f"options.{key}", f"expected a finite number{' > 0' * (key == 'lr')}, "
                                                           f"got {value!r}")
        items = next((typing.get_args(arg) for arg in (hint, *typing.get_args(hint)) if typing.get_origin(arg) is tuple),
                     ())
        if isinstance(value, list) and items and (len(value) != len(items) or not all(
                isinstance(v, t) and not isinstance(v, bool) for v, t in zip(value, items))):
            expected = ", ".join(t.__name__ for t in items)
            raise NgfxInputError(source, f"options.{key}", f"expected [{expected}], got {value!r}")
    return options


def _runtime_types(hint) -> tuple[type, ...]:
    """The classes a JSON value may have for a type hint: ``int | None`` -> (int, NoneType); a float takes an
    int, a tuple a list (JSON has no tuples)."""
    kinds = set()
    for arg in typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,):
        kind = typing.get_origin(arg) or arg
        kinds |= {kind, int} if kind is float else {kind, list} if kind is tuple else {kind}
    return tuple(kinds)


def _saved_run(run_json: Path, app: str, module) -> dict:
    saved, source = read_json(run_json), str(run_json)
    if require(saved, "app", source, str) != app:
        raise NgfxInputError(source, "app", f"run is a {saved['app']!r} run, not {app!r}")
    for key in ("scene", "encoding", "size"):
        require(saved, key, source, str)
    check_options(module, require(saved, "options", source, dict), source)
    budget = saved.get("budget", {})
    for key in ("steps", "seconds"):
        value = budget.get(key) if isinstance(budget, dict) else "?"
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise NgfxInputError(source, f"budget.{key}", f"expected a positive number or null, got {value!r}")
    return saved


def _build_app(module, scene: str, encoding: str, size: str, device, options: dict, run_json: Path | None) -> App:
    """``module.build_app``; a value it refuses among options read from ``run_json`` names that file."""
    try:
        return module.build_app(scene, encoding, size, device, **options)
    except ValueError as e:
        if run_json is None or isinstance(e, NgfxInputError):
            raise
        raise NgfxInputError(str(run_json), "options", str(e)) from None


def _same_scene(given: str, saved: str) -> bool:
    return given == saved or Path(given).resolve() == Path(saved).resolve()


def train(app: str, scene: str, encoding: str | None, out_dir: str | Path, size: str | None = None,
          steps: int | None = None, seconds: float | None = None, device=None, resume: bool = False,
          overwrite: bool = False, progress: bool = True, **options) -> dict:
    """Train ``app`` on ``scene`` into the run folder ``out_dir`` for ``steps`` and/or ``seconds`` of the
    training loop (whichever ends first; with neither, the app's ``DEFAULT_STEPS`` capped by its
    ``DEFAULT_SECONDS`` if any). ``size`` defaults to :func:`default_size`, ``encoding`` to hashgrid.

    A folder that already holds a run is refused unless ``resume`` (continue from its checkpoint up to the
    budget, the saved one when none is given; a different scene, encoding or size is an error) or
    ``overwrite`` (replace it; the old run stays until the new one's first checkpoint). One process at a
    time holds the folder. SIGINT/SIGTERM save the checkpoint and curve, then raise
    :class:`TrainingInterrupted`. Returns the metrics written to ``metrics.json``.
    """
    module = app_module(app)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise ValueError(f"--steps must be a whole number >= 1, got {steps!r}")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--seconds must be a finite number > 0, got {seconds!r}")
    out = check_output(out_dir, "--out", folder=True, run=True)
    with folder_lock(out, "run folder"):  # removes a new folder again if the run is refused
        return _train_locked(module, app, scene, encoding, out, size, steps, seconds, device, resume, overwrite,
                             progress, options)


def _train_locked(module, app, scene, encoding, out, size, steps, seconds, device, resume, overwrite, progress,
                  options) -> dict:
    """:func:`train` once the run folder is locked: what to do with an existing run, then the loop."""
    existing = [name for name in RUN_RECORDS if (out / name).exists()]
    if existing and not (resume or overwrite):
        raise NgfxInputError(str(out), None, f"already holds a run ({', '.join(existing)}); pass --resume to "
                                             "continue it or --overwrite to replace it")
    run_json = out / "run.json"
    saved = _saved_run(run_json, app, module) if resume and run_json.is_file() else None
    if saved is not None:
        for flag, given in (("scene", scene), ("encoding", encoding), ("size", size)):
            if given is not None and not (given == saved[flag] or (flag == "scene" and _same_scene(given, saved[flag]))):
                raise NgfxInputError(str(run_json), flag, f"the run was trained with --{flag} {saved[flag]}, "
                                                          f"not {given}; leave --{flag} out or use --overwrite")
        options = {**saved["options"], **options}
        scene, encoding, size = saved["scene"], saved["encoding"], saved["size"]
        if steps is None and seconds is None:  # continue the saved budget (what is left of it)
            steps, seconds = saved.get("budget", {}).get("steps"), saved.get("budget", {}).get("seconds")
    encoding = encoding or "hashgrid"
    size = size or default_size(device)
    scene = scene_reference(scene)
    total = steps if steps is not None else (None if seconds is not None else module.DEFAULT_STEPS[size])
    if steps is None and seconds is None:  # an app may cap its CPU sizes by time as well (DEFAULT_SECONDS)
        seconds = getattr(module, "DEFAULT_SECONDS", {}).get(size)
    # the run's seed fixes the network's initial weights and the training batches (up to the GPU's atomics), so
    # a run trained again with the same options starts and proceeds the same
    torch.manual_seed(int(options.get("seed", 0)))
    instance: App = _build_app(module, scene, encoding, size, device, options, run_json if saved else None)
    config = instance.config()
    run = {"app": app, "scene": scene, "encoding": encoding, "size": size,
           "options": {k: v for k, v in config.items() if k not in ("scene", "encoding", "size")},
           "budget": {"steps": total, "seconds": seconds}}
    return _train_loop(instance, run, out, total, seconds, resume=saved is not None,
                       replaces=bool(existing) and overwrite, progress=progress)


def _curve(path: Path) -> list:
    """The ``loss`` entries of a curve.json, each ``[step, loss]`` (a whole step >= 1, a finite loss)."""
    return require_rows(read_json(path), "loss", str(path), "step, loss",
                        hint=CURVE_HINT)


def _train_loop(instance: App, run: dict, out: Path, total: int | None, seconds: float | None,
                resume: bool, replaces: bool, progress: bool) -> dict:
    """The training loop of :func:`train`: checkpoint and curve every ``CHECKPOINT_SECONDS``, on a stop
    signal and at the end; then evaluation, ``metrics.json`` and the preview. With ``replaces``, the old
    run's records are replaced at the first checkpoint, not before."""
    run_json, ckpt, curve_path = out / "run.json", out / "checkpoint.safetensors", out / "curve.json"
    optimizer = instance.optimizer()
    step, trained_s, curve = 0, 0.0, []
    if resume and ckpt.is_file():
        meta = _restore(ckpt, instance, optimizer, run)
        step = require_number(meta, "step", f"{ckpt}: metadata", low=0, integer=True)
        trained_s = require_number(meta, "seconds", f"{ckpt}: metadata", default=0.0, low=0.0)
        if curve_path.is_file():
            curve = [entry for entry in _curve(curve_path) if entry[0] <= step]
        if total is not None and step > total:  # --steps is the total: fewer than done would undo nothing
            raise NgfxInputError("--steps", None, f"{total} is fewer than the {step} steps {out} has trained; "
                                                  f"give a larger total to continue it")
    if not replaces:  # after the saved run was read back: a refused resume leaves run.json as it was
        write_json(run_json, run)
    first_step, losses, last_save = step, [], time.perf_counter()

    def save(step: int, trained_s: float) -> None:
        nonlocal replaces, last_save
        if losses:
            values = torch.stack(losses).float().cpu().tolist()
            curve.extend([[step - len(values) + i + 1, v] for i, v in enumerate(values)])
            losses.clear()
        _save(ckpt, instance, optimizer, step, trained_s, run)
        write_json(curve_path, {"loss": curve})
        if replaces:  # the new run now has a checkpoint: its records replace the old run's
            write_json(run_json, run)
            for name in ("metrics.json", "preview.png"):
                (out / name).unlink(missing_ok=True)
            replaces = False
        last_save = time.perf_counter()

    started = time.perf_counter()

    def after_step(step: int, loss: torch.Tensor) -> None:
        losses.append(loss)
        if time.perf_counter() - last_save > CHECKPOINT_SECONDS:
            save(step, trained_s + time.perf_counter() - started)

    with StopSignals() as stop:
        step, trained_s = training_loop(instance, optimizer, total, seconds, step, trained_s, after_step,
                                        stop=stop, progress=progress)
        if stop.signal_number:
            if step == first_step:
                kept = "the previous run is kept" if replaces else "nothing changed in the run folder"
                raise TrainingInterrupted(f"interrupted before the first step; {kept}", stop.signal_number)
            save(step, trained_s)
            raise TrainingInterrupted(f"interrupted at step {step}: checkpoint and curve saved in {out}; "
                                      "training with --resume continues from there", stop.signal_number)
    if step == 0 and seconds is not None:  # the time budget ended before the first step: a run of an untrained model is no result
        if not (replaces or resume):  # a new run: leave no folder (train removes it once empty)
            run_json.unlink(missing_ok=True)
        raise NgfxInputError("--seconds", None, f"the budget of {seconds:g} s ended before the first training step; "
                                                "give more time")
    save(step, trained_s)
    instance.eval()
    metrics = {**instance.evaluate(), "seconds": trained_s, "steps": step, **_identity(run)}
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
    instance = _build_app(module, require(saved, "scene", source, str), require(saved, "encoding", source, str),
                          require(saved, "size", source, str), device,
                          check_options(module, require(saved, "options", source, dict), source), run_json)
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
    from ngfx.cameras import orbit_poses

    return list(orbit_poses(n_frames, radius, elevation_deg=20.0))


def render_run(run_dir: str | Path, out_dir: str | Path, resolution: tuple[int, int] | None = None,
               camera_path: str | None = None, n_frames: int = 1, video: bool = False, fused: bool = True,
               device=None, cameras: str | Path | None = None, evaluate: bool = False,
               progress: bool = True, render_steps: int | None = None) -> list[Path]:
    """Render frames of a run into ``out_dir`` (PNG, and ``video.mp4`` when asked) and write ``metrics.json``.

    The views are the app's evaluation views, an orbit (``camera_path="orbit"``, ``n_frames``), or the poses
    of a ``cameras`` file (:func:`ngfx.render.datasets.load_cameras`) at its intrinsics, or at ``resolution``
    when given; frames of a file that names images are scored against them (PSNR, SSIM). ``metrics.json``
    holds the frame size and render time, those scores, and with ``evaluate`` the app's own evaluation
    (the val split or full image: minutes on a CPU, so only when asked). ``render_steps`` (NVR runs) marches this
    render with that many steps across the cube's diagonal instead of the run's own; metrics.json says which.
    """
    app = load_run(run_dir, device)
    if render_steps is not None:
        if not hasattr(app, "render_steps"):
            raise ValueError(f"--render-steps: a {app.name} run has no render steps to set (NVR runs have)")
        app.render_steps = render_steps
    reference = None
    if cameras is not None:
        from ngfx.render.datasets import load_cameras

        if app.name == "gia":
            raise ValueError(f"--cameras {cameras}: a GIA run is an image, it has no 3D camera to pose")
        camera_set = load_cameras(cameras)
        k = camera_set.intrinsics
        width, height = resolution or (k.width, k.height)
        views = [(pose, k) for pose in camera_set.poses]
        reference = camera_set.images
    else:
        width, height = resolution or DEFAULT_RESOLUTION
        views = camera_views(app, camera_path, n_frames)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores, started = [], time.perf_counter()

    def frames():
        for i, view in enumerate(progress_bar(views, desc=f"render {app.name}", unit="frame", disable=not progress)):
            frame = app.render(width, height, view, fused=fused)
            if reference is not None:
                truth = reference_image(reference[i], width, height).to(frame.device)
                scores.append({"frame": i, "psnr_db": psnr(frame, truth), "ssim": ssim(frame, truth)})
            yield frame.cpu().numpy()

    with frame_progress(progress):  # a large frame shows its bands too
        paths = write_frames(frames(), out, video)
    n_views = max(1, len(views))
    metrics = {"app": app.name, "run": str(Path(run_dir).resolve()), "frames": len(views), "width": width,
               "height": height, "seconds_per_frame": (time.perf_counter() - started) / n_views}
    if hasattr(app, "render_steps"):
        metrics["render_steps"] = app.render_steps
    if scores:
        metrics.update({"cameras": str(Path(cameras).resolve()),
                        "psnr_db": sum(s["psnr_db"] for s in scores) / len(scores),
                        "ssim": sum(s["ssim"] for s in scores) / len(scores), "per_frame": scores})
    if evaluate:
        metrics["evaluation"] = app.evaluate()
    write_json(out / "metrics.json", metrics)
    return paths


def reference_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """A camera file's image [H, W, C] uint8 -> float [height, width, 3] in [0, 1], alpha composited on white
    (as NeRF evaluates) and resized (antialiased) when the render has another size."""
    img = image.float() / 255.0
    if img.shape[-1] == 4:
        img = over_background(img, 1.0)
    if img.shape[:2] != (height, width):
        img = F.interpolate(img.permute(2, 0, 1)[None], size=(height, width), mode="bilinear", antialias=True,
                            align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)
    return img


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
