"""Distil a NeLF student from a NeRF teacher run (R2L / MobileR2L): pseudo images, then training.

1. Pseudo data: the teacher renders views from poses sampled around its training cameras (the training
   poses first, then jittered ones). They are stored as uint8 in one ``.npy`` memory map under
   ``RUN_DIR/pseudo/`` and streamed page by page during training; generation resumes where it stopped.
2. Training: MSE between the student's frame and the pseudo image, Adam with cosine decay; atomic
   checkpoints (student + optimiser state) every ``checkpoint_every`` steps; re-running resumes.
3. Optional fine-tuning on the teacher's real training images (when its App has ``train_images``).
4. Evaluation: PSNR of the student, the teacher and a constant-colour baseline on the teacher's eval views.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ngfx.encodings import Encoding
from ngfx.errors import NgfxInputError, TrainingInterrupted
from ngfx.io import (CURVE_HINT, folder_lock, load_checkpoint, read_json, remove_stale_temp_files, require_rows,
                     save_checkpoint, write_image, write_json)
from ngfx.nelf.lightslab import place_slabs
from ngfx.nelf.network import NeLF, build_student, compile_blocks, encode_frames, student_preset, with_overrides
from ngfx.nelf.oracle import teacher_bin_weights
from ngfx.progress import progress_bar
from ngfx.cameras import Intrinsics, look_at, pixel_rays
from ngfx.render.metrics import psnr
from ngfx.render.neural_field import LOSS_SHOWN_EVERY, StopSignals, training_loop
from ngfx.render.ops.volume import over_background

# size -> (preset, long side of the training frames or None for the teacher's, pseudo views, steps,
#          batch, fine-tune steps, learning rate, eval views)
SIZES = {
    "tiny": ("tiny", 32, 24, 150, 4, 0, 3e-3, 3),
    "quick": ("quick", 64, 48, 500, 4, 0, 2e-3, 4),
    # H200, Lego, MobileR2L (BENCHMARKS.md, issue 15): batch 8 / lr 5e-4 / 2,000 views with fine-tuning reached
    # 22.07 dB on the 100 val views after 3 min (its fine-tuning phase: 22.33 -> 22.30 dB on the probe views);
    # batch 32 / lr 1e-3 / 3,000 views reached 23.20 dB (probe) at 3 min and 24.15 dB (100 views) at 5 min
    "full": ("paper", None, 3000, 20000, 32, 0, 1e-3, 100),
}
# the depth oracle trains on rays, not frames: size -> (rays a step, learning rate; its grids take
# GRID_LR_SCALE["oracle"] x it). On a CPU a step's cost is the teacher's density at 4 points a bin (quick, 2 cores:
# 1,024 rays 0.66 s a step, 4,096 rays 2.4 s); on an H200 65,536 rays take 33 ms
ORACLE_TRAINING = {"tiny": (256, 1e-2), "quick": (1024, 4e-3), "full": (1 << 16, 2e-3)}


PHASES = ("distill", "finetune")
RESIDENT_TARGETS_BYTES = 8 << 30  # pseudo views up to this size are copied to the GPU once
RESIDENT_COPY_VIEWS = 256  # views a host-to-GPU copy of them takes at a time
PROBE_VIEWS = 8  # eval views of the quality curve (the final evaluation uses the size's eval views)
PROBE_EVERY_S = {"tiny": 0.0, "quick": 10.0, "full": 30.0}  # seconds between quality probes


def _frame_intrinsics(k: Intrinsics, long_side: int | None, upscale: int) -> Intrinsics:
    """The teacher's camera at a size whose sides are multiples of the student's upscale factor."""
    scale = 1.0 if long_side is None else long_side / max(k.width, k.height)
    w = max(upscale, int(round(k.width * scale / upscale)) * upscale)
    h = max(upscale, int(round(k.height * scale / upscale)) * upscale)
    return k.scaled(w, h)


def sample_poses(train_poses: torch.Tensor, center: torch.Tensor, n: int, jitter: float = 0.15,
                 seed: int = 0) -> torch.Tensor:
    """[n, 4, 4]: the training poses, then jittered eyes around them looking at ``center``.

    A jittered eye is a random training camera moved by ``jitter`` x its distance, its distance to
    ``center`` kept within the training cameras' range; the up vector is the cameras' mean up.
    """
    gen = torch.Generator().manual_seed(seed)
    eyes = train_poses[:, :3, 3].float()
    dist = (eyes - center).norm(dim=1)
    up = train_poses[:, :3, 1].float().mean(0)
    up = up / up.norm().clamp_min(1e-8)
    out = [p.float() for p in train_poses[:n]]
    while len(out) < n:
        i = int(torch.randint(len(eyes), (1,), generator=gen))
        eye = eyes[i] + torch.randn(3, generator=gen) * jitter * dist[i]
        r = float(torch.empty(1).uniform_(float(dist.min()), float(dist.max()), generator=gen))
        eye = center + (eye - center) / (eye - center).norm() * r
        out.append(look_at(eye, center, up))
    return torch.stack(out)


RAYS_PER_RENDER = {"cpu": 1 << 16, "cuda": 1 << 21}  # one render call: a GPU takes several views' rays at once


def teacher_colours(teacher, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """The teacher's colour [R, 3] of world rays [R, 3] on its device: its fused Triton kernels on a GPU only (on a
    CPU they would run in Triton's interpreter)."""
    if "fused" in inspect.signature(teacher.render_rays).parameters:
        return teacher.render_rays(origins, dirs, fused=teacher.aabb.device.type == "cuda").float()
    return teacher.render_rays(origins, dirs).float()


