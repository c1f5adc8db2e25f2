"""The fused sphere tracer: its kernel against its PyTorch twin and against the stage-by-stage path, on a small
analytic-ish field (a sphere bent by a random hash grid) under the Triton interpreter, fp32."""

import dataclasses
import math

import pytest
import torch

from ngfx.cameras import Intrinsics, orbit_poses
from ngfx.render.apps.presets import mlp_preset
from ngfx.render.neural_field import NeuralField
from ngfx.render.ops import fused_sphere_trace, sphere_trace, triton_fused_sphere_trace
from ngfx.render.orbit_view import band_rays

WIDTH, HEIGHT = 16, 12
BOX = torch.tensor([[-0.8] * 3, [0.8] * 3])
SPHERE_RADIUS, HIT_EPS, STEP_SCALE, MAX_STEPS = 0.5, 5e-4, 0.9, 48
# coarse levels only: the bumps are smooth enough that every path finds the same surface
ENCODING = {"otype": "HashGrid", "n_levels": 8, "n_features_per_level": 2, "log2_hashmap_size": 12,
            "base_resolution": 4, "per_level_scale": 1.5, "interpolation": "Linear"}


def bumpy_field(amplitude: float, seed: int = 0) -> NeuralField:
    torch.manual_seed(seed)
    field = NeuralField(3, 1, ENCODING, mlp_preset(n_hidden_layers=2), "nsdf")
    with torch.no_grad():
        field.model.encoding.params.normal_(0.0, amplitude)
    return field


def scene_of(field: NeuralField, resolution: int = 32) -> fused_sphere_trace.TraceScene:
    def sdf(points):
        return field.query(sphere_trace.to_unit(points))[:, 0] + points.norm(dim=1) - SPHERE_RADIUS

    grid = fused_sphere_trace.bake_distance_grid(sdf, BOX, resolution)
    near = float(fused_sphere_trace.grid_cell(BOX, resolution).norm())
    return fused_sphere_trace.TraceScene(field, BOX, grid, near, SPHERE_RADIUS, HIT_EPS, STEP_SCALE, MAX_STEPS,
                                         sphere_trace.NORMAL_PROBE)


def rays(view: int = 0):
    c2w = orbit_poses(8, 2.5, elevation_deg=25.0)[view]
    return band_rays(c2w, Intrinsics.from_fov_x(WIDTH, HEIGHT, math.radians(40.0)), 0, HEIGHT)


def stage_by_stage(origins, dirs, scene) -> torch.Tensor:
    """The unfused path (the app's ``fused=False``) on the scene's field."""
    frame = torch.zeros(origins.shape[0], 3)
    sphere_trace.trace_and_shade(frame, origins, dirs, scene.field, scene.box, HIT_EPS, STEP_SCALE, SPHERE_RADIUS,
                                 scene.max_steps)
    return frame


def traced(module, origins, dirs, scene) -> torch.Tensor:
    frame = torch.zeros(origins.shape[0], 3)
    module.trace_and_shade(frame, origins, dirs, scene)
    return frame


@pytest.fixture(scope="module")
def bumpy():
    scene = scene_of(bumpy_field(0.05))
    origins, dirs = rays()
    return scene, origins, dirs, traced(triton_fused_sphere_trace, origins, dirs, scene)


def test_kernel_equals_twin_and_stage_path(bumpy):
    scene, origins, dirs, kernel = bumpy
    twin = traced(fused_sphere_trace, origins, dirs, scene)
    stages = stage_by_stage(origins, dirs, scene)
    hit = kernel.sum(1) > 0
    assert 0.2 < float(hit.float().mean()) < 0.8  # the object and the background are both in view
    # kernel and twin take the same steps: the same hits, colours to float rounding
    assert torch.equal(hit, twin.sum(1) > 0)
    torch.testing.assert_close(kernel, twin, atol=1e-4, rtol=0)
    # the stage path steps differently (no coarse grid) and stops elsewhere within the hit tolerance: the same
    # hits but at most a silhouette pixel, and where both hit the same shading to about a thousandth (a few
    # pixels by more: the hash grid's normals jump at cell borders, which a stop within the tolerance can cross)
    stage_hit = stages.sum(1) > 0
    assert int((hit != stage_hit).sum()) <= 1
    off = (kernel - stages)[hit & stage_hit].abs().amax(1)
    assert float(off.median()) < 0.003 and float(off.quantile(0.8)) < 0.02


# a frame wider than tall, unequal focal lengths and a principal point off the centre: a ray made in the kernel
# with a flipped or swapped axis, a half-pixel shift or the band's first row left out lands on another pixel
OFF_CENTRE = Intrinsics(14, 10, 11.0, 13.5, 6.2, 5.7)
DISTORTED = dataclasses.replace(OFF_CENTRE, k1=-0.2, p2=0.01)


@pytest.mark.parametrize("k, row0, n_rows", [(OFF_CENTRE, 2, 7), (DISTORTED, 3, 4)], ids=["pinhole", "distorted"])
def test_band_of_a_camera_equals_twin(bumpy, k, row0, n_rows):
    """A pinhole camera's rays are made in the kernel, a distorted camera's are read from band_rays; either way
    the band's pixels are those of the twin, which reads band_rays' rays."""
    scene = bumpy[0]
    c2w = orbit_poses(8, 2.5, elevation_deg=25.0)[1]
    kernel, twin = (torch.zeros(n_rows * k.width, 3) for _ in range(2))
    triton_fused_sphere_trace.trace_band(kernel, c2w, k, row0, n_rows, scene)
    fused_sphere_trace.trace_band(twin, c2w, k, row0, n_rows, scene)
    hit = twin.sum(1) > 0
    assert 0.1 < float(hit.float().mean()) < 0.9
    assert torch.equal(kernel.sum(1) > 0, hit)
    torch.testing.assert_close(kernel, twin, atol=1e-4, rtol=0)


def test_a_perturbed_field_changes_the_image(bumpy):
    scene, origins, dirs, kernel = bumpy
    bumpier = scene_of(bumpy_field(0.05, seed=1))
    other = traced(triton_fused_sphere_trace, origins, dirs, bumpier)
    assert float((other - kernel).abs().amax(1).gt(0.05).float().mean()) > 0.1
    assert int(((other.sum(1) > 0) != (stage_by_stage(origins, dirs, bumpier).sum(1) > 0)).sum()) <= 1


def test_coarse_bound_is_a_lower_bound_that_skips_empty_space():
    box = torch.tensor([[-1.0] * 3, [1.0] * 3])

    def sphere(points):
        return points.norm(dim=1) - 0.5

    grid = fused_sphere_trace.bake_distance_grid(sphere, box, 17)
    points = torch.rand(4000, 3) * 2 - 1
    bound, exact = fused_sphere_trace.coarse_bound(grid, box, points), sphere(points)
    cell_diagonal = float(fused_sphere_trace.grid_cell(box, 17).norm())
    assert bool((bound <= exact + 1e-6).all())  # never past the surface
    assert bool((bound >= exact - cell_diagonal).all())  # and never more than a cell short of it


def test_twin_asks_the_network_less_than_the_stage_path(bumpy):
    from ngfx.render.stages import record_stages

    scene, origins, dirs, _ = bumpy
    with record_stages("cpu") as fused_records:
        traced(fused_sphere_trace, origins, dirs, scene)
    with record_stages("cpu") as stage_records:
        stage_by_stage(origins, dirs, scene)

    def queries(records):
        return sum(r.n_inputs for r in records if r.name == "nsdf.encoding")

    assert queries(fused_records) < 0.75 * queries(stage_records)
