"""NeRF on the synthetic scene: a tiny run beats a PSNR threshold, fused and unfused rendering agree."""

import pytest
import torch

from ngfx.render import stages
from ngfx.render.apps import nerf
from ngfx.render.ops.sh import spherical_harmonics
from ngfx.render.neural_field import fit


@pytest.fixture(scope="module")
def one_thread():
    # tiny tensors: one thread avoids OpenMP barrier costs on small (and shared) CI machines
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread, tmp_path_factory):
    import os

    os.environ.setdefault("NGFX_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.manual_seed(0)
    app = nerf.build_app("synthetic", "hashgrid", "tiny", device="cpu")
    before = app.evaluate()["psnr_db"]
    fit(app, steps=nerf.DEFAULT_STEPS["tiny"])
    return app, before


def test_tiny_nerf_beats_constant_colour(trained):
    app, before = trained
    after = app.evaluate()
    baseline = nerf.constant_colour_psnr(app)
    assert before < baseline + 3.0  # untrained: no better than a flat image
    assert after["psnr_db"] >= 20.0 and after["psnr_db"] > baseline + 8.0
    assert after["ssim"] > 0.8
    assert 0.0 < after["occupied_fraction"] < 0.5  # the occupancy grid pruned empty space


def test_fused_and_unfused_render_agree(trained):
    app, _ = trained
    with stages.record_stages() as records:
        fused = app.render(24, 16, 1, fused=True)
    unfused = app.render(24, 16, 1, fused=False)
    assert fused.shape == (16, 24, 3)
    torch.testing.assert_close(fused, unfused, atol=2e-3, rtol=0)
    names = {r.name for r in records}
    assert {"nerf.ray_gen", "nerf.march", "nerf.density_encoding", "nerf.density_mlp", "nerf.color_mlp",
            "nerf.composite"} <= names
    assert {r.category for r in records if r.name == "nerf.density_encoding"} == {"encoding"}


def test_render_rays_matches_frame_and_chunks(trained):
    app, _ = trained
    pose = app.eval_poses[0]
    frame = app.render(app.intrinsics.width, app.intrinsics.height, pose, fused=False)
    from ngfx.cameras import pixel_rays

    origins, dirs = pixel_rays(pose, app.intrinsics)
    rgb = app.render_rays(origins, dirs, fused=False)
    torch.testing.assert_close(rgb.reshape(frame.shape).clamp(0, 1), frame, atol=1e-4, rtol=0)
    assert app.train_poses.shape[1:] == (4, 4) and app.aabb.shape == (2, 3) and app.background.shape == (3,)
    assert app.eval_images.shape == (len(app.eval_poses), app.intrinsics.height, app.intrinsics.width, 3)
    assert 0 < app.near < app.far


def test_spherical_harmonics_are_orthonormal():
    torch.manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(200_000, 3), dim=1)
    basis = spherical_harmonics(dirs)
    gram = 4 * torch.pi * basis.t() @ basis / dirs.shape[0]  # Monte Carlo integral over the sphere
    torch.testing.assert_close(gram, torch.eye(16), atol=0.05, rtol=0)


# --- the training step's ops ----------------------------------------------------------------------------
AABB = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])


def _training_rays(n: int = 40):
    """Random rays from outside the box towards it, plus axis-parallel ones (one along a plane of cell faces)."""
    from ngfx.render.ops import raymarch

    eyes = torch.nn.functional.normalize(torch.randn(n, 3), dim=1) * 4.0
    dirs = torch.nn.functional.normalize(torch.randn(n, 3) * 0.3 - eyes, dim=1)
    face = -1.5 + 10 * 3.0 / 16  # a cell face of the 16^3 grid, exactly representable
    origins = torch.cat([eyes, torch.tensor([[-3.0, 0.1, 0.2], [-3.0, face, face], [0.2, -0.4, 3.0]])])
    dirs = torch.cat([dirs, torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])])
    t_near, t_far = raymarch.ray_aabb(origins, dirs, AABB)
    return origins, dirs, t_near, t_far, torch.rand(origins.shape[0])


def _ball(res: int) -> torch.Tensor:
    c = (torch.arange(res) + 0.5) / res * 2 - 1
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return ((x ** 2 + y ** 2 + z ** 2) < 0.4).flatten()


@pytest.mark.parametrize("kind", ["ball", "random", "empty"])
@pytest.mark.parametrize("max_samples", [None, 150, 5000])
def test_march_training_kernel_matches_twin(kind, max_samples):
    from ngfx.render.ops import raymarch, triton_raymarch

    res, dt = 16, 0.05
    occupancy = {"ball": _ball(res), "random": torch.rand(res ** 3) < 0.2,
                 "empty": torch.zeros(res ** 3, dtype=torch.bool)}[kind]
    rays = _training_rays()
    reference = raymarch.march_training(*rays[:4], occupancy, AABB, res, dt, 100, rays[4], max_samples)
    fused = triton_raymarch.march_training(*rays[:4], occupancy, AABB, res, dt, 100, rays[4], max_samples)
    for name in ("ray_indices", "deltas", "kept", "ray_ends"):
        torch.testing.assert_close(getattr(fused, name), getattr(reference, name), atol=0, rtol=0)
    torch.testing.assert_close(fused.t, reference.t, atol=1e-6, rtol=0)
    if kind != "empty":
        assert int(reference.n_needed) > 150  # the small budget dropped rays
        points = rays[0][reference.ray_indices] + reference.t[:, None] * rays[1][reference.ray_indices]
        taken = reference.deltas > 0
        assert bool(occupancy[raymarch.cell_index(points[taken], AABB, res)].all())