def _teacher_frames(teacher, poses: torch.Tensor, k: Intrinsics):
    """Yield the teacher's uint8 [H, W, 3] frames of ``poses``, as many views a render call as fit
    ``RAYS_PER_RENDER`` (a 400x400 view alone leaves an H200 mostly idle)."""
    device = teacher.aabb.device
    rays_per_render = RAYS_PER_RENDER.get(device.type, RAYS_PER_RENDER["cpu"])
    views_per_render = max(1, rays_per_render // (k.width * k.height))
    for first in range(0, len(poses), views_per_render):
        rays = [pixel_rays(c2w.to(device), k) for c2w in poses[first:first + views_per_render]]
        origins, dirs = torch.cat([o for o, _ in rays]), torch.cat([d for _, d in rays])
        rgb = torch.cat([teacher_colours(teacher, origins[i:i + rays_per_render], dirs[i:i + rays_per_render])
                         for i in range(0, len(origins), rays_per_render)])
        frames = (rgb.clamp(0, 1).reshape(len(rays), k.height, k.width, 3) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        yield from frames


def make_pseudo_data(teacher, out_dir: Path, poses: torch.Tensor, k: Intrinsics, identity: dict | None = None
                     ) -> np.ndarray:
    """Render (or finish rendering) the pseudo images into ``out_dir/pseudo`` -> uint8 memmap [N, H, W, 3].
    ``identity`` (arch, size, teacher) is recorded beside them so a resume can tell whose views they are."""
    folder = out_dir / "pseudo"
    folder.mkdir(parents=True, exist_ok=True)
    images_path, progress_path = folder / "images.npy", folder / "progress.json"
    shape = (len(poses), k.height, k.width, 3)
    progress = read_json(progress_path) if images_path.is_file() and progress_path.is_file() else {}
    done = progress.get("done") if isinstance(progress, dict) and progress.get("shape") == list(shape) else 0
    images = None
    if isinstance(done, int) and not isinstance(done, bool) and 0 < done <= len(poses):
        with contextlib.suppress(ValueError, OSError):  # a truncated file: the views are a cache, render again
            images = np.load(images_path, mmap_mode="r+")
    if images is None or images.shape != shape or images.dtype != np.uint8:
        done = 0
        np.save(folder / "poses.npy", poses.numpy())
        images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=shape)
    with torch.no_grad():
        for i, frame in enumerate(progress_bar(_teacher_frames(teacher, poses[done:], k), total=len(poses) - done,
                                               initial=0, desc="pseudo views", unit="view"), start=done):
            images[i] = frame
            if (i + 1) % 16 == 0 or i + 1 == len(poses):
                images.flush()
                write_json(progress_path, {"shape": list(shape), "done": i + 1, "run": identity or {}})
    del images
    return np.load(images_path, mmap_mode="r")


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict:
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{i}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict) -> None:
    state = opt.state_dict()
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, i, key = name.split(".", 2)
            state["state"].setdefault(int(i), {})[key] = value
    opt.load_state_dict(state)


