"""NSDF, neural signed distance function: 3D grid encoding + 64-wide MLP -> SDF, rendered by sphere tracing.

The scene is the analytic CSG scene ("csg") or an OBJ mesh (normalised into [-0.9, 0.9]^3). Training and
held-out points (uniform in the cube [-1, 1]^3 and near the surface: 1/4 and 3/4 for training, half and
half held out) and their SDF values are sampled once into a cache, so a training step is an index draw.
The network predicts a correction to a sphere's SDF (radius 0.5), a geometric initialisation that starts
as a closed surface. Loss: L1 on the SDF. Rendering sphere-traces the scene's padded bounding box: by default
with the fused tracer (:mod:`ngfx.render.ops.fused_sphere_trace`: safe steps on a coarse distance grid baked
from the network, the network only near the surface, normals and shading in the same pass; one Triton kernel
on CUDA, the default there), or stage by stage (``per_ray=False``, the default on a CPU; ``fused=False``: the
baseline).
"""

from __future__ import annotations

import torch

from ngfx.encodings.derived import parameter_state
from ngfx.progress import frame_bands
from ngfx.render import stages
from ngfx.render.ops import sphere_trace
from ngfx.render.apps.base import App
from ngfx.cameras import Intrinsics, orbit_poses
from ngfx.render.ops import mesh_sdf
from ngfx.render.ops.mesh_sdf import Y_UP_TO_Z_UP, load_obj, sample_surface
from ngfx.render.neural_field import NeuralField, adam, check_size, preset_size, use_triton
from ngfx.render.orbit_view import band_rays, fov_x_for_short_side, framing_radius, orbit_camera
from ngfx.render.apps.presets import encoding_preset, mlp_preset
from ngfx.render.ops import fused_sphere_trace
from ngfx.render.ops.fused_sphere_trace import TraceScene, bake_distance_grid, grid_cell
from ngfx.render.ops.sphere_trace import NORMAL_PROBE, to_unit
from scenes.sdf_csg import BOX, csg_sdf

DEFAULT_STEPS = {"tiny": 300, "quick": 1000, "full": 20000}
DEFAULT_SECONDS = {"quick": 90.0}  # the CPU demo stays within 90 s of training on a busy machine
BATCH_SIZE = {"tiny": 2 ** 12, "quick": 2 ** 13, "full": 2 ** 18}
N_TRAIN = {"tiny": 2 ** 15, "quick": 2 ** 17, "full": 2 ** 22}
# the training cache leans to the surface, where signs flip within a few grid cells; held-out sets stay 50/50
TRAIN_NEAR_FRACTION = 0.75
# the finest levels cover the surface with ~2048^2 cells: a 2^19 table collides heavily there
LOG2_HASHMAP_SIZE = {"tiny": 14, "quick": 19, "full": 21}
N_HELD_OUT = {"tiny": 2 ** 12, "quick": 2 ** 14, "full": 2 ** 16}
MAX_STEPS = {"tiny": 48, "quick": 64, "full": 96}
CHUNK_RAYS = {"tiny": 2 ** 14, "quick": 2 ** 16, "full": 2 ** 22}
N_VIEWS, FOV_DEG, ELEVATION_DEG = 8, 40.0, 25.0  # FOV_DEG: of the frame's shorter side
FRAMING_POINTS = 4096  # surface samples the orbit distance is fitted to
SPHERE_RADIUS = 0.5
NEAR_SURFACE_SIGMAS = (0.005, 0.02)  # Gaussian offsets from the surface, in normalised units
# Rays are traced through the scene's bounding box grown by this fraction of its extent (within the field's
# cube): rays that miss it never query the network, and the others start where it begins. On the CSG scene
# at 320x180, 24 % fewer SDF queries, the same hits.
TRACE_BOX_MARGIN = 0.02
HIT_EPS = 5e-4  # a ray hits where |SDF| < HIT_EPS * (1 + t): the tolerance grows with a pixel's footprint
STEP_SCALE = 0.9  # under-relaxed steps: a learned SDF is not a true distance bound
# The fused tracer's coarse distance grid over the trace box (baked from the network once), and how close to the
# surface (in cell diagonals) its bound must come before the network is asked. On the H200 (armadillo, 4K):
# 128^3 and 1 cell 25.7 ms, 256^3 22.3 ms, 0.5 cells 22.6 ms, the same silhouette and shading; later (rays made
# in the kernel) 256^3 17.68 ms, 384^3 16.54 ms, 384^3 with 96 registers 15.86 ms, the same agreement.
COARSE_RESOLUTION = {"tiny": 32, "quick": 64, "full": 384}
COARSE_NEAR_CELLS = 0.5
# The fused kernel keeps no per-ray buffers (it makes a pinhole camera's rays itself): a 4K frame is one band, one
# launch
FUSED_CHUNK_RAYS = 2 ** 24


