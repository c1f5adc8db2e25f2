"""Fused NeRF "rest" kernels (ray generation, occupancy marching) equal their PyTorch twins under the interpreter."""

import math

import pytest
import torch

from ngfx.render.ops import raymarch
from ngfx.render.ops import triton_raymarch
from ngfx.cameras import Intrinsics, look_at

AABB = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
PINHOLE = Intrinsics.from_fov_x(13, 7, 0.7)
DISTORTED = Intrinsics(13, 7, 10.0, 11.0, 6.0, 3.5, k1=-0.1, k2=0.02, p1=0.001, p2=-0.002)


@pytest.mark.parametrize("k", [PINHOLE, DISTORTED], ids=["pinhole", "distorted"])
def test_ray_gen_matches_reference(k):
    c2w = look_at(torch.tensor([3.0, -2.0, 1.0]), torch.zeros(3))
    reference = raymarch.ray_gen(c2w, k, 2, 4, AABB)
    fused = triton_raymarch.ray_gen(c2w, k, 2, 4, AABB)
    for a, b in zip(reference, fused):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    t_near, t_far = reference[2:]
    assert bool((t_near < t_far).any())  # rays cross the box: the intersection was exercised


@pytest.mark.parametrize("k_samples,max_scan,occupied", [(4, 32, 0.3), (8, 64, 0.1), (16, 16, 0.9)])
def test_march_segment_matches_reference(k_samples, max_scan, occupied):
    res, dt = 16, 0.05
    c2w = look_at(torch.tensor([3.0, -2.0, 1.0]), torch.zeros(3))
    origins, dirs, t_near, t_far = raymarch.ray_gen(c2w, PINHOLE, 0, 7, AABB)
    occupancy = torch.rand(res ** 3) < occupied
    active = torch.arange(0, origins.shape[0], 2)
    t_ref, t_fused = t_near.clone(), t_near.clone()
    s_ref, d_ref = raymarch.march_segment(origins, dirs, active, t_ref, t_far, occupancy, AABB, res, dt, k_samples, max_scan)
    s_fused, d_fused = triton_raymarch.march_segment(origins, dirs, active, t_fused, t_far, occupancy, AABB, res, dt,
                                                   k_samples, max_scan)
    torch.testing.assert_close(d_fused, d_ref, atol=0, rtol=0)  # the same samples were picked
    torch.testing.assert_close(s_fused, s_ref, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(t_fused, t_ref, atol=1e-5, rtol=1e-6)
    assert 0 < float((d_ref > 0).float().mean()) < 1  # both full and partly empty segments occurred
    # every picked sample lies in an occupied cell, in order along its ray
    picked = d_ref > 0
    rays = active[:, None].expand_as(s_ref)[picked]
    points = origins[rays] + s_ref[picked][:, None] * dirs[rays]
    assert bool(occupancy[raymarch.cell_index(points, AABB, res)].all())
    assert bool((s_ref[:, 1:][picked[:, 1:]] > s_ref[:, :-1][picked[:, 1:]]).all())


def test_march_training_finds_only_occupied_samples():
    res, dt = 8, 0.1
    c2w = look_at(torch.tensor([0.0, -4.0, 0.0]), torch.zeros(3))
    origins, dirs, t_near, t_far = raymarch.ray_gen(c2w, Intrinsics.from_fov_x(5, 5, math.radians(40)), 0, 5, AABB)
    occupancy = torch.zeros(res ** 3, dtype=torch.bool)
    occupancy[raymarch.cell_index(torch.zeros(1, 3), AABB, res)] = True  # the one cell at the centre
    rays, t, deltas = raymarch.march_training(origins, dirs, t_near, t_far, occupancy, AABB, res, dt, 1000)[:3]
    assert set(rays.tolist()) == {12}  # only the central ray of the 5x5 image passes the centre cell
    assert rays.numel() == math.ceil(3.0 / res / dt) or rays.numel() == math.floor(3.0 / res / dt)
    torch.testing.assert_close(deltas, torch.full_like(deltas, dt))


def _rays_for_skipping():
    """Camera rays plus axis-parallel rays, one of them running exactly along a plane of cell faces."""
    c2w = look_at(torch.tensor([3.0, -2.0, 1.0]), torch.zeros(3))
    origins, dirs, _, _ = raymarch.ray_gen(c2w, PINHOLE, 0, 7, AABB)
    face = -1.5 + 10 * 3.0 / 16  # a cell face of the 16^3 grid, exactly representable
    extra_o = torch.tensor([[-3.0, 0.1, 0.2], [0.3, 4.0, -0.7], [-3.0, face, face], [0.2, -0.4, 3.0]])
    extra_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    origins, dirs = torch.cat([origins, extra_o]), torch.cat([dirs, extra_d])
    t_near, t_far = raymarch.ray_aabb(origins, dirs, AABB)
    return origins, dirs, t_near, t_far


def _occupancy(kind: str, res: int) -> torch.Tensor:
    if kind == "empty":
        return torch.zeros(res ** 3, dtype=torch.bool)
    if kind == "random":
        return torch.rand(res ** 3) < 0.1
    c = (torch.arange(res) + 0.5) / res * 2 - 1  # a ball of occupied cells, like an object in a scene
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return ((x ** 2 + y ** 2 + z ** 2) < 0.4).flatten()


def _march_to_completion(origins, dirs, t_near, t_far, occupancy, res, dt, k, max_scan):
    """Call both twins until every ray has left the box; check each call agrees; -> (rays, t) of all samples, calls."""
    t_ref, t_fused = t_near.clone(), t_near.clone()
    active = torch.nonzero(t_ref < t_far)[:, 0]
    rays, ts, calls = [], [], 0
    while active.numel():
        s_ref, d_ref = raymarch.march_segment(origins, dirs, active, t_ref, t_far, occupancy, AABB, res, dt, k,
                                              max_scan)
        s_fused, d_fused = triton_raymarch.march_segment(origins, dirs, active, t_fused, t_far, occupancy, AABB, res,
                                                       dt, k, max_scan)
        torch.testing.assert_close(d_fused, d_ref, atol=0, rtol=0)
        torch.testing.assert_close(s_fused, s_ref, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(t_fused, t_ref, atol=1e-5, rtol=1e-6)
        picked = d_ref > 0
        rays.append(active[:, None].expand_as(s_ref)[picked])
        ts.append(s_ref[picked])
        active = active[t_ref[active] < t_far[active]]
        calls += 1
        assert calls < 1000
    return torch.cat(rays), torch.cat(ts), calls


@pytest.mark.parametrize("kind", ["empty", "random", "ball"])
@pytest.mark.parametrize("k_samples,max_scan", [(4, 8), (16, 32)])
def test_skipping_keeps_every_sample_of_fixed_step_marching(kind, k_samples, max_scan):
    res, dt = 16, 0.05  # 3.75 lattice steps per cell
    origins, dirs, t_near, t_far = _rays_for_skipping()
    occupancy = _occupancy(kind, res)
    rays, t, calls = _march_to_completion(origins, dirs, t_near, t_far, occupancy, res, dt, k_samples, max_scan)
    # the same samples as marching every fixed step (march_training visits all lattice points at once)
    ref_rays, ref_t, _ = raymarch.march_training(origins, dirs, t_near, t_far, occupancy, AABB, res, dt, 10 ** 4)[:3]
    lattice = lambda r, s: r * 10 ** 6 + ((s - t_near[r]) / dt - 0.5).round().long()  # noqa: E731
    order, ref_order = lattice(rays, t).argsort(), lattice(ref_rays, ref_t).argsort()
    torch.testing.assert_close(lattice(rays, t)[order], lattice(ref_rays, ref_t)[ref_order], atol=0, rtol=0)
    torch.testing.assert_close(t[order], ref_t[ref_order], atol=1e-5, rtol=1e-6)
    if kind != "empty":
        assert ref_rays.numel() > 50  # the comparison had samples to compare


def test_empty_space_costs_one_iteration_per_cell():
    res, dt, max_scan = 16, 0.01, 8  # 18.75 lattice steps per cell
    origins, dirs, t_near, t_far = _rays_for_skipping()
    _, _, calls = _march_to_completion(origins, dirs, t_near, t_far, _occupancy("empty", res), res, dt, 4, max_scan)
    cells_crossed = 3 * res  # at most, a ray crossing the box along a diagonal
    fixed_step_calls = math.ceil(float(((t_far - t_near) / dt).ceil().max()) / max_scan)
    assert calls <= math.ceil(cells_crossed / max_scan) + 1 < fixed_step_calls / 5


def test_skipping_stops_short_of_occupied_cells():
    """One occupied cell ahead of a ray: the jump from the empty cell before it lands no later than its first point."""
    res, dt = 16, 0.05
    cell = 3.0 / res
    occupancy = torch.zeros(res ** 3, dtype=torch.bool)
    occupancy[raymarch.cell_index(torch.tensor([[0.1, 0.1, 0.1]]), AABB, res)] = True
    # start t so lattice points fall just before and just after the face x = 0 (the cell's lower face)
    origins, dirs = torch.tensor([[-1.5, 0.1, 0.1]]), torch.tensor([[1.0, 0.0, 0.0]])
    for offset in (-1e-4, 0.0, 1e-4, 0.5 * dt):
        t_start = torch.tensor([1.5 - 3 * dt - 0.5 * dt + offset])
        for march in (raymarch.march_segment, triton_raymarch.march_segment):
            t = t_start.clone()
            s, d = march(origins, dirs, torch.tensor([0]), t, torch.tensor([4.5]), occupancy, AABB, res, dt, 8, 64)
            x = origins[0, 0] + s[0][d[0] > 0] * dirs[0, 0]
            expected = [p for p in (float(t_start) + (j + 0.5) * dt for j in range(100))
                        if 0.0 <= -1.5 + p < cell]
            assert x.numel() == len(expected) > 0
            torch.testing.assert_close(s[0][d[0] > 0], torch.tensor(expected), atol=1e-5, rtol=0)


def test_colour_input_matches_reference():
    from ngfx.render.ops import triton_sh
    from ngfx.render.ops.sh import colour_input

    torch.manual_seed(0)
    n = 300  # not a multiple of the block: the row mask is exercised
    h, dirs = torch.randn(n, 16), torch.nn.functional.normalize(torch.randn(n, 3), dim=1)
    torch.testing.assert_close(triton_sh.colour_input(h, dirs), colour_input(h, dirs),
                               atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="power of two"):
        triton_sh.colour_input(torch.randn(4, 12), dirs[:4])


def test_gather_samples_matches_reference():
    torch.manual_seed(0)
    n_rays, k = 40, 4
    origins, dirs = torch.randn(n_rays, 3), torch.nn.functional.normalize(torch.randn(n_rays, 3), dim=1)
    active = torch.randperm(n_rays)[:25]
    t_samples = torch.rand(25, k)
    slots = torch.nonzero(torch.rand(25 * k) > 0.4)[:, 0]
    reference = raymarch.gather_samples(origins, dirs, active, t_samples, slots, k)
    fused = triton_raymarch.gather_samples(origins, dirs, active, t_samples, slots, k)
    for a, b in zip(reference, fused):
        torch.testing.assert_close(b, a)
    ray = active[slots[0] // k]
    torch.testing.assert_close(reference[0][0], origins[ray] + t_samples.flatten()[slots[0]] * dirs[ray])