def cosine_lr_scale(progress: float) -> float:
    """Cosine decay from 1 to 0.1 over ``progress`` in [0, 1] of the phase's budget."""
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class QualityCurve:
    """The distillation's ``curve.json``: the training loss by step, and every ``probe_every_s`` the student's PSNR
    on a few eval views against the ground truth and against the teacher, by minutes since the distillation began
    (``began``, a ``time.perf_counter()`` reading: pseudo views and training both count; the probes' own time does
    not)."""

    def __init__(self, path: Path, model: NeLF, teacher, k: Intrinsics, geometry: dict, n_views: int,
                 probe_every_s: float, began: float):
        self.path, self.model, self.k, self.geometry = path, model, k, geometry
        self.probe_every_s, self.began = probe_every_s, began
        references_began = time.perf_counter()
        self.loss: list[list[float]] = []
        self.psnr: list[list[float]] = []  # [minutes, step, student vs truth dB, student vs teacher dB]
        self.resumed_minutes = 0.0
        if path.is_file():  # a resumed distillation continues its curve
            saved = read_json(path)
            self.loss = require_rows(saved, "loss", str(path), "step, loss", default=[], hint=CURVE_HINT)
            self.psnr = require_rows(saved, "psnr_by_minutes", str(path), "minutes, step, dB vs truth, dB vs teacher",
                                     default=[], hint=CURVE_HINT)
            self.resumed_minutes = max((e[0] for e in self.psnr), default=0.0)
        self.poses, self.truth, self.teacher = _eval_references(teacher, k, n_views)
        self.paused_s = time.perf_counter() - references_began  # rendering the references is not distillation time
        self.last_probe = -math.inf

    def minutes(self) -> float:
        return self.resumed_minutes + (time.perf_counter() - self.began - self.paused_s) / 60

    def add_loss(self, step: int, value: float) -> None:
        self.loss = [e for e in self.loss if e[0] < step] + [[step, value]]  # a resume repeats no step

    def probe(self, step: int, force: bool = False) -> None:
        """Record the student's PSNR at ``step`` if ``probe_every_s`` has passed (or ``force``), and write the file."""
        minutes = self.minutes()
        if not force and (minutes - self.last_probe) * 60 < self.probe_every_s:
            return
        began = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        student = render_student(self.model, self.poses, self.k, self.geometry)
        self.model.train(was_training)
        self.psnr = [e for e in self.psnr if e[1] < step] + [[minutes, step, psnr(student, self.truth),
                                                             psnr(student, self.teacher)]]
        self.last_probe = minutes
        write_json(self.path, {"loss": self.loss, "psnr_by_minutes": self.psnr})
        self.paused_s += time.perf_counter() - began


class _Frames:
    """Distillation as the one training loop (:func:`ngfx.render.neural_field.training_loop`) drives it: each step
    draws ``batch`` of the frames ``targets`` (uint8 [N, H, W, 3]: a memmap streamed page by page, or a tensor
    already on the device) seen from ``poses`` [N, 4, 4] and returns the student's MSE on them."""

    name = "nelf"

    def __init__(self, model: NeLF, targets, poses: torch.Tensor, k: Intrinsics, geometry: dict, batch: int,
                 seed: int):
        self.device = next(model.parameters()).device
        self.model, self.targets, self.k = model, targets, k
        # on the model's device once: per step, a pageable host-to-device copy would make the host wait
        self.poses = poses.to(self.device)
        self.geometry = {**geometry, "aabb": geometry["aabb"].to(self.device)}
        self.batch, self.gen = min(batch, len(poses)), np.random.default_rng(seed)

    def train(self) -> None:
        self.model.train()

    def training_step(self, step: int) -> torch.Tensor:
        idx = np.sort(self.gen.choice(len(self.poses), size=self.batch, replace=False))
        on_device = torch.from_numpy(idx).to(self.device)
        frames = (self.targets[on_device] if torch.is_tensor(self.targets)
                  else torch.from_numpy(np.asarray(self.targets[idx])).to(self.device))
        target = frames.permute(0, 3, 1, 2).float() / 255
        rays = encode_frames(self.model.cfg, self.poses[on_device], self.k, **self.geometry)
        rays = rays.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            prediction = self.model(rays)
        return F.mse_loss(prediction.float(), target)