class NsdfApp(App):
    name = "nsdf"

    def __init__(self, scene: str, encoding: str, size: str = "full", device=None, batch_size: int | None = None,
                 n_train: int | None = None, lr: float = 1e-2, seed: int = 0, log2_hashmap_size: int | None = None,
                 near_fraction: float = TRAIN_NEAR_FRACTION):
        super().__init__()
        check_size(size)
        self.scene, self.encoding_name, self.size, self.lr, self.seed = scene, encoding, size, lr, seed
        self.device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = int(batch_size or BATCH_SIZE[size])
        self.n_train = int(n_train or N_TRAIN[size])
        self.log2_hashmap_size = int(log2_hashmap_size or LOG2_HASHMAP_SIZE[size])
        if not 0.0 <= near_fraction <= 1.0:
            raise ValueError(f"near_fraction must be in [0, 1], got {near_fraction}")
        self.near_fraction = float(near_fraction)
        enc = encoding_preset(encoding, 3, preset_size(size), finest_resolution=2048 if size == "full" else 256,
                              log2_hashmap_size=self.log2_hashmap_size)
        self.field = NeuralField(3, 1, enc, mlp_preset(n_hidden_layers=2), "nsdf").to(self.device_)
        gen = torch.Generator().manual_seed(seed)
        if scene == "csg":
            self.box = torch.tensor(BOX)
            self._sdf = csg_sdf
            self._surface = self._csg_surface
        else:
            vertices, faces = load_obj(scene)
            vertices = vertices @ Y_UP_TO_Z_UP.t()  # OBJ files are y-up; ngfx's orbits are z-up
            lo, hi = vertices.min(0).values, vertices.max(0).values
            scale = 1.8 / float((hi - lo).max())  # mesh into [-0.9, 0.9]^3
            vertices = (vertices - (lo + hi) / 2) * scale
            self.box = torch.stack([vertices.min(0).values, vertices.max(0).values])
            distance = mesh_sdf.signed_distance
            if self.device_.type == "cuda" and use_triton(True, self.device_):
                from ngfx.render.ops import triton_mesh_sdf  # imports triton

                distance = triton_mesh_sdf.signed_distance
            self._sdf = lambda p: distance(vertices, faces, p.to(self.device_)).cpu()
            self._surface = lambda n, g: sample_surface(vertices, faces, n, g)
        self.diagonal = float((self.box[1] - self.box[0]).norm())
        self.orbit_target = tuple(float(v) for v in self.box.mean(0))
        # framed on the surface itself (its own seed: the training samples stay as they were)
        surface = self._surface(FRAMING_POINTS, torch.Generator().manual_seed(seed + 1))
        self.orbit_radius = framing_radius(surface, self.orbit_target, ELEVATION_DEG, FOV_DEG)
        margin = TRACE_BOX_MARGIN * (self.box[1] - self.box[0])
        self.trace_box = torch.stack([(self.box[0] - margin).clamp(min=-1.0), (self.box[1] + margin).clamp(max=1.0)])
        self._trace_scene = None  # (grid and tracing settings, parameter state; TraceScene) of the last fused render
        self.train_points, self.train_sdf = self._sample(self.n_train, gen, near_fraction=self.near_fraction)
        self.uniform_points, self.uniform_sdf = self._sample(N_HELD_OUT[size], gen, near_fraction=0.0)
        self.near_points, self.near_sdf = self._sample(N_HELD_OUT[size], gen, near_fraction=1.0)

    def _csg_surface(self, n: int, gen) -> torch.Tensor:
        """Points on the CSG surface: random points projected along the SDF gradient (a few Newton steps)."""
        p = torch.rand(n, 3, generator=gen) * 2 - 1
        for _ in range(6):
            p.requires_grad_(True)
            d = csg_sdf(p)
            (g,) = torch.autograd.grad(d.sum(), p)
            p = (p - d[:, None] * g / g.norm(dim=1, keepdim=True).clamp(min=1e-9)).detach()
        return p

    def _sample(self, n: int, gen, near_fraction: float = 0.5):
        """n points (uniform in [-1, 1]^3 and near the surface) and their SDF, on the app's device."""
        n_near = int(n * near_fraction)
        uniform = torch.rand(n - n_near, 3, generator=gen) * 2 - 1
        surface = self._surface(n_near, gen) if n_near else torch.zeros(0, 3)
        sigmas = torch.tensor(NEAR_SURFACE_SIGMAS)[torch.randint(len(NEAR_SURFACE_SIGMAS), (n_near, 1), generator=gen)]
        near = (surface + torch.randn(n_near, 3, generator=gen) * sigmas).clamp(-1, 1)
        points = torch.cat([uniform, near])
        sdf = torch.cat([self._sdf(points[i:i + 2 ** 16]) for i in range(0, len(points), 2 ** 16)])
        return points.to(self.device_), sdf.float().to(self.device_)

    def optimizer(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), self.lr)

    def config(self) -> dict:
        return {"scene": self.scene, "encoding": self.encoding_name, "size": self.size, "batch_size": self.batch_size,
                "n_train": self.n_train, "lr": self.lr, "seed": self.seed, "log2_hashmap_size": self.log2_hashmap_size,
                "near_fraction": self.near_fraction}

    def sdf(self, points: torch.Tensor, query: bool = False) -> torch.Tensor:
        """Predicted SDF at world points [N, 3] in [-1, 1]^3 -> [N]; ``query`` runs inference inside stages."""
        x = to_unit(points)
        raw = self.field.query(x) if query else self.field(x)
        return raw[:, 0].float() + points.norm(dim=1) - SPHERE_RADIUS

    def training_step(self, step: int) -> torch.Tensor:
        idx = torch.randint(0, self.train_points.shape[0], (self.batch_size,), device=self.device_)
        return (self.sdf(self.train_points[idx]) - self.train_sdf[idx]).abs().mean()

    @torch.no_grad()
    def evaluate(self) -> dict:
        out = {}
        for name, points, truth in (("uniform", self.uniform_points, self.uniform_sdf),
                                    ("near_surface", self.near_points, self.near_sdf)):
            pred = torch.cat([self.sdf(points[i:i + 2 ** 16], query=True) for i in range(0, len(points), 2 ** 16)])
            out[f"sign_agreement_{name}_pct"] = 100.0 * float(((pred < 0) == (truth < 0)).float().mean())
            out[f"sdf_mae_{name}_pct_diag"] = 100.0 * float((pred - truth).abs().mean()) / self.diagonal
        return out

    def camera(self, width: int, height: int, view) -> tuple[torch.Tensor, Intrinsics]:
        """An orbit around the scene's box, close enough to fill the frame and far enough to crop nothing."""
        return orbit_camera(width, height, view, N_VIEWS, self.orbit_radius, ELEVATION_DEG,
                            fov_x_for_short_side(width, height, FOV_DEG), self.device_, target=self.orbit_target)

    def orbit_poses(self, n_frames: int) -> torch.Tensor:
        """A camera path of ``n_frames`` poses around the scene, framed as :meth:`camera` -> [n_frames, 4, 4]."""
        return orbit_poses(n_frames, self.orbit_radius, ELEVATION_DEG, target=self.orbit_target)

    def trace_scene(self) -> TraceScene:
        """The trained field as the fused tracer reads it, with its coarse distance grid baked once per set of
        weights, trace box, grid and tracing settings (rebuilt when training or loading changed any parameter in
        place, or a module constant it packs was set)."""
        resolution, near_cells = COARSE_RESOLUTION[self.size], COARSE_NEAR_CELLS
        tracing = (SPHERE_RADIUS, HIT_EPS, STEP_SCALE, MAX_STEPS[self.size], NORMAL_PROBE)  # TraceScene's order
        version = (id(self.trace_box), resolution, near_cells, *tracing, *parameter_state(list(self.parameters())))
        if self._trace_scene is None or self._trace_scene[0] != version:
            box = self.trace_box.to(self.device_)  # on the rays' device once, not copied there every step
            grid = bake_distance_grid(lambda p: self.sdf(p, query=True), box, resolution)
            near = near_cells * float(grid_cell(box, resolution).norm())
            self._trace_scene = version, TraceScene(self.field, box, grid, near, *tracing)
        return self._trace_scene[1]

    @torch.no_grad()
    def render(self, width: int, height: int, view=0, fused: bool = True, per_ray: bool | None = None) -> torch.Tensor:
        """Sphere-traced, shaded [height, width, 3] frame, a band of rays at a time; background black.

        ``fused`` and ``per_ray`` (by default on a GPU): the fused tracer (one Triton kernel on CUDA, its PyTorch
        twin elsewhere, slower than the stages on a CPU); ``fused`` alone: stage by stage with the Triton rest
        kernels (where Triton runs); otherwise stage by stage with the PyTorch ops, the baseline the simulator's
        traces compare against.
        """
        c2w, k = self.camera(width, height, view)
        frame = torch.zeros(height * width, 3, device=self.device_)
        per_ray = fused and (self.device_.type == "cuda" if per_ray is None else per_ray)
        triton_ok = use_triton(fused, self.device_)  # per_ray implies fused
        kernel = per_ray and self.device_.type == "cuda" and triton_ok
        if kernel:
            from ngfx.render.ops import triton_fused_sphere_trace  # imports triton
        scene = self.trace_scene() if per_ray else None
        # on the device once a frame, not every band (the traced scene holds it there already)
        box = scene.box if scene is not None else self.trace_box.to(self.device_)
        self.last_render_chunks = 0
        band = FUSED_CHUNK_RAYS if kernel else CHUNK_RAYS[self.size]
        for row0, n_rows in frame_bands(width, height, band, self.device_, "render nsdf"):
            n, frame_band = n_rows * width, frame[row0 * width:(row0 + n_rows) * width]
            if kernel:
                # one kernel for everything, the rays too: the trace records it as one rest stage, timed as it ran
                with stages.stage("nsdf.fused_trace", "rest", n_inputs=n, app="nsdf",
                                  fused="ray_gen+trace+grid_encoding+mlp+shade"):
                    triton_fused_sphere_trace.trace_band(frame_band, c2w, k, row0, n_rows, scene)
            else:
                with stages.stage("nsdf.ray_gen", "rest", n_inputs=n, bytes_written=n * 32.0, app="nsdf"):
                    origins, dirs = band_rays(c2w, k, row0, n_rows)
                if per_ray:  # the twin: its network queries record their own stages
                    fused_sphere_trace.trace_and_shade(frame_band, origins, dirs, scene)
                else:
                    sphere_trace.trace_and_shade(frame_band, origins, dirs, self.field, box, HIT_EPS, STEP_SCALE,
                                                 SPHERE_RADIUS, MAX_STEPS[self.size], fused=triton_ok)
            self.last_render_chunks += 1
        return frame.reshape(height, width, 3)


def build_app(scene: str, encoding: str, size: str = "full", device=None, **options) -> NsdfApp:
    return NsdfApp(scene, encoding, size, device, **options)
