"""NeRF as instant-ngp does it: grid-encoded density + SH colour network, occupancy grid, fixed-step marching.

Training draws random pixels of the training views (a ray count that adapts so each batch holds about
``TARGET_SAMPLES`` samples), marches them through the occupancy grid (refreshed every 16 steps), drops the
samples behind opaque ones (a density pass, ``EARLY_STOP``, on a GPU), volume renders the rest over a random background
colour (RGBA data) and regresses the pixel colour; every array has a fixed size, so a step never waits for the
GPU (:meth:`NerfApp.training_step`).
Rendering marches bands of pixel rows segment by segment (:func:`ngfx.render.ops.raymarch.render_segments`,
jumping over empty cells of a two-level grid refined from the training grid once per trained field,
``RENDER_SUB``, and with ``raymarch.MACRO`` over empty blocks of its cells first): a segment of occupied samples
per ray at a time (``raymarch.SEGMENT``, growing as rays finish), evaluated, composited front to back, and rays
dropped after the segment that took their transmittance below ``MIN_TRANSMITTANCE``.
With ``per_ray=True`` the fused per-ray kernel (:mod:`ngfx.render.ops.triton_fused_volume`) does march,
encoding, MLPs and compositing of a tile of rays in one kernel instead, stopping each ray at the sample that
takes it below ``MIN_TRANSMITTANCE``.
Evaluation uses a white background, as NeRF-synthetic does.
"""

from __future__ import annotations

import functools
import math

import torch

from ngfx.progress import frame_bands, progress_bar
from ngfx.render import stages
from ngfx.render.ops import raymarch
from ngfx.render.ops.fused_volume import VolumeField
from ngfx.render.apps.base import App
from ngfx.cameras import Intrinsics, orbit_poses, posed_view
from ngfx.render.datasets import load_multiview
from ngfx.render.metrics import psnr, ssim
from ngfx.render.apps.nerf_field import NerfField
from ngfx.render.neural_field import adam, check_size, preset_size, use_triton
from ngfx.render.ops.occupancy import OccupancyGrid, macro_occupancy, refine_occupancy
from ngfx.render.apps.presets import encoding_preset
from ngfx.render.ops import volume

