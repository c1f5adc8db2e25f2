"""Fused NeRF "rest" kernels (ray generation, occupancy marching) equal their PyTorch twins under the interpreter."""

import math

import pytest
import torch

from ngfx.render import raymarch, triton_volume
from ngfx.render.cameras import Intrinsics, look_at

AABB = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
PINHOLE = Intrinsics.from_fov_x(13, 7, 0.7)
DISTORTED = Intrinsics(13, 7, 10.0, 11.0, 6.0, 3.5, k1=-0.1, k2=0.02, p1=0.001, p2=-0.002)


@pytest.mark.parametrize("k", [PINHOLE, DISTORTED], ids=["pinhole", "distorted"])
def test_ray_gen_matches_reference(k):
    c2w = look_at(torch.tensor([3.0, -2.0, 1.0]), torch.zeros(3))
    reference = raymarch.ray_gen(c2w, k, 2, 4, AABB)
    fused = triton_volume.ray_gen(c2w, k, 2, 4, AABB)
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
    s_fused, d_fused = triton_volume.march_segment(origins, dirs, active, t_fused, t_far, occupancy, AABB, res, dt,
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
    rays, t, deltas = raymarch.march_training(origins, dirs, t_near, t_far, occupancy, AABB, res, dt, 1000)
    assert set(rays.tolist()) == {12}  # only the central ray of the 5x5 image passes the centre cell
    assert rays.numel() == math.ceil(3.0 / res / dt) or rays.numel() == math.floor(3.0 / res / dt)
    torch.testing.assert_close(deltas, torch.full_like(deltas, dt))