def _train(model: NeLF, make_data, steps: int, lr: float, ckpt: Path, meta: dict, checkpoint_every: int, desc: str,
           seconds: float | None = None, curve: QualityCurve | None = None, step_offset: int = 0) -> int:
    """Fit ``model`` to what ``make_data(start_step)`` draws (an object with ``train()`` and
    ``training_step(step) -> loss``: :func:`_frame_data` or :class:`_TeacherRays`) for ``steps`` steps or
    ``seconds`` (whichever ends first) -> the steps done; phase ``desc`` of the checkpoint.
    ``curve`` records the loss and probes the quality as it goes, its steps counted from ``step_offset`` (the
    earlier phases' steps). SIGINT/SIGTERM save the checkpoint first, then stop (re-running continues)."""
    opt = _optimizer(model, lr)
    start = 0
    if ckpt.is_file():
        tensors, saved = load_checkpoint(ckpt)
        phase = PHASES.index(saved.get("phase", desc)) if saved.get("phase", desc) in PHASES else -1
        if phase >= PHASES.index(desc):
            try:
                model.load_state_dict({n[6:]: v for n, v in tensors.items() if n.startswith("model.")})
            except RuntimeError as e:  # a checkpoint written before runs recorded their arch and size
                raise NgfxInputError(str(ckpt), "model", "does not match the student of this --arch/--size "
                                     f"({str(e).splitlines()[0]}); use another --out") from None
        if phase > PHASES.index(desc):  # this phase finished in an earlier run
            model.eval()
            return steps
        if phase == PHASES.index(desc):
            _restore_optimizer(opt, tensors)
            start = int(saved["step"])
    frames = make_data(start)

    def after_step(step: int, loss: torch.Tensor) -> None:
        if curve is not None and (step - 1) % LOSS_SHOWN_EVERY == 0:  # a loss read is a host sync
            curve.add_loss(step_offset + step, float(loss))
            curve.probe(step_offset + step)
        if step % checkpoint_every == 0:
            _save_phase(ckpt, model, opt, meta, desc, step)

    with StopSignals() as stop:
        step, _ = training_loop(frames, opt, steps, seconds, start, after_step=after_step,
                                stop=stop, progress=True, lr_scale=cosine_lr_scale, desc=desc)
        _save_phase(ckpt, model, opt, meta, desc, step)
        if stop.signal_number:
            raise TrainingInterrupted(f"interrupted at step {step} of the {desc} phase: checkpoint saved in "
                                      f"{ckpt.parent}; the same command continues from there", stop.signal_number)
    model.eval()
    return step


def _frame_data(model: NeLF, targets, poses: torch.Tensor, k: Intrinsics, geometry: dict, batch: int, seed: int):
    """-> ``make_data`` for :func:`_train`: frames ``targets`` (uint8 [N, H, W, 3]) seen from ``poses``."""
    device = next(model.parameters()).device

    def make_data(start: int) -> _Frames:
        frames = targets
        # a GPU holds the whole set (2,000 views at 400x400 are 0.96 GB), so a step copies nothing from the host
        if device.type == "cuda" and targets.nbytes <= RESIDENT_TARGETS_BYTES:
            frames = torch.empty(targets.shape, dtype=torch.uint8, device=device)
            for first in range(0, len(targets), RESIDENT_COPY_VIEWS):  # a host copy of a few views at a time
                frames[first:first + RESIDENT_COPY_VIEWS].copy_(
                    torch.from_numpy(np.array(targets[first:first + RESIDENT_COPY_VIEWS])))
        return _Frames(model, frames, poses, k, geometry, batch, seed + start)

    return make_data


class _TeacherRays:
    """The depth oracle's distillation (:mod:`ngfx.nelf.oracle`) as the training loop drives it: each step draws
    ``batch`` rays through random points of random frames of ``poses``, asks the teacher for their colour and bin
    weights (:func:`teacher_colours`, :func:`ngfx.nelf.oracle.teacher_bin_weights`) and returns the oracle's
    cross-entropy on the bins plus the field's MSE on the colour, the field sampled (jittered) in the oracle's top bins where they hold the teacher's
    main bin, else in the teacher's top bins."""

    name = "nelf"

    def __init__(self, model, teacher, poses: torch.Tensor, k: Intrinsics, batch: int, seed: int):
        self.device = next(model.parameters()).device
        self.model, self.teacher, self.k, self.batch = model, teacher, k, batch
        self.poses = poses.to(self.device)
        self.frame_size = torch.tensor([k.width, k.height], device=self.device, dtype=torch.float32)
        self.gen = torch.Generator(self.device).manual_seed(seed)

    def train(self) -> None:
        self.model.train()

    def training_step(self, step: int) -> torch.Tensor:
        cfg, n = self.model.cfg, self.batch
        views = torch.randint(len(self.poses), (n,), device=self.device, generator=self.gen)
        pixels = torch.rand(n, 2, device=self.device, generator=self.gen) * self.frame_size
        origins, dirs = pixel_rays(self.poses[views], self.k, pixels)
        colour = teacher_colours(self.teacher, origins, dirs)
        weights = teacher_bin_weights(self.teacher, origins, dirs, self.model.aabb, cfg.n_bins)
        logits = self.model.bin_logits(origins, dirs)
        oracle_loss = -(weights * torch.log_softmax(logits, dim=1)).sum(1).mean()
        # the field learns in the oracle's bins where they hold the teacher's main bin (or the ray misses), so it
        # learns the empty space the oracle samples around the surface; in the teacher's bins elsewhere, so it never
        # learns colour where the surface is not
        teacher_bins = weights[:, :cfg.n_bins].topk(cfg.top_bins, dim=1).indices
        oracle_bins = logits.detach()[:, :cfg.n_bins].topk(cfg.top_bins, dim=1).indices
        holds = (oracle_bins == weights[:, :cfg.n_bins].argmax(1, keepdim=True)).any(1) | (weights[:, -1] > 0.5)
        bins = torch.where(holds[:, None], oracle_bins, teacher_bins)
        jitter = torch.rand(n, cfg.top_bins, cfg.samples_per_bin, device=self.device, generator=self.gen)
        return F.mse_loss(self.model.shade(origins, dirs, bins, jitter), colour) + oracle_loss