DEFAULT_STEPS = {"tiny": 300, "quick": 600, "full": 20000}
DEFAULT_SECONDS = {"quick": 85.0}  # the CPU demo's budget: stop early on a slow or busy machine
TARGET_SAMPLES = {"tiny": 2 ** 12, "quick": 2 ** 13, "full": 2 ** 18}
SYNTHETIC_RESOLUTION = {"tiny": 32, "quick": 64, "full": 256}
MAX_IMAGE_WIDTH = {"tiny": 64, "quick": 100, "full": None}  # real scenes are downscaled to this for CPU sizes
OCCUPANCY_RESOLUTION = {"tiny": 32, "quick": 64, "full": 128}
STEPS_PER_DIAGONAL = {"tiny": 128, "quick": 256, "full": 1024}  # instant-ngp: sqrt(3)/1024 of the box
N_EVAL_VIEWS = {"tiny": 2, "quick": 4, "full": None}  # None: the whole val split
# rays per band, at least (raymarch.band_size takes more on a GPU with the memory): a 1080p frame (2.07 M rays) is
# one band at full size, so the segment loop's per-pass costs (launches, host syncs) are paid once per frame
CHUNK_RAYS = {"tiny": 2 ** 12, "quick": 2 ** 14, "full": 2 ** 21}
MAX_SCAN = {"tiny": 32, "quick": 64, "full": 128}  # marching iterations (a step or an empty-cell jump) per segment
# a rendered ray stops once less than this much light gets through (instant-ngp renders with 0.01 too; training keeps
# EARLY_STOP): H200, Lego 60 s, 1080p stage by stage: 1e-4 26.9 M samples, 36.1 ms, 34.899 dB (100 val views);
# 1e-3 24.2 M, 34.899 dB; 1e-2 21.5 M, 24.3 ms, 34.887 dB (BENCHMARKS.md, issue 14)
MIN_TRANSMITTANCE = 1e-2
# Rendering marches a two-level grid (occupancy.refine_occupancy) built once from the trained field: each
# occupied cell of the training grid split into RENDER_SUB^3 fine cells, so rays stop sampling the empty part of
# a cell they cross before reaching the surface in it (1 = march the training grid itself)
RENDER_SUB = {"tiny": 2, "quick": 2, "full": 4}
RENDER_GRID_POINTS = 4  # density samples per fine cell
OCCUPANCY_EVERY = {"tiny": 8, "quick": 8, "full": 16}  # CPU sizes train few steps: refresh more often
OCCUPANCY_WARMUP = {"tiny": 32, "quick": 64, "full": 256}  # steps during which every cell is refreshed
EARLY_STOP = 1e-4  # train on the samples before a ray's transmittance falls below this; None: on every one
# where the density pass pays: on a GPU a field evaluation is cheap next to a step's launches (Lego, 60 s: +0.9 dB,
# BENCHMARKS.md); on a CPU it costs steps (synthetic, quick, 35 s, two runs each: 466 / 395 steps and 25.8 / 24.9 dB
# with it, 609 / 521 steps and 26.6 / 26.1 dB without)
EARLY_STOP_DEVICES = ("cuda",)
MARCH_SLOTS_PER_SAMPLE = 4  # a batch's march holds at most this many samples per trained one (for EARLY_STOP)
SLOT_QUANTUM = 2 ** 12  # the march's slots are a multiple of this
BATCH_FILL = 0.95  # the ray count aims at this fraction of the slots: a batch a little larger still fits
WHITE = (1.0, 1.0, 1.0)


