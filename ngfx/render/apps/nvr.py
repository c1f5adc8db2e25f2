"""NVR, neural volume rendering: a 3D grid encoding + MLP -> (density, colour) fitted to the procedural cloud.

Training regresses the cloud's density (normalised by its peak) and colour at random points of the cube
[-1, 1]^3. Rendering marches each ray through the cube with fixed steps, a segment of samples at a time,
compositing front to back and dropping rays whose transmittance fell below ``1e-3`` (early termination),
with NeRF's segment loop (:func:`ngfx.render.ops.raymarch.render_segments`), or with ``per_ray=True`` through
NeRF's fused per-ray kernel (:mod:`ngfx.render.ops.triton_fused_volume`, which checks after every sample). An occupancy grid
built once from the trained network lets the marcher jump over the empty part of the cube (most of it). The
ground truth is the cloud itself rendered by the same marcher with every cell occupied, so PSNR measures
only the network's error.

The network's render marches ``render_steps`` steps across the cube's diagonal (an app option, default
``RENDER_STEPS_DIAGONAL``, kept in :meth:`NvrApp.config`); the truth always marches ``N_STEPS_DIAGONAL``. The
frame time is about proportional to the samples, so fewer render steps buy time, and the PSNR vs the truth
reports what they cost: each step is exact for its length (opacity ``1 - exp(-sigma dt)``), but a coarser
step samples the cloud's detail more sparsely. The occupancy grid's threshold is a step opacity, so it is
rebuilt for the render step.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch

from ngfx.progress import frame_bands, progress_bar
from ngfx.render import stages
from ngfx.render.ops import raymarch
from ngfx.render.ops.fused_volume import VolumeField
from ngfx.render.apps.base import App
from ngfx.cameras import Intrinsics
from ngfx.render.metrics import psnr
from ngfx.render.orbit_view import orbit_camera
from ngfx.render.neural_field import NeuralField, adam, check_size, preset_size, use_triton
from ngfx.render.ops.occupancy import density_occupancy
from ngfx.render.apps.presets import encoding_preset, mlp_preset
from ngfx.render.ops.sphere_trace import from_unit, to_unit
from scenes.cloud import MAX_DENSITY, cloud

DEFAULT_STEPS = {"tiny": 300, "quick": 1000, "full": 20000}
DEFAULT_SECONDS = {"quick": 90.0}  # the CPU demo stays within 90 s of training on a busy machine
BATCH_SIZE = {"tiny": 2 ** 12, "quick": 2 ** 13, "full": 2 ** 18}
N_STEPS_DIAGONAL = {"tiny": 48, "quick": 128, "full": 256}  # the truth's marching steps across the cube's diagonal
# the network's render steps by default. Full: 32, a frame a real-time renderer can afford (H200, the cloud at
# 3840x2160: 13.92 ms at 32 steps against 92.79 ms at 256, 47.7 dB against the true cloud at 32 steps, an error of
# 0.4 % of full scale; BENCHMARKS.md). The CPU sizes keep the truth's steps. `ngfx render --render-steps` picks others.
RENDER_STEPS_DIAGONAL = {"tiny": 48, "quick": 128, "full": 32}
DIAGONAL = 2.0 * math.sqrt(3.0)  # of the cube [-1, 1]^3
EVAL_SIZE = {"tiny": (32, 24), "quick": (64, 48), "full": (320, 240)}  # quick: the true cloud is slow on a CPU
CHUNK_RAYS = {"tiny": 2 ** 12, "quick": 2 ** 14, "full": 2 ** 20}
MAX_SCAN = {"tiny": 32, "quick": 64, "full": 128}  # marching iterations (a step or an empty-cell jump) per segment
# cells per axis of the occupancy grid: about two marching steps per cell, so a jump saves steps while the
# grid still follows the cloud's outline
OCCUPANCY_RESOLUTION = {"tiny": 16, "quick": 32, "full": 64}
MIN_TRANSMITTANCE = 1e-3
BACKGROUND = (0.1, 0.12, 0.18)
N_VIEWS, N_EVAL_VIEWS, ORBIT_RADIUS, FOV_X_DEG = 8, 4, 3.2, 45.0


class NvrApp(App):
    name = "nvr"

    def __init__(self, scene: str, encoding: str, size: str = "full", device=None, batch_size: int | None = None,
                 lr: float = 1e-2, seed: int = 0, render_steps: int | None = None):
        super().__init__()
        check_size(size)
        if scene != "cloud":
            raise ValueError(f"NVR scene must be 'cloud' (the procedural cloud), got {scene!r}")
        self.scene, self.encoding_name, self.size, self.lr, self.seed = scene, encoding, size, lr, seed
        self.device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = int(batch_size or BATCH_SIZE[size])
        enc = encoding_preset(encoding, 3, preset_size(size), finest_resolution=512 if size == "full" else 128)
        self.field = NeuralField(3, 4, enc, mlp_preset(n_hidden_layers=2), "nvr").to(self.device_)
        self.truth_dt = DIAGONAL / N_STEPS_DIAGONAL[size]
        self.cube = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], device=self.device_)
        self._ground_truth: list[torch.Tensor] | None = None
        self._occupancy: torch.Tensor | None = None  # not a buffer: derived from the weights, not saved
        self.render_steps = RENDER_STEPS_DIAGONAL[size] if render_steps is None else render_steps

    @property
    def render_steps(self) -> int:
        """Marching steps across the cube's diagonal of the network's render (the truth's: N_STEPS_DIAGONAL)."""
        return self._render_steps

    @render_steps.setter
    def render_steps(self, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(f"NVR render_steps must be a whole number >= 1 (marching steps across the cube's "
                             f"diagonal), got {steps!r}")
        self._render_steps = int(steps)
        self.dt = DIAGONAL / self._render_steps
        self._occupancy = None  # its threshold is a step opacity: rebuilt for the new step

    def optimizer(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), self.lr)

    def config(self) -> dict:
        return {"scene": self.scene, "encoding": self.encoding_name, "size": self.size, "batch_size": self.batch_size,
                "lr": self.lr, "seed": self.seed, "render_steps": self.render_steps}

    def density_colour(self, x: torch.Tensor, query: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Network density [N] >= 0 and colour [N, 3] at field coordinates x [N, 3] in [0, 1]^3."""
        if not query:
            raw = self.field(x).float()
            return raw[:, 0].clamp(min=0.0) * MAX_DENSITY, torch.sigmoid(raw[:, 1:4])
        raw = self.field.query(x)
        with stages.stage("nvr.activation", "rest", n_inputs=raw.shape[0], bytes_read=raw.numel() * 4.0,
                          bytes_written=raw.numel() * 4.0, app="nvr"):
            return raw[:, 0].clamp(min=0.0) * MAX_DENSITY, torch.sigmoid(raw[:, 1:4])

    @property
    def occupancy(self) -> torch.Tensor:
        """The network's occupancy mask [OCCUPANCY_RESOLUTION^3] bool over the cube, built on first use."""
        if self._occupancy is None:
            self.refresh_occupancy()
        return self._occupancy

    def refresh_occupancy(self) -> torch.Tensor:
        """Rebuild the occupancy mask from the network's current density -> the mask.

        Cells are skipped below instant-ngp's step opacity of 0.01, as NeRF's grid does: there the network's
        density is residual noise around a cloud whose true density is zero (on the tiny app, skipping it
        raises PSNR vs the truth slightly rather than lowering it).
        """
        self._occupancy = density_occupancy(lambda points: self.density_colour(to_unit(points))[0], self.cube,
                                            OCCUPANCY_RESOLUTION[self.size], self.dt, seed=self.seed)
        return self._occupancy

    def load_state_dict(self, *args, **kwargs):
        self._occupancy = None  # new weights: the grid no longer describes them
        return super().load_state_dict(*args, **kwargs)

    def training_step(self, step: int) -> torch.Tensor:
        self._occupancy = None  # this step changes the network: rebuild the grid before the next render
        points = torch.rand(self.batch_size, 3, device=self.device_) * 2 - 1
        with torch.no_grad():
            sigma, rgb = cloud(points, self.seed)
        raw = self.field(to_unit(points)).float()
        # colour only matters where there is density to show it
        visible = (sigma > 0).float()
        colour_loss = (visible[:, None] * (torch.sigmoid(raw[:, 1:4]) - rgb) ** 2).mean()
        return ((raw[:, 0] - sigma / MAX_DENSITY) ** 2).mean() + colour_loss

    def camera(self, width: int, height: int, view) -> tuple[torch.Tensor, Intrinsics]:
        return orbit_camera(width, height, view, N_VIEWS, ORBIT_RADIUS, 20.0, FOV_X_DEG, self.device_)

    @torch.no_grad()
    def render(self, width: int, height: int, view=0, fused: bool = True, ground_truth: bool = False,
               skip_empty: bool = True, per_ray: bool = False) -> torch.Tensor:
        """Ray-marched [height, width, 3] frame of the network (or of the true cloud with ``ground_truth``).

        The network is marched with the render step (``render_steps``) through its occupancy grid
        (``skip_empty``) or through every step of the cube; the truth always with its own step through every
        step, so it depends neither on the network nor on the render step. ``fused`` (with Triton):
        the network through the fused per-ray kernel with ``per_ray`` (opt-in: slower than the stage-by-stage
        kernels on the H200 so far), else the stage-by-stage Triton kernels; otherwise (and for the truth) stage
        by stage.
        """
        if skip_empty and not ground_truth:
            occupancy, resolution = self.occupancy, OCCUPANCY_RESOLUTION[self.size]
        else:  # one occupied cell: every lattice point of the cube is sampled
            occupancy, resolution = torch.ones(1, dtype=torch.bool, device=self.device_), 1
        query = self._cloud_query if ground_truth else self._network_query
        dt = self.truth_dt if ground_truth else self.dt
        triton_ok = use_triton(fused, self.device_)
        march = functools.partial(raymarch.render_segments, query=query, app="nvr", fused=triton_ok)
        if triton_ok and per_ray and not ground_truth:
            from ngfx.render.ops.triton_fused_volume import render_volume  # imports triton

            march = functools.partial(render_volume, field=self.volume_field())
        c2w, k = self.camera(width, height, view)
        frame = torch.empty(height * width, 3, device=self.device_)
        background = torch.tensor(BACKGROUND, device=self.device_)
        self.last_render_chunks = 0
        band = raymarch.band_size(CHUNK_RAYS[self.size], self.device_)
        for row0, n_rows in frame_bands(width, height, band, self.device_, "render nvr"):
            n = n_rows * width
            origins, dirs, t_near, t_far = raymarch.band_ray_gen(c2w, k, row0, n_rows, self.cube, app="nvr",
                                                                 fused=triton_ok)
            colour = march(origins, dirs, t_near, t_far, occupancy, self.cube, resolution, dt,
                           background=background, max_scan=MAX_SCAN[self.size], min_transmittance=MIN_TRANSMITTANCE)
            frame[row0 * width:row0 * width + n] = colour.clamp(0, 1)
            self.last_render_chunks += 1
        return frame.reshape(height, width, 3)

    def volume_field(self) -> VolumeField:
        """The network as the fused per-ray renderer reads it (the cube mapped onto its unit inputs)."""
        net = self.field.model
        return VolumeField("nvr", net.encoding, net.network, None, self.cube, self._network_query,
                           density_scale=MAX_DENSITY)

    def _network_query(self, points: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and colour at points [S, 3] in the unit cube (the renderers' samples)."""
        return self.density_colour(points, query=True)

    def _cloud_query(self, points: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The true cloud at points [S, 3] in the unit cube (the renderers' samples)."""
        return cloud(from_unit(points), self.seed)

    @torch.no_grad()
    def evaluate(self, per_ray: bool = False) -> dict:
        """Mean PSNR over orbit views of the network vs the true cloud, both rendered by the same marcher
        (``per_ray``: the network as :meth:`render` renders it)."""
        w, h = EVAL_SIZE[self.size]
        views = range(0, N_VIEWS, N_VIEWS // N_EVAL_VIEWS)
        fused = self.device_.type == "cuda"  # off the GPU, the PyTorch path beats the Triton interpreter
        # the true cloud is marched through every step of the cube: on a CPU this is most of the wait
        bar = progress_bar(total=len(views) * (2 if self._ground_truth is None else 1),
                           desc=f"evaluate nvr ({w}x{h})", unit="render")
        if self._ground_truth is None:
            self._ground_truth = []
            for v in views:
                self._ground_truth.append(self.render(w, h, v, fused=fused, ground_truth=True))
                bar.update(1)
        psnrs = []
        for v, truth in zip(views, self._ground_truth):
            psnrs.append(psnr(self.render(w, h, v, fused=fused, per_ray=per_ray), truth))
            bar.update(1)
        bar.close()
        return {"psnr_db": sum(psnrs) / len(psnrs), "n_views": len(psnrs), "width": w, "height": h}


def build_app(scene: str, encoding: str, size: str = "full", device=None, **options) -> NvrApp:
    return NvrApp(scene, encoding, size, device, **options)