GRID_LR_SCALE = {"lightslab": 20.0, "oracle": 5.0}  # grid tables learn at instant-ngp-like rates (1e-2)


def _param_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """Adam groups: a grid student's tables (every :class:`Encoding`) at ``GRID_LR_SCALE`` x ``lr``, everything
    else at ``lr``."""
    tables = {id(p) for m in model.modules() if isinstance(m, Encoding) for p in m.parameters()}
    grids = [p for p in model.parameters() if id(p) in tables]
    rest = [p for p in model.parameters() if id(p) not in tables]
    groups = [{"params": rest, "lr": lr, "base_lr": lr}]
    scale = GRID_LR_SCALE.get(model.cfg.arch, 1.0)
    return groups + ([{"params": grids, "lr": lr * scale, "base_lr": lr * scale}] if grids else [])


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam over :func:`_param_groups`; the depth oracle's hash grids with instant-ngp's betas and epsilon."""
    fused = next(model.parameters()).device.type == "cuda" or None
    if model.cfg.arch == "oracle":
        return torch.optim.Adam(_param_groups(model, lr), betas=(0.9, 0.99), eps=1e-15, fused=fused)
    return torch.optim.Adam(_param_groups(model, lr), fused=fused)


def _save_phase(ckpt: Path, model: NeLF, opt: torch.optim.Optimizer, meta: dict, desc: str, step: int) -> None:
    """Checkpoint the student and its optimiser at ``step`` of phase ``desc`` (atomic)."""
    tensors = {f"model.{n}": v for n, v in model.state_dict().items()} | _optimizer_tensors(opt)
    save_checkpoint(ckpt, tensors, {**meta, "phase": desc, "step": step})


def _resize(images: torch.Tensor, k: Intrinsics) -> torch.Tensor:
    """[V, H, W, 3] float -> [V, k.height, k.width, 3] (area average)."""
    x = images.float().permute(0, 3, 1, 2)
    return F.interpolate(x, size=(k.height, k.width), mode="area").permute(0, 2, 3, 1)


def render_student(model: NeLF, poses: torch.Tensor, k: Intrinsics, geometry: dict) -> torch.Tensor:
    """[V, H, W, 3] frames of ``poses`` [V, 4, 4], one network forward each."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(encode_frames(model.cfg, p[None].to(device), k, **geometry)).permute(0, 2, 3, 1)
                          for p in poses]).float().cpu()