def test_march_training_slots_keep_whole_rays_in_order():
    from ngfx.render.ops import raymarch

    res, dt = 16, 0.05
    rays = _training_rays()
    every = raymarch.march_training(*rays[:4], _ball(res), AABB, res, dt, 100, rays[4])
    bounded = raymarch.march_training(*rays[:4], _ball(res), AABB, res, dt, 100, rays[4], max_samples=200)
    n_kept = int(bounded.kept.sum())
    assert 0 < n_kept < rays[0].shape[0] and bool(bounded.kept[:n_kept].all())  # kept rays: a prefix
    used = int(every.ray_ends[n_kept - 1])
    assert used <= 200 < int(every.ray_ends[n_kept])  # the next ray would not have fitted
    torch.testing.assert_close(bounded.ray_indices[:used], every.ray_indices[:used])
    torch.testing.assert_close(bounded.t[:used], every.t[:used])
    assert bool((bounded.deltas[used:] == 0).all()) and bool((bounded.ray_indices[used:] == rays[0].shape[0] - 1).all())
    assert int(bounded.n_needed) == every.ray_indices.numel() == int(every.n_needed)


def test_compact_training_packs_the_kept_samples_of_whole_rays():
    from ngfx.render.ops import raymarch

    res, dt = 16, 0.05
    rays = _training_rays()
    marched = raymarch.march_training(*rays[:4], _ball(res), AABB, res, dt, 100, rays[4], max_samples=600)
    keep = torch.rand(600) < 0.5
    compact = raymarch.compact_training(marched, keep, 120)
    chosen = keep & (marched.deltas > 0)
    expected_rays, expected_t = marched.ray_indices[chosen], marched.t[chosen]
    counts = torch.bincount(expected_rays, minlength=rays[0].shape[0])
    torch.testing.assert_close(compact.ray_ends, counts.cumsum(0))
    fits = marched.kept & (counts.cumsum(0) <= 120)
    torch.testing.assert_close(compact.kept, fits)
    assert 0 < int(fits.sum()) < int(marched.kept.sum())  # some rays fitted, some of the march's did not
    n = min(120, expected_rays.numel())
    torch.testing.assert_close(compact.ray_indices[:n], expected_rays[:n])
    torch.testing.assert_close(compact.t[:n], expected_t[:n])
    assert bool((compact.deltas[:n] == dt).all())


def test_occupancy_update_samples_occupied_cells_after_warmup():
    from ngfx.render.ops.occupancy import OccupancyGrid
    from ngfx.render.ops.raymarch import cell_index

    res = 8
    grid = OccupancyGrid(AABB, res, warmup_steps=4)
    occupied = torch.zeros(res ** 3, dtype=torch.bool)
    occupied[torch.tensor([5, 77, 300])] = True
    grid.mask.copy_(occupied)
    seen = []

    def density(points: torch.Tensor) -> torch.Tensor:
        seen.append(points)
        return torch.where(occupied[cell_index(points, AABB, res)], 100.0, 0.0)

    grid.update(10, density, 0.01)
    cells = cell_index(torch.cat(seen), AABB, res)
    assert cells.numel() == res ** 3 // 2
    in_occupied = occupied[cells].float().mean()
    assert 0.45 < float(in_occupied) < 0.6  # a quarter of the cells drawn among the 3 occupied, a quarter uniform
    assert bool(grid.mask[occupied].all()) and int(grid.mask.sum()) == 3


def test_training_step_is_staged_and_adapts_its_batch(trained):
    from ngfx.render.neural_field import optimisation_step

    app, _ = trained
    stats = app.batch_stats()
    assert stats["steps"] >= nerf.DEFAULT_STEPS["tiny"]
    assert 0 < stats["rays_kept_per_step"] <= stats["rays_per_step"]
    assert 0.5 * stats["sample_slots"] < stats["samples_per_step"] <= stats["sample_slots"]  # the batch filled up
    assert app.early_stop is None  # a CPU trains on every occupied sample: the density pass costs it steps
    optimizer = app.optimizer()
    with stages.record_stages() as records:
        optimisation_step(app, optimizer, 0)
    names = {r.name for r in records}
    assert {"nerf.train.occupancy", "nerf.train.rays", "nerf.train.march", "nerf.train.field",
            "nerf.train.composite", "nerf.train.backward", "nerf.train.optimizer"} <= names
    assert "nerf.train.density_pass" not in names