class NerfApp(App):
    name = "nerf"

    def __init__(self, scene: str, encoding: str, size: str = "full", device=None, lr: float = 1e-2,
                 image_scale: float | None = None, seed: int = 0):
        super().__init__()
        check_size(size)
        self.scene, self.encoding_name, self.size, self.lr, self.seed = scene, encoding, size, lr, seed
        self.device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if scene == "synthetic":
            from scenes.nerf_synthetic import synthetic_scene

            path = synthetic_scene(resolution=SYNTHETIC_RESOLUTION[size])
        else:
            path = scene
        if image_scale is None:
            train = load_multiview(path, "train")
            max_width = MAX_IMAGE_WIDTH[size]
            image_scale = 1.0 if max_width is None else min(1.0, max_width / train.intrinsics.width)
            if image_scale != 1.0:
                train = load_multiview(path, "train", image_scale)
        else:
            train = load_multiview(path, "train", image_scale)
        self.image_scale = image_scale
        val = load_multiview(path, "val", image_scale)
        dev = self.device_
        self.train_images = train.images.to(dev)  # [N, H, W, C] uint8
        self.train_poses = train.poses.to(dev)
        self.intrinsics: Intrinsics = train.intrinsics
        self.near, self.far = train.near, train.far
        self.aabb = train.aabb.to(dev)
        self.background = torch.tensor(WHITE, device=dev)
        self.eval_poses = val.poses.to(dev)
        self._val_images = val.images
        n_eval = N_EVAL_VIEWS[size] or len(val)
        self.eval_indices = torch.linspace(0, len(val) - 1, min(n_eval, len(val))).round().long().tolist()
        self.field = NerfField(encoding_preset(encoding, 3, preset_size(size))).to(dev)
        self.occupancy = OccupancyGrid(self.aabb, OCCUPANCY_RESOLUTION[size],
                                       warmup_steps=OCCUPANCY_WARMUP[size]).to(dev)
        self.dt = float((self.aabb[1] - self.aabb[0]).norm()) / STEPS_PER_DIAGONAL[size]
        self.max_steps = STEPS_PER_DIAGONAL[size] * 2
        self.target_samples = TARGET_SAMPLES[size]
        self.n_rays = max(64, self.target_samples // 16)  # adapted each step to the samples a ray needs
        self.early_stop = EARLY_STOP if self.device_.type in EARLY_STOP_DEVICES else None
        self.max_march_slots = self.target_samples * (MARCH_SLOTS_PER_SAMPLE if self.early_stop is not None else 1)
        self.march_slots = self.max_march_slots  # until _adapt_batch sizes it to the rays drawn
        # the training step's Triton kernels on a GPU (the interpreter would be slower than the PyTorch twins)
        self.fused_training = use_triton(self.device_.type == "cuda", self.device_)
        if self.fused_training:  # imports triton
            from ngfx.render.ops.triton_raymarch import march_training, training_rays
            from ngfx.render.ops.triton_volume import composite_packed, transmittance_packed
        else:
            training_rays, march_training = raymarch.training_rays, raymarch.march_training
            composite_packed, transmittance_packed = volume.composite_packed, volume.transmittance_packed
        self._training_rays, self._march_training = training_rays, march_training
        self._composite_packed, self._transmittance_packed = composite_packed, transmittance_packed
        self._counts_host = torch.zeros(5, dtype=torch.long, pin_memory=self.device_.type == "cuda")
        self._pending = None  # (event of the counts' copy, rays of that step) until the copy is read
        self._batch_totals, self._batch_steps, self._rays_drawn = torch.zeros(2, device=dev), 0, 0
        self.render_sub = RENDER_SUB[size]
        # the render grid by render_sub, its macro level by (render_sub, raymarch.MACRO): derived, not saved
        self._render_grids: dict[int | tuple[int, int], torch.Tensor] = {}

    # --- what other parts (NeLF distillation, demo, benchmarks) use ---------------------------------
    @property
    def eval_images(self) -> torch.Tensor:
        """Val images [V, H, W, 3] float in [0, 1], alpha-composited on white."""
        img = self._val_images.float() / 255.0
        if img.shape[-1] == 4:
            img = volume.over_background(img, 1.0)
        return img.to(self.device_)

    def optimizer(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), self.lr)

    def config(self) -> dict:
        return {"scene": self.scene, "encoding": self.encoding_name, "size": self.size, "lr": self.lr,
                "image_scale": self.image_scale, "seed": self.seed}

    def orbit_poses(self, n_frames: int) -> torch.Tensor:
        """A camera path circling the scene at the training cameras' mean distance -> [n_frames, 4, 4]."""
        radius = float(self.train_poses[:, :3, 3].norm(dim=1).mean())
        centre = tuple(float(v) for v in self.aabb.mean(0))
        return orbit_poses(n_frames, radius, elevation_deg=30.0, target=centre).to(self.device_)

    # --- training ------------------------------------------------------------------------------------
    def density_world(self, points: torch.Tensor) -> torch.Tensor:
        return self.field.density(raymarch.unit_points(points, self.aabb))

    def training_step(self, step: int) -> torch.Tensor:
        """One batch, without a host sync: rays; their occupied samples in ``march_slots`` slots; with
        ``early_stop`` (``EARLY_STOP`` on ``EARLY_STOP_DEVICES``), a density pass and only the samples before each
        ray's transmittance falls below it, in ``target_samples`` slots; the field, compositing, and the loss over
        the rays whose samples all fitted.
        The ray count adapts from an earlier step's counts, read asynchronously (:meth:`_adapt_batch`)."""
        self._render_grids.clear()  # this step changes the field: refine the render grid again before a render
        if step % OCCUPANCY_EVERY[self.size] == 0:
            with stages.stage("nerf.train.occupancy", "rest", app="nerf"):
                self.occupancy.update(step, self.density_world, self.dt)
        n, march_slots = self.n_rays, self.march_slots
        with stages.stage("nerf.train.rays", "rest", n_inputs=n, app="nerf", fused=self.fused_training):
            origins, dirs, t_near, t_far, target, background = self._training_rays(
                self.train_poses, self.train_images, self.intrinsics, self.aabb, torch.rand(n, 6, device=self.device_))
        with stages.stage("nerf.train.march", "rest", n_inputs=n, app="nerf", fused=self.fused_training):
            samples = marched = self._march_training(
                origins, dirs, t_near.clamp(min=self.near * 0.5), t_far, self.occupancy.mask, self.aabb,
                self.occupancy.resolution, self.dt, self.max_steps, jitter=torch.rand(n, device=self.device_),
                max_samples=march_slots)
        if self.early_stop is not None:
            with stages.stage("nerf.train.density_pass", "mlp", n_inputs=march_slots, app="nerf"), torch.no_grad():
                rays = marched.ray_indices
                sigmas = self.density_world(origins[rays] + marched.t[:, None] * dirs[rays])
                transmittance = self._transmittance_packed(sigmas, marched.deltas, marched.ray_ends)
            with stages.stage("nerf.train.compact", "rest", n_inputs=march_slots, app="nerf"):
                samples = raymarch.compact_training(marched, transmittance > self.early_stop, self.target_samples)
        self._adapt_batch(n, marched, samples)
        with stages.stage("nerf.train.field", "mlp", n_inputs=self.target_samples, app="nerf"):
            rays = samples.ray_indices
            sigmas, rgbs = self.field(raymarch.unit_points(origins[rays] + samples.t[:, None] * dirs[rays], self.aabb),
                                       dirs[rays])
        with stages.stage("nerf.train.composite", "rest", n_inputs=self.target_samples, app="nerf",
                          fused=self.fused_training):
            colour, _ = self._composite_packed(sigmas, rgbs, samples.deltas, samples.ray_ends, background)
            kept = samples.kept.float()
            return (((colour - target) ** 2).sum(dim=1) * kept).sum() / (3.0 * kept.sum().clamp(min=1.0))

    def _adapt_batch(self, n_rays: int, marched: raymarch.TrainingSamples, samples: raymarch.TrainingSamples) -> None:
        """instant-ngp's dynamic batch: as many rays as fill ``BATCH_FILL`` of the trained sample slots (and of
        the march's largest size), from the samples per ray of a recent step; the march gets the slots those
        rays need (the density pass evaluates every slot). The counts are copied to the host without waiting
        and used by the first later step that finds the copy done (samples per ray change slowly)."""
        counts = torch.stack([marched.n_needed, marched.kept.sum(), samples.n_needed, samples.kept.sum(),
                              (samples.deltas > 0).sum()])
        self._batch_totals += counts[3:]
        self._batch_steps += 1
        self._rays_drawn += n_rays
        if self._pending is not None and (self._pending[0] is None or self._pending[0].query()):
            marched_needed, marched_kept, trained_needed = self._counts_host[:3].tolist()
            per_ray = max(marched_needed, 1) / self._pending[1]  # over all the rays drawn
            trained_per_ray = max(trained_needed, 1) / max(marched_kept, 1)  # over the rays the march kept
            rays = BATCH_FILL * min(self.max_march_slots / per_ray, self.target_samples / trained_per_ray)
            self.n_rays = int(min(max(rays, 64), self.target_samples))
            if self.early_stop is not None:  # a whole number of SLOT_QUANTUM: few distinct sizes for the allocator
                needed = math.ceil(self.n_rays * per_ray / BATCH_FILL / SLOT_QUANTUM) * SLOT_QUANTUM
                self.march_slots = max(min(self.max_march_slots, needed), self.target_samples)
            self._pending = None
        if self._pending is None:
            self._counts_host.copy_(counts, non_blocking=True)
            event = None
            if self.device_.type == "cuda":
                event = torch.cuda.Event()
                event.record()
            self._pending = (event, n_rays)

    def batch_stats(self) -> dict:
        """Mean rays drawn, rays trained on and samples trained on per step since the app was built."""
        steps = max(self._batch_steps, 1)
        kept, used = (self._batch_totals / steps).tolist()
        return {"steps": self._batch_steps, "rays_per_step": self._rays_drawn / steps, "rays_kept_per_step": kept,
                "samples_per_step": used, "sample_slots": self.target_samples, "march_slots": self.march_slots}

    # --- rendering -----------------------------------------------------------------------------------
    def load_state_dict(self, *args, **kwargs):
        self._render_grids.clear()  # new weights: the render grid no longer describes them
        return super().load_state_dict(*args, **kwargs)

    def render_grid(self) -> torch.Tensor:
        """What rendering marches: the occupancy mask (``render_sub`` 1), else the two-level grid refined from it
        and the trained field (int64 bits, :func:`ngfx.render.ops.occupancy.refine_occupancy`), built on first use
        (once per trained field, not per frame: no stage of a frame's trace)."""
        if self.render_sub == 1:
            return self.occupancy.mask
        if self.render_sub not in self._render_grids:
            self._render_grids[self.render_sub] = refine_occupancy(
                self.density_world, self.occupancy.mask, self.aabb, self.occupancy.resolution, self.render_sub,
                self.dt, n_points=RENDER_GRID_POINTS, seed=self.seed)
        return self._render_grids[self.render_sub]

    def macro_grid(self) -> torch.Tensor | None:
        """The render grid's macro level (``raymarch.MACRO`` of its cells per axis a macro cell,
        :func:`ngfx.render.ops.occupancy.macro_occupancy`), built on first use and kept with the render grid; None
        while ``raymarch.MACRO`` is 0 or 1."""
        factor = raymarch.MACRO
        if factor <= 1:
            return None
        key = (self.render_sub, factor)
        if key not in self._render_grids:
            self._render_grids[key] = macro_occupancy(self.render_grid(), self.occupancy.resolution, factor)
        return self._render_grids[key]

    def refresh_render_grid(self) -> torch.Tensor:
        """Refine the render grid again (after the occupancy mask was changed in place) -> it."""
        self._render_grids.clear()
        return self.render_grid()

    def volume_field(self) -> VolumeField:
        """The field as the fused per-ray renderer reads it (world points mapped from the scene box)."""
        net = self.field.density_net
        return VolumeField("nerf", net.encoding, net.network, self.field.colour_net, self.aabb, self.field.query)

    @torch.no_grad()
    def _shade(self, origins, dirs, t_near, t_far, background: torch.Tensor, fused: bool,
               per_ray: bool = False) -> torch.Tensor:
        """Colour [n, 3] of rays [n, 3] with box distances [n]: the fused per-ray kernel (``fused`` and
        ``per_ray`` where Triton runs), else segment marching stage by stage; both with early termination."""
        triton_ok = use_triton(fused, origins.device)
        t_start = t_near.clamp(min=self.near * 0.5)
        if triton_ok and per_ray:
            from ngfx.render.ops.triton_fused_volume import render_volume  # imports triton

            return render_volume(origins, dirs, t_start, t_far, self.render_grid(), self.aabb,
                                 self.occupancy.resolution, self.dt, self.volume_field(), background,
                                 max_scan=MAX_SCAN[self.size], min_transmittance=MIN_TRANSMITTANCE, sub=self.render_sub)
        return raymarch.render_segments(
            origins, dirs, t_start, t_far, self.render_grid(), self.aabb,
            self.occupancy.resolution, self.dt, functools.partial(self.field.query, fused=triton_ok),
            background, app="nerf", fused=triton_ok, max_scan=MAX_SCAN[self.size],
            min_transmittance=MIN_TRANSMITTANCE, sub=self.render_sub, macro=self.macro_grid())

    @torch.no_grad()
    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor, fused: bool = True) -> torch.Tensor:
        """Colour [N, 3] of world rays (unit ``dirs``) over the eval background, in chunks (``fused``: as
        :meth:`render`, stage by stage)."""
        out = torch.empty(origins.shape[0], 3, device=self.device_)
        chunk = raymarch.band_size(CHUNK_RAYS[self.size], self.device_)
        for start in range(0, origins.shape[0], chunk):
            o = origins[start:start + chunk].to(self.device_).float().contiguous()
            d = dirs[start:start + chunk].to(self.device_).float().contiguous()
            t_near, t_far = raymarch.ray_aabb(o, d, self.aabb)
            out[start:start + chunk] = self._shade(o, d, t_near, t_far, self.background, fused)
        return out

    def camera(self, width: int, height: int, view) -> tuple[torch.Tensor, Intrinsics]:
        """``view``: a val-view index, a camera-to-world [4, 4] pose (the training camera's field of view), or a
        (pose, Intrinsics) pair -> (c2w, intrinsics at ``width`` x ``height``)."""
        posed = posed_view(view, width, height, self.device_)
        if posed is not None:
            return posed
        if isinstance(view, torch.Tensor) and view.shape == (4, 4):
            c2w = view.float().to(self.device_)
        else:
            c2w = self.eval_poses[int(view) % len(self.eval_poses)]
        k, s = self.intrinsics, width / self.intrinsics.width  # keep the horizontal field of view
        return c2w, Intrinsics(width, height, k.fx * s, k.fy * s, k.cx * s, k.cy * height / k.height,
                               k.k1, k.k2, k.p1, k.p2)

    @torch.no_grad()
    def render(self, width: int, height: int, view=0, fused: bool = True, per_ray: bool = False) -> torch.Tensor:
        """[height, width, 3] frame of ``view``. ``fused`` (with Triton): the fused per-ray kernel with
        ``per_ray`` (opt-in: slower than the stage-by-stage kernels on the H200 so far, BENCHMARKS.md), else the
        stage-by-stage Triton kernels; otherwise the stage-by-stage PyTorch ops."""
        c2w, k = self.camera(width, height, view)
        triton_ok = use_triton(fused, self.device_)
        frame = torch.empty(height * width, 3, device=self.device_)
        band = raymarch.band_size(CHUNK_RAYS[self.size], self.device_)
        for row0, n_rows in frame_bands(width, height, band, self.device_, "render nerf"):
            n = n_rows * width
            origins, dirs, t_near, t_far = raymarch.band_ray_gen(c2w, k, row0, n_rows, self.aabb, app="nerf",
                                                                 fused=triton_ok)
            frame[row0 * width:row0 * width + n] = self._shade(origins, dirs, t_near, t_far, self.background, fused,
                                                               per_ray)
        return frame.reshape(height, width, 3).clamp(0.0, 1.0)

    @torch.no_grad()
    def evaluate(self, per_ray: bool = False) -> dict:
        """PSNR and SSIM on the held-out (val) views, white background (``per_ray``: as :meth:`render`)."""
        k, truth = self.intrinsics, self.eval_images
        psnrs, ssims = [], []
        fused = self.device_.type == "cuda"  # off the GPU, the PyTorch path beats the Triton interpreter
        for v in progress_bar(self.eval_indices, desc=f"evaluate nerf ({k.width}x{k.height})", unit="view"):
            image = self.render(k.width, k.height, v, fused=fused, per_ray=per_ray)
            psnrs.append(psnr(image, truth[v]))
            ssims.append(ssim(image, truth[v]))
        return {"psnr_db": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims), "n_views": len(psnrs),
                "width": k.width, "height": k.height, "occupied_fraction": self.occupancy.occupied_fraction()}


def build_app(scene: str, encoding: str, size: str = "full", device=None, **options) -> NerfApp:
    return NerfApp(scene, encoding, size, device, **options)


def constant_colour_psnr(app: NerfApp) -> float:
    """PSNR of the best constant image (the mean colour) on the eval views: the floor a trained NeRF must beat."""
    truth = app.eval_images[app.eval_indices]
    return psnr(truth.mean(dim=(0, 1, 2)).expand_as(truth), truth)