def _eval_references(teacher, k: Intrinsics, n_views: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n_views`` of the teacher's eval views, evenly spread: their poses [V, 4, 4], ground truth and the teacher's
    frames [V, k.height, k.width, 3] in [0, 1]."""
    views = torch.linspace(0, len(teacher.eval_poses) - 1, min(n_views, len(teacher.eval_poses))).round().long()
    poses = teacher.eval_poses[views].float().cpu()
    eval_images = teacher.eval_images  # a property that converts the whole val set: read once
    truth = _resize(eval_images[views.to(eval_images.device)].cpu(), k)
    with torch.no_grad():
        teacher_frames = torch.from_numpy(np.stack(list(_teacher_frames(teacher, poses, k)))).float() / 255
    return poses, truth, teacher_frames


COMPARISON_IMAGE = "comparison.png"  # the first eval view: ground truth | teacher | student, side by side


def evaluate(model: NeLF, teacher, k: Intrinsics, geometry: dict, n_views: int, background: np.ndarray,
             comparison: Path | None = None) -> dict:
    """PSNR of the student, the teacher and the best constant colour on the teacher's eval views; with
    ``comparison``, the first view's ground truth, teacher and student frames side by side written there."""
    poses, reference, teacher_frames = _eval_references(teacher, k, n_views)
    student = render_student(model, poses, k, geometry)
    constant = torch.as_tensor(background, dtype=torch.float32).expand_as(reference)
    if comparison is not None:
        write_image(comparison, torch.cat([reference[0], teacher_frames[0], student[0]], dim=1).clamp(0, 1).numpy())
    return {"eval_views": len(poses), "eval_resolution": [k.width, k.height],
            "student_psnr_db": psnr(student, reference), "teacher_psnr_db": psnr(teacher_frames, reference),
            "constant_colour_psnr_db": psnr(constant, reference),
            "student_vs_teacher_psnr_db": psnr(student, teacher_frames)}


@contextlib.contextmanager
def _conv_settings(device: torch.device, n: int = 1):
    """Small convs on CPU: one thread (measured 17 ms vs 340 ms a tiny-student step on a busy 2-core machine).
    On CUDA, cuDNN picks its fastest algorithms for the fixed training shapes. Both restored afterwards."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if device.type == "cpu":
        torch.set_num_threads(n)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


def check_resumable(out_dir: Path, identity: dict, student: dict) -> None:
    """Refuse an ``out_dir`` a distillation with ``identity`` (arch, size, teacher) cannot continue: another
    app's run, a NeLF run of another --arch, --size or teacher run, a checkpoint of another ``student`` (its config
    and training settings: --student-config, --batch, --lr), or a non-empty folder holding no NeLF run.
    A new or empty folder starts a fresh run."""
    if not out_dir.is_dir() or not any(p.name != ".lock" for p in out_dir.iterdir()):
        return
    records = []  # (file, the identity it records)
    saved_student = None
    run_json, ckpt, progress = out_dir / "run.json", out_dir / "checkpoint.safetensors", out_dir / "pseudo" / "progress.json"
    if run_json.is_file():
        run = read_json(run_json)
        if run.get("app") != "nelf":
            raise NgfxInputError(str(run_json), "app", f"{out_dir} holds a {run.get('app')!r} run, not a NeLF run; "
                                 "pick another --out")
        records.append((run_json, {key: run[key] for key in ("arch", "size") if key in run}))
    if ckpt.is_file():
        _, meta = load_checkpoint(ckpt)
        if meta.get("app") != "nelf":
            raise NgfxInputError(str(ckpt), "app", f"{out_dir} holds a checkpoint of a {meta.get('app')!r} run, not "
                                 "of a NeLF run; pick another --out")
        records.append((ckpt, meta.get("run") if isinstance(meta.get("run"), dict) else {}))
        saved_student = meta.get("student")
    if progress.is_file():
        saved = read_json(progress)
        saved = saved.get("run") if isinstance(saved, dict) else None
        records.append((progress, saved if isinstance(saved, dict) else {}))
    if not records:
        raise NgfxInputError(str(out_dir), None, "is not empty and holds no NeLF run (no run.json, checkpoint or "
                             "pseudo views); pick a new or empty --out")
    for path, saved in records:
        for key, flag in (("arch", "--arch"), ("size", "--size"), ("teacher", "teacher run")):
            if key in saved and saved[key] != identity[key]:
                raise NgfxInputError(str(path), key, f"the run was distilled with {flag} {saved[key] or '(none)'}, "
                                     f"not {identity[key] or '(none)'}; use the same {flag} or another --out")
    if isinstance(saved_student, dict) and saved_student != student:
        changed = sorted(key for key in set(saved_student) | set(student) if saved_student.get(key) != student.get(key))
        raise NgfxInputError(str(ckpt), changed[0], f"the checkpoint's student was trained with {changed[0]} "
                             f"{saved_student.get(changed[0])!r}, not {student.get(changed[0])!r}; use the same "
                             "--student-config, --batch and --lr, or another --out")


def distill_from_app(teacher, out_dir: str | Path, size: str = "quick", **options) -> dict:
    """Distil a student from a loaded teacher App into ``out_dir`` -> the run's ``run.json`` contents.

    Options: ``arch`` ("mobile_r2l" or "lightslab"), ``config`` (a NeLFConfig or LightSlabConfig), ``n_pseudo``,
    ``steps``, ``finetune_steps``, ``seconds`` (a training
    time budget for both phases, shared as their step counts are), ``long_side`` (of the
    training frames; None = the teacher's size), ``batch`` (frames a step), ``lr`` (the distillation's peak
    learning rate; fine-tuning takes a fifth of it), ``compiled`` (the student's residual blocks through
    torch.compile), ``checkpoint_every``, ``teacher_run``, ``seed``.
    One process at a time holds ``out_dir``; a folder this call created is removed again if it is refused.
    """
    out_dir = Path(out_dir)
    with folder_lock(out_dir, "NeLF run folder"), _conv_settings(teacher.aabb.device):
        remove_stale_temp_files(out_dir / "pseudo")  # left by a process killed mid-write (folder_lock clears out_dir)
        return _distill(teacher, out_dir, size, **options)


def _size_row(size: str) -> tuple:
    """The :data:`SIZES` row of ``size``; an unknown size is an error naming the field."""
    if size not in SIZES:
        raise NgfxInputError("distill", "size", f"must be one of {list(SIZES)}, got {size!r}")
    return SIZES[size]


def _check_training_options(batch, lr) -> None:
    """``batch`` (frames a step) an integer >= 1 and ``lr`` a finite number > 0, each None for the size's default."""
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise NgfxInputError("--batch", "batch", f"must be an integer >= 1 (frames a step), got {batch!r}")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                           or lr <= 0):
        raise NgfxInputError("--lr", "lr", f"must be a finite number > 0, got {lr!r}")