def test_density_pass_drops_samples_behind_opaque_ones(monkeypatch):
    from ngfx.render.neural_field import optimisation_step

    monkeypatch.setattr(nerf, "EARLY_STOP_DEVICES", ("cuda", "cpu"))  # the GPU's step, run by its twins
    torch.manual_seed(0)
    app = nerf.build_app("synthetic", "hashgrid", "tiny", device="cpu")
    assert app.early_stop == nerf.EARLY_STOP and app.max_march_slots == nerf.MARCH_SLOTS_PER_SAMPLE * app.target_samples
    fit(app, steps=120)
    stats = app.batch_stats()
    assert 0 < stats["rays_kept_per_step"] <= stats["rays_per_step"]
    assert app.target_samples <= stats["march_slots"] <= app.max_march_slots
    optimizer = app.optimizer()
    with stages.record_stages() as records:
        loss = optimisation_step(app, optimizer, 0)
    assert {"nerf.train.density_pass", "nerf.train.compact"} <= {r.name for r in records} and bool(loss.isfinite())


@pytest.mark.parametrize("cut", [False, True], ids=["all-slots", "last-rays-cut"])
def test_composite_packed_kernel_matches_twin_with_gradients(cut):
    from ngfx.render.ops import triton_volume, volume

    n_rays, n_slots = 37, 300
    counts = torch.randint(0, 15, (n_rays,))
    counts[[0, 5]] = 0  # rays without samples: the background
    ray_ends = counts.cumsum(0) + (torch.arange(n_rays) >= 30) * 40 * cut  # cut: the last rays end past the slots
    sigmas = (torch.rand(n_slots) * 5).requires_grad_()
    rgbs = torch.rand(n_slots, 3).requires_grad_()
    deltas = torch.rand(n_slots) * 0.3
    deltas[-20:] = 0.0
    background = torch.rand(n_rays, 3)
    grad_colour, grad_opacity = torch.randn(n_rays, 3), torch.randn(n_rays)
    results = []
    for composite_packed in (volume.composite_packed, triton_volume.composite_packed):
        colour, opacity = composite_packed(sigmas, rgbs, deltas, ray_ends, background)
        loss = (colour * grad_colour).sum() + (opacity * grad_opacity).sum()
        results.append((colour, opacity, *torch.autograd.grad(loss, (sigmas, rgbs))))
    for reference, fused in zip(*results):
        torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    colour, opacity, grad_sigmas, _ = results[0]
    torch.testing.assert_close(colour[0], background[0])  # no samples: the background, nothing opaque
    assert float(opacity.detach().max()) > 0.5 and float(grad_sigmas.abs().max()) > 0.01  # the checks had work
    assert bool((results[1][2][int(ray_ends[-1].clamp(max=n_slots)):] == 0).all())  # slots of no ray: no gradient


def test_transmittance_packed_kernel_matches_twin():
    from ngfx.render.ops import triton_volume, volume

    counts = torch.randint(0, 15, (37,))
    ray_ends = counts.cumsum(0)
    sigmas, deltas = torch.rand(400) * 5, torch.rand(400) * 0.3
    reference = volume.transmittance_packed(sigmas, deltas, ray_ends)
    torch.testing.assert_close(triton_volume.transmittance_packed(sigmas, deltas, ray_ends), reference)
    first = ray_ends - counts
    assert bool((reference[first[counts > 0]] == 1).all())  # nothing in front of a ray's first sample
    assert float(reference[: int(ray_ends[-1])].min()) < 0.01 and bool((reference[int(ray_ends[-1]):] == 1).all())


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("distorted", [False, True])
def test_training_rays_kernel_matches_twin(channels, distorted):
    from ngfx.cameras import Intrinsics, look_at
    from ngfx.render.ops import raymarch, triton_raymarch

    k = (Intrinsics(13, 7, 10.0, 11.0, 6.0, 3.5, k1=-0.1, k2=0.02, p1=0.001, p2=-0.002) if distorted
         else Intrinsics.from_fov_x(13, 7, 0.7))
    poses = torch.stack([look_at(torch.randn(3) * 4, torch.zeros(3)) for _ in range(3)])
    images = torch.randint(0, 256, (3, 7, 13, channels), dtype=torch.uint8)
    uniforms = torch.rand(50, 6)
    reference = raymarch.training_rays(poses, images, k, AABB, uniforms)
    fused = triton_raymarch.training_rays(poses, images, k, AABB, uniforms)
    for a, b in zip(reference, fused):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    origins, dirs, t_near, t_far, target, background = reference
    assert bool((t_near < t_far).any()) and len(set(origins[:, 0].tolist())) == 3  # rays of every camera hit the box
    if channels == 3:  # an RGB pixel is its own colour
        image = (uniforms[:, 0] * 3).long()
        y, x = (uniforms[:, 2] * 7).long(), (uniforms[:, 1] * 13).long()
        torch.testing.assert_close(target, images[image, y, x].float() / 255.0)
