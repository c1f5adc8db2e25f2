"""Compositing and cameras against closed-form values."""

import math

import torch

from ngfx.cameras import Intrinsics, look_at, orbit_poses, pixel_rays, undistort
from ngfx.render.ops.volume import composite


def test_composite_matches_per_ray_loop():
    counts = [3, 0, 5, 1]
    ray_indices = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    s = len(ray_indices)
    sigmas, deltas, rgbs = torch.rand(s) * 5, torch.rand(s) * 0.3, torch.rand(s, 3)
    rgb, opacity = composite(sigmas, rgbs, deltas, ray_indices, len(counts), background=torch.tensor([1.0, 0.5, 0.0]))
    start = 0
    for i, c in enumerate(counts):
        T, acc, col = 1.0, 0.0, torch.zeros(3)
        for j in range(start, start + c):
            alpha = 1 - math.exp(-(sigmas[j] * deltas[j]).item())
            col += T * alpha * rgbs[j]
            acc += T * alpha
            T *= 1 - alpha
        col += (1 - acc) * torch.tensor([1.0, 0.5, 0.0])
        torch.testing.assert_close(rgb[i], col, atol=1e-5, rtol=1e-5)
        assert abs(opacity[i].item() - acc) < 1e-5
        start += c


def test_central_ray_points_along_minus_z_of_camera():
    k = Intrinsics.from_fov_x(5, 5, math.radians(60))
    c2w = look_at(torch.tensor([0.0, -4.0, 0.0]), torch.zeros(3))
    o, d = pixel_rays(c2w, k)
    centre = d[2 * 5 + 2]
    torch.testing.assert_close(centre, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(o[0], torch.tensor([0.0, -4.0, 0.0]))
    # image top row looks up (+z here), left column looks left
    assert d[2, 2] > 0 and d[2 * 5, 0] < 0


def test_undistort_inverts_distortion():
    k = Intrinsics(100, 100, 80, 80, 50, 50, k1=-0.1, k2=0.02, p1=0.001, p2=-0.002)
    u = torch.rand(50, 2) - 0.5
    x, y = u[:, 0], u[:, 1]
    r2 = x * x + y * y
    radial = 1 + k.k1 * r2 + k.k2 * r2 * r2
    d = torch.stack([x * radial + 2 * k.p1 * x * y + k.p2 * (r2 + 2 * x * x),
                     y * radial + k.p1 * (r2 + 2 * y * y) + 2 * k.p2 * x * y], dim=1)
    torch.testing.assert_close(undistort(d, k), u, atol=1e-5, rtol=0)


def test_orbit_poses_keep_radius_and_look_at_target():
    poses = orbit_poses(8, radius=3.0, elevation_deg=20)
    assert poses.shape == (8, 4, 4)
    torch.testing.assert_close(poses[:, :3, 3].norm(dim=1), torch.full((8,), 3.0))
    view = -poses[:, :3, 2]  # camera looks down -z
    torch.testing.assert_close(view, -poses[:, :3, 3] / 3.0, atol=1e-6, rtol=0)