def _distill(teacher, out_dir: Path, size: str, *, arch: str = "mobile_r2l", config=None, n_pseudo: int | None = None,
             steps: int | None = None, finetune_steps: int | None = None, long_side: int | None = -1,
             batch: int | None = None, lr: float | None = None, checkpoint_every: int = 100, teacher_run: str = "",
             seed: int = 0, seconds: float | None = None, compiled: bool = False) -> dict:
    preset, side, n_default, steps_default, batch_default, ft_default, lr_default, n_eval = _size_row(size)
    _check_training_options(batch, lr)
    cfg = config or student_preset(arch, preset)
    is_oracle = cfg.arch == "oracle"
    if is_oracle:
        (batch_default, lr_default), ft_default = ORACLE_TRAINING[size], 0
        if finetune_steps:
            raise NgfxInputError("--finetune-steps", "finetune_steps", "the depth oracle learns from the teacher's "
                                 "bin weights, which real images do not have: fine-tuning takes 0 steps for it")
    batch, lr = batch or batch_default, lr or lr_default
    identity = {"arch": cfg.arch, "size": size,
                "teacher": str(Path(teacher_run).resolve()) if teacher_run else ""}
    # what a resumed checkpoint must have been trained as (the slabs are placed from the teacher's cameras below)
    student = {**{key: value for key, value in cfg.to_dict().items()
                  if key not in ("slab_normals", "aabb", "background")}, "batch": batch, "lr": lr}
    check_resumable(out_dir, identity, student)
    n_pseudo = n_pseudo or n_default
    steps = steps if steps is not None else steps_default
    finetune_steps = finetune_steps if finetune_steps is not None else ft_default
    side = side if long_side == -1 else long_side
    device = teacher.aabb.device
    torch.manual_seed(seed)
    started = time.perf_counter()

    k = _frame_intrinsics(teacher.intrinsics, side, cfg.upscale)
    aabb = teacher.aabb.detach().float().cpu()
    geometry = {"near": float(teacher.near), "far": float(teacher.far), "aabb": aabb}
    center = aabb.mean(0)
    if identity["arch"] == "lightslab" and not cfg.slab_normals:  # slabs face the teacher's cameras
        cfg = replace(cfg, slab_normals=place_slabs(center - teacher.train_poses[:, :3, 3].detach().float().cpu(),
                                                    cfg.n_slabs))
    if is_oracle:  # its scene box and background are the teacher's
        cfg = replace(cfg, aabb=tuple(tuple(c) for c in aabb.tolist()),
                      background=tuple(float(c) for c in teacher.background.detach().float().cpu()))
    poses = sample_poses(teacher.train_poses.detach().float().cpu(), center, n_pseudo, seed=seed)
    # the depth oracle asks the teacher ray by ray as it trains; the other students learn from its frames
    images = None if is_oracle else make_pseudo_data(teacher, out_dir, poses, k, identity)

    # NHWC is the tensor cores' native conv layout (as at inference, nelf.runs.inference_model)
    model = build_student(cfg).to(device).to(memory_format=torch.channels_last)
    if compiled:  # its compilation runs in the first steps and probes, inside the time budget
        compile_blocks(model)
    ckpt = out_dir / "checkpoint.safetensors"
    meta = {"app": "nelf", "nelf_config": cfg.to_dict(), "run": identity, "student": student}
    # a time budget is shared between the phases as their step counts are
    has_finetune = finetune_steps > 0 and hasattr(teacher, "train_images")
    share = steps / (steps + (finetune_steps if has_finetune else 0)) if seconds else 1.0
    curve = QualityCurve(out_dir / "curve.json", model, teacher, k, geometry, PROBE_VIEWS, PROBE_EVERY_S[size],
                         started)  # the pseudo views count as distillation time
    make_data = ((lambda start: _TeacherRays(model, teacher, poses, k, batch, seed + start)) if is_oracle
                 else _frame_data(model, images, poses, k, geometry, batch, seed))
    steps_done = _train(model, make_data, steps, lr, ckpt, meta, checkpoint_every, "distill",
                        seconds * share if seconds else None, curve)
    finetune_done = 0
    if has_finetune:
        real = teacher.train_images.cpu()
        real = real.float() / 255 if real.dtype == torch.uint8 else real.float()
        if real.shape[-1] == 4:  # composite RGBA on the teacher's background
            real = over_background(real, teacher.background.cpu())
        real = (_resize(real, k).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        finetune_data = _frame_data(model, real, teacher.train_poses.detach().float().cpu(), k, geometry, batch,
                                    seed + 1)
        finetune_done = _train(model, finetune_data, finetune_steps, lr * 0.2, ckpt, meta, checkpoint_every,
                               "finetune", seconds * (1 - share) if seconds else None, curve, steps_done)
    curve.probe(steps_done + finetune_done, force=True)

    background = (curve.teacher.mean(dim=(0, 1, 2)).numpy() if images is None
                  else np.asarray(images[: min(len(images), 64)], dtype=np.float32).mean(axis=(0, 1, 2)) / 255)
    metrics = evaluate(model, teacher, k, geometry, n_eval, background, out_dir / COMPARISON_IMAGE)
    train_eyes = teacher.train_poses[:, :3, 3].detach().float().cpu() - center
    run = {"app": "nelf", "arch": cfg.arch, "teacher_run": str(teacher_run), "size": size,
           "nelf_config": cfg.to_dict(),
           "resolution": [k.width, k.height], "intrinsics": asdict(k), "near": geometry["near"],
           "far": geometry["far"], "aabb": aabb.tolist(), "orbit_radius": float(train_eyes.norm(dim=1).mean()),
           "orbit_elevation_deg": float(torch.rad2deg(torch.asin(train_eyes[:, 2] / train_eyes.norm(dim=1))).mean()),
           "pseudo_views": len(poses), "steps": steps_done, "finetune_steps": finetune_done, "batch": batch,
           "lr": lr, "compiled": compiled, "metrics": metrics}
    write_json(out_dir / "run.json", run)
    write_json(out_dir / "metrics.json", metrics)
    return run


def distill(teacher_run: str | Path, out_dir: str | Path, size: str = "quick", device: str | None = None,
            student_config: str | Path | None = None, **options) -> dict:
    """``ngfx nelf distill``: load the NeRF run ``teacher_run`` and distil a student into ``out_dir``.
    ``student_config``: a JSON file of config fields replacing those of the size's preset of ``arch``."""
    from ngfx.render.runs import load_run

    # a bad --size, --arch, --batch, --lr or --student-config fails before the teacher loads
    cfg = student_preset(options.get("arch", "mobile_r2l"), _size_row(size)[0])
    if student_config is not None:
        options["config"] = with_overrides(cfg, read_json(student_config), str(student_config))
    _check_training_options(options.get("batch"), options.get("lr"))
    source = Path(teacher_run) / "run.json"
    app = read_json(source).get("app")
    if app != "nerf":
        raise NgfxInputError(str(source), "app", f"the teacher must be a NeRF run, got {app!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    teacher = load_run(teacher_run, device)
    teacher.eval()
    return distill_from_app(teacher, out_dir, size, teacher_run=str(teacher_run), **options)
