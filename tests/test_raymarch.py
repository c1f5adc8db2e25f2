"""Fused NeRF "rest" kernels (ray generation, occupancy marching; a training batch's rays, packed samples and
compositing, a segment's compositing) equal their PyTorch twins under the interpreter; the occupancy grid's refresh."""

import math
import os

import pytest
import torch
import triton
import triton.language as tl

from ngfx.render.ops import raymarch, triton_raymarch, triton_volume, volume
from ngfx.render.ops.triton_sh import sh_basis
from ngfx.render.ops.occupancy import OccupancyGrid
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


def _as_slots(segment, origins, dirs, active, k):
    """A packed segment back in march_segment's form: (t_samples, deltas > 0) [A, k], each ray's samples in order
    from its first slot, wherever the segment put them."""
    n_active = active.numel()
    ray_indices = torch.repeat_interleave(torch.arange(n_active), segment.counts)
    rank = torch.arange(ray_indices.numel()) - (segment.counts.cumsum(0) - segment.counts)[ray_indices]
    order = segment.starts[ray_indices] + rank
    ray = active[ray_indices]
    torch.testing.assert_close(segment.dirs[order], dirs[ray])
    t_samples, taken = torch.zeros(n_active, k), torch.zeros(n_active, k, dtype=torch.bool)
    world = AABB[0] + segment.points[order] * (AABB[1] - AABB[0])
    t_samples[ray_indices, rank] = ((world - origins[ray]) * dirs[ray]).sum(dim=1)
    taken[ray_indices, rank] = True
    return t_samples, taken


@pytest.mark.parametrize("k_samples,max_scan,occupied", [(4, 32, 0.3), (8, 64, 0.1), (16, 16, 0.9), (12, 40, 0.2)])
def test_march_packed_matches_reference(k_samples, max_scan, occupied):
    """The fused march-and-pack kernel and its twin take the same samples of each ray (march_segment's), advance
    the rays alike and list the same rays as going on; the twin packs ray after ray."""
    res, dt = 16, 0.05
    c2w = look_at(torch.tensor([3.0, -2.0, 1.0]), torch.zeros(3))
    origins, dirs, t_near, t_far = raymarch.ray_gen(c2w, PINHOLE, 0, 7, AABB)
    t_far[::3] = torch.minimum(t_far[::3], t_near[::3] + 2 * dt)  # rays that end within the segment
    occupancy = torch.rand(res ** 3) < occupied
    active = torch.arange(0, origins.shape[0], 2)
    t_ref, t_twin, t_fused = t_near.clone(), t_near.clone(), t_near.clone()
    s_ref, d_ref = raymarch.march_segment(origins, dirs, active, t_ref, t_far, occupancy, AABB, res, dt, k_samples,
                                          max_scan)
    args = (origins, dirs, active)
    twin = raymarch.march_packed(*args, t_twin, t_far, occupancy, AABB, res, dt, k_samples, max_scan)
    fused = triton_raymarch.march_packed(*args, t_fused, t_far, occupancy, AABB, res, dt, k_samples, max_scan)
    picked = d_ref > 0
    for segment in (twin, fused):
        assert segment.points.shape[0] == segment.dirs.shape[0] == int(segment.counts.sum())  # no slot over-counted
        s_packed, taken = _as_slots(segment, origins, dirs, active, k_samples)
        torch.testing.assert_close(taken, picked, atol=0, rtol=0)  # the same samples were picked
        torch.testing.assert_close(s_packed[picked], s_ref[picked], atol=1e-5, rtol=1e-6)
        assert sorted(segment.next_rays.tolist()) == active[t_ref[active] < t_far[active]].tolist()
    torch.testing.assert_close(twin.starts, picked.sum(1).cumsum(0) - picked.sum(1))  # ray after ray
    torch.testing.assert_close(t_twin, t_ref, atol=0, rtol=0)
    torch.testing.assert_close(t_fused, t_ref, atol=1e-5, rtol=1e-6)
    assert 0 < float(picked.float().mean()) < 1  # both full and partly empty segments occurred
    assert 0 < twin.next_rays.numel() < active.numel()  # some rays go on, some are done
    # every picked sample lies in an occupied cell, in order along its ray
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


def _march_to_completion(origins, dirs, t_near, t_far, occupancy, res, dt, k, max_scan, sub=1, macro=None):
    """Call both twins until every ray has left the box; check each call agrees; -> (rays, t) of all samples, calls."""
    t_ref, t_fused = t_near.clone(), t_near.clone()
    active = torch.nonzero(t_ref < t_far)[:, 0]
    rays, ts, calls = [], [], 0
    while active.numel():
        s_ref, d_ref = raymarch.march_segment(origins, dirs, active, t_ref, t_far, occupancy, AABB, res, dt, k,
                                              max_scan, sub, macro)
        fused = triton_raymarch.march_packed(origins, dirs, active, t_fused, t_far, occupancy, AABB, res, dt, k,
                                             max_scan, sub, macro)
        s_fused, taken = _as_slots(fused, origins, dirs, active, k)
        picked = d_ref > 0
        torch.testing.assert_close(taken, picked, atol=0, rtol=0)
        torch.testing.assert_close(s_fused[picked], s_ref[picked], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(t_fused, t_ref, atol=1e-5, rtol=1e-6)
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


def _two_level(res: int, sub: int, fine_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A ball of coarse cells, each fine cell of it occupied at random -> (int64 bits [res^3], the same fine
    cells as a dense mask [(res sub)^3])."""
    from ngfx.render.ops.occupancy import pack_fine_bits, sub_cell_offsets

    gen = torch.Generator().manual_seed(seed)
    coarse = _occupancy("ball", res)
    fine_bits = torch.rand(res ** 3, sub ** 3, generator=gen) < fine_fraction
    fine_bits &= coarse[:, None]
    bits = pack_fine_bits(fine_bits)
    cells = torch.arange(res ** 3)
    fine = (torch.stack([cells % res, (cells // res) % res, cells // res ** 2], 1)[:, None, :] * sub
            + sub_cell_offsets(sub)[None])  # [res^3, sub^3, 3]
    f = res * sub
    dense = torch.zeros(f ** 3, dtype=torch.bool)
    dense[(fine[..., 0] + fine[..., 1] * f + fine[..., 2] * f * f)[fine_bits]] = True
    return bits, dense


@pytest.mark.parametrize("sub", [2, 4])
@pytest.mark.parametrize("k_samples,max_scan", [(4, 8), (16, 32)])
def test_two_level_grid_keeps_exactly_the_fine_cells_samples(sub, k_samples, max_scan):
    """Marching the two-level grid (kernel and twin agree at every call) takes every lattice point in an
    occupied fine cell and no other: the samples of fixed-step marching through the fine grid as a dense mask."""
    # ~17.6 lattice steps per coarse cell: fine cells are both jumped and sampled; no lattice point falls exactly on a
    # cell face, where the marcher's running t and march_training's direct one may round to different cells
    res, dt = 8, 0.0213
    origins, dirs, t_near, t_far = _rays_for_skipping()
    bits, dense = _two_level(res, sub, 0.3)
    rays, t, _ = _march_to_completion(origins, dirs, t_near, t_far, bits, res, dt, k_samples, max_scan, sub)
    ref_rays, ref_t, _ = raymarch.march_training(origins, dirs, t_near, t_far, dense, AABB, res * sub, dt, 10 ** 4)[:3]
    coarse_rays = raymarch.march_training(origins, dirs, t_near, t_far, bits != 0, AABB, res, dt, 10 ** 4)[0]
    assert 50 < ref_rays.numel() < 0.6 * coarse_rays.numel()  # the fine level dropped most of the coarse samples
    lattice = lambda r, s: r * 10 ** 6 + ((s - t_near[r]) / dt - 0.5).round().long()  # noqa: E731
    torch.testing.assert_close(lattice(rays, t).sort().values, lattice(ref_rays, ref_t).sort().values, atol=0, rtol=0)


def _sparse(res: int, sub: int) -> torch.Tensor:
    """Random cells of a ball in the middle of the box, the rest empty: a mask (``sub`` 1) or two-level bits."""
    if sub > 1:
        return _two_level(res, sub, 0.3)[0]
    return _occupancy("ball", res) & (torch.rand(res ** 3) < 0.5)


def test_macro_occupancy_marks_blocks_holding_an_occupied_cell():
    from ngfx.render.ops.occupancy import macro_occupancy

    res, factor = 8, 2
    grid = torch.zeros(res ** 3, dtype=torch.int64)
    grid[raymarch.cell_index(torch.tensor([[-1.4, -1.4, 0.1], [1.4, 0.5, -0.6]]), AABB, res)] = 1 << 40  # a high bit
    macro = macro_occupancy(grid, res, factor)
    m = res // factor
    expected = torch.zeros(m ** 3, dtype=torch.bool)
    expected[raymarch.cell_index(torch.tensor([[-1.4, -1.4, 0.1], [1.4, 0.5, -0.6]]), AABB, m)] = True
    torch.testing.assert_close(macro, expected, atol=0, rtol=0)
    torch.testing.assert_close(macro_occupancy(grid != 0, res, factor), expected, atol=0, rtol=0)  # a mask alike
    for factor in (1, 3):
        with pytest.raises(ValueError, match="factor"):
            macro_occupancy(grid, res, factor)


@pytest.mark.parametrize("sub,factor", [(1, 2), (1, 4), (2, 4), (4, 2)])
def test_macro_level_keeps_every_sample_in_fewer_iterations(sub, factor):
    """With a macro level, the kernel and its twin agree at every call and take exactly the samples of the march
    without it, in fewer calls when the scan budget bounds a call (a skip that passed an occupied point, or that did
    not skip, fails)."""
    from ngfx.render.ops.occupancy import macro_occupancy

    res, dt, k, max_scan = 16, 0.0213, 16, 4  # ~9 lattice steps per coarse cell
    origins, dirs, t_near, t_far = _rays_for_skipping()
    grid = _sparse(res, sub)
    macro = macro_occupancy(grid, res, factor)
    assert 0 < float(macro.float().mean()) < 0.8  # rays cross empty macro cells and reach occupied ones
    rays, t, calls = _march_to_completion(origins, dirs, t_near, t_far, grid, res, dt, k, max_scan, sub, macro)
    plain_rays, plain_t, plain_calls = _march_to_completion(origins, dirs, t_near, t_far, grid, res, dt, k, max_scan,
                                                            sub)
    assert plain_rays.numel() > 50
    lattice = lambda r, s: r * 10 ** 6 + ((s - t_near[r]) / dt - 0.5).round().long()  # noqa: E731
    order, plain_order = lattice(rays, t).argsort(), lattice(plain_rays, plain_t).argsort()
    torch.testing.assert_close(lattice(rays, t)[order], lattice(plain_rays, plain_t)[plain_order], atol=0, rtol=0)
    torch.testing.assert_close(t[order], plain_t[plain_order], atol=1e-5, rtol=1e-6)
    assert calls < plain_calls


@pytest.mark.parametrize("fused", [False, True])
def test_macro_level_takes_more_samples_within_the_scan_budget(fused):
    """One call with a small scan budget: rays crossing the empty space around a sparse ball reach it and take
    samples with the macro level, few or none without (the kernel and its twin alike)."""
    from ngfx.render.ops.occupancy import macro_occupancy

    res, dt, k, max_scan = 16, 0.01, 8, 6
    c2w = look_at(torch.tensor([3.0, -2.0, 1.0]), torch.zeros(3))
    origins, dirs, t_near, t_far = raymarch.ray_gen(c2w, PINHOLE, 0, 7, AABB)
    active = torch.nonzero(t_near < t_far)[:, 0]
    grid = _sparse(res, 1)
    march = triton_raymarch.march_packed if fused else raymarch.march_packed
    samples = {}
    for factor in (0, 4):
        macro = macro_occupancy(grid, res, factor) if factor else None
        segment = march(origins, dirs, active, t_near.clone(), t_far, grid, AABB, res, dt, k, max_scan, 1, macro)
        samples[factor] = int(segment.counts.sum())
    assert samples[4] > 2 * samples[0] + 20


def test_refine_occupancy_keeps_the_fine_cells_near_density():
    from ngfx.render.ops.occupancy import dilate, refine_occupancy

    res, sub, dt = 8, 4, 0.01
    radius = 0.6
    ball = lambda p: torch.where(p.norm(dim=1) < radius, 50.0, 0.0)  # noqa: E731 -- a sharp-edged dense ball
    coarse = dilate(_occupancy("ball", res), res)
    bits = refine_occupancy(ball, coarse, AABB, res, sub, dt, n_points=4, seed=1)
    torch.testing.assert_close(bits, refine_occupancy(ball, coarse, AABB, res, sub, dt, n_points=4, seed=1))
    assert not bool((bits[~coarse] != 0).any())  # never outside the coarse mask
    f = res * sub
    centres = (torch.stack(torch.meshgrid(*[torch.arange(f)] * 3, indexing="ij")[::-1], -1).reshape(-1, 3) + 0.5)
    centres = AABB[0] + centres / f * 3.0  # fine cell centres, x-fastest
    coarse_of = raymarch.cell_index(centres, AABB, res)
    within = centres - (AABB[0] + (torch.stack([coarse_of % res, (coarse_of // res) % res, coarse_of // res ** 2], 1)
                                   .float() + 0.5 / sub) * 3.0 / res)  # offset from the coarse cell's first fine cell
    bit = (within / (3.0 / f)).round().long()
    occupied = ((bits[coarse_of] >> (bit[:, 0] + bit[:, 1] * sub + bit[:, 2] * sub * sub)) & 1) != 0
    distance = centres.norm(dim=1)
    fine_cell = 3.0 / f
    assert bool(occupied[distance < radius - fine_cell].all())  # inside the ball: all kept
    assert not bool(occupied[distance > radius + 2.5 * fine_cell].any())  # beyond the one-cell growth: all dropped
    assert float(occupied.float().mean()) < 0.5 * float(coarse[coarse_of].float().mean())
    with pytest.raises(ValueError, match="sub"):
        refine_occupancy(ball, coarse, AABB, res, 3, dt)


def test_render_loop_gives_the_same_frame_however_it_splits_the_work(monkeypatch):
    """render_segments with growing segments, a field queried 7 samples at a time, lanes of rays taking turns and
    rays dropped a pass late composites the same as one pass of every sample (march_training + volume.composite),
    with no termination; with termination the fused kernels stop where the twins do."""
    res, dt = 16, 0.05
    origins, dirs, t_near, t_far = _rays_for_skipping()
    occupancy = _occupancy("ball", res)

    def field(unit, d):  # a ball, on the render loop's samples in the box's unit cube
        p = AABB[0] + unit * (AABB[1] - AABB[0])
        return (p.norm(dim=1) < 0.6).float() * 4.0, (p * 0.3 + 0.5).clamp(0, 1)

    background = torch.tensor([0.2, 0.3, 0.4])
    rays, t, deltas = raymarch.march_training(origins, dirs, t_near, t_far, occupancy, AABB, res, dt, 10 ** 4)[:3]
    sigma, rgb = field(raymarch.unit_points(origins[rays] + t[:, None] * dirs[rays], AABB), dirs[rays])
    expected, _ = volume.composite(sigma, rgb, deltas, rays, len(origins), background)
    frames = []
    for growth, chunk, fused, lanes in ((1, 2 ** 24, False, 1), (16, 7, False, 3), (16, 7, True, 2)):
        monkeypatch.setattr(raymarch, "SEGMENT_GROWTH", growth)
        monkeypatch.setattr(raymarch, "QUERY_SAMPLES", chunk)
        frames.append(raymarch.render_segments(origins, dirs, t_near, t_far, occupancy, AABB, res, dt, field,
                                               background, app="test", fused=fused, max_scan=8,
                                               min_transmittance=0.0, segment=4, lanes=lanes))
    for frame in frames:
        torch.testing.assert_close(frame, expected, atol=1e-5, rtol=1e-5)
    assert float((expected - background).abs().max()) > 0.1  # the ball was in view
    # with termination, a ray that became opaque stops: fewer samples, the same picture within the light left
    stopped = {}
    for fused, lanes in ((False, 1), (True, 2)):
        counted = []
        stopped[fused] = raymarch.render_segments(
            origins, dirs, t_near, t_far, occupancy, AABB, res, dt, lambda p, d: counted.append(len(p)) or field(p, d),
            background, app="test", fused=fused, max_scan=8, min_transmittance=1e-2, segment=4, lanes=lanes)
        assert sum(counted) < len(rays)
        torch.testing.assert_close(stopped[fused], expected, atol=2e-2, rtol=0)
    torch.testing.assert_close(stopped[True], stopped[False], atol=1e-5, rtol=1e-5)


def test_render_loop_gives_the_same_frame_with_a_macro_level():
    """render_segments with a macro level composites the same frame as without, fused and not, rays stopping early
    where they did."""
    from ngfx.render.ops.occupancy import macro_occupancy

    res, dt = 16, 0.05
    origins, dirs, t_near, t_far = _rays_for_skipping()
    occupancy = _sparse(res, 1)

    def field(unit, d):
        p = AABB[0] + unit * (AABB[1] - AABB[0])
        return (p.norm(dim=1) < 0.6).float() * 4.0 + 0.5, (p * 0.3 + 0.5).clamp(0, 1)

    background = torch.tensor([0.2, 0.3, 0.4])
    frames = [raymarch.render_segments(origins, dirs, t_near, t_far, occupancy, AABB, res, dt, field, background,
                                       app="test", fused=fused, max_scan=8, min_transmittance=1e-2, segment=4,
                                       macro=macro)
              for fused in (False, True) for macro in (None, macro_occupancy(occupancy, res, 4))]
    for frame in frames[1:]:
        torch.testing.assert_close(frame, frames[0], atol=1e-5, rtol=1e-5)
    assert float((frames[0] - background).abs().max()) > 0.1


def test_nerf_render_is_the_same_with_the_macro_level(monkeypatch, tmp_path):
    """A tiny NeRF scene (an untrained field in a ball of occupied cells) renders the same image with
    ``raymarch.MACRO`` on and off, through the Triton kernels and the PyTorch ops; the app builds the macro level
    from its render grid, once, and drops it with the grid."""
    from ngfx.render.apps import nerf

    monkeypatch.setenv("NGFX_CACHE", os.environ.get("NGFX_CACHE", str(tmp_path)))  # the synthetic scene's images
    app = nerf.build_app("synthetic", "hashgrid", "tiny", device="cpu")
    res = app.occupancy.resolution
    app.occupancy.mask.copy_(_occupancy("ball", res))
    app.refresh_render_grid()
    monkeypatch.setattr(raymarch, "MACRO", 0)
    assert app.macro_grid() is None  # MACRO 0: off
    frames = {}
    for factor in (0, 4):
        monkeypatch.setattr(raymarch, "MACRO", factor)
        frames[factor] = [app.render(12, 8, 1, fused=fused) for fused in (False, True)]
    macro = app.macro_grid()
    assert macro is app.macro_grid() and macro.numel() == (res // 4) ** 3 and 0 < float(macro.float().mean()) < 0.5
    for off, on in zip(frames[0], frames[4]):
        torch.testing.assert_close(on, off, atol=1e-5, rtol=0)
    assert float(frames[0][0].std()) > 0.05  # the field showed in the frame
    app.refresh_render_grid()
    assert app.macro_grid() is not macro


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
        for fused in (False, True):
            t, active = t_start.clone(), torch.tensor([0])
            args = (origins, dirs, active, t, torch.tensor([4.5]), occupancy, AABB, res, dt, 8, 64)
            if fused:
                s, d = _as_slots(triton_raymarch.march_packed(*args), origins, dirs, active, 8)
            else:
                s, d = raymarch.march_segment(*args)
            x = origins[0, 0] + s[0][d[0] > 0] * dirs[0, 0]
            expected = [p for p in (float(t_start) + (j + 0.5) * dt for j in range(100))
                        if 0.0 <= -1.5 + p < cell]
            assert x.numel() == len(expected) > 0
            torch.testing.assert_close(s[0][d[0] > 0], torch.tensor(expected), atol=1e-5, rtol=0)


@triton.jit
def _sh_tile_kernel(dirs_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """The SH tile of each row's direction, stored as [n, 16] (a test harness for ``triton_sh.sh_basis``)."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < n
    x = tl.load(dirs_ptr + rows * 3, mask=mask, other=0.0)
    y = tl.load(dirs_ptr + rows * 3 + 1, mask=mask, other=0.0)
    z = tl.load(dirs_ptr + rows * 3 + 2, mask=mask, other=0.0)
    c = tl.arange(0, 16)[None, :]
    tl.store(out_ptr + rows[:, None] * 16 + c, sh_basis(x, y, z), mask=mask[:, None])


def test_sh_basis_tile_matches_reference():
    from ngfx.render.ops.sh import spherical_harmonics

    n, block = 300, 128  # not a multiple of the block: the row mask is exercised
    dirs = torch.nn.functional.normalize(torch.randn(n, 3), dim=1)
    out = torch.full((n, 16), float("nan"))
    _sh_tile_kernel[(triton.cdiv(n, block),)](dirs, out, n, BLOCK=block)
    # every column in tiny-cuda-nn's order: a swapped pair of columns (the join's layout) fails
    torch.testing.assert_close(out, spherical_harmonics(dirs), atol=1e-6, rtol=1e-5)


def _training_rays(n: int = 40):
    """Random rays from outside the box towards it, plus axis-parallel ones (one along a plane of cell faces)."""
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
    res = 8
    grid = OccupancyGrid(AABB, res, warmup_steps=4)
    occupied = torch.zeros(res ** 3, dtype=torch.bool)
    occupied[torch.tensor([5, 77, 300])] = True
    grid.mask.copy_(occupied)
    seen = []

    def density(points: torch.Tensor) -> torch.Tensor:
        seen.append(points)
        return torch.where(occupied[raymarch.cell_index(points, AABB, res)], 100.0, 0.0)

    grid.update(10, density, 0.01)
    cells = raymarch.cell_index(torch.cat(seen), AABB, res)
    assert cells.numel() == res ** 3 // 2
    in_occupied = occupied[cells].float().mean()
    assert 0.45 < float(in_occupied) < 0.6  # a quarter of the cells drawn among the 3 occupied, a quarter uniform
    assert bool(grid.mask[occupied].all()) and int(grid.mask.sum()) == 3


@pytest.mark.parametrize("cut", [False, True], ids=["all-slots", "last-rays-cut"])
def test_composite_packed_kernel_matches_twin_with_gradients(cut):
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
    k = DISTORTED if distorted else PINHOLE
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


def _packed_layout(counts: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """First slots [A] of rays holding ``counts`` [A] samples each, their blocks laid out in a random order (as
    the fused march's blocks may come)."""
    order = torch.randperm(counts.numel(), generator=torch.Generator().manual_seed(seed))
    starts = torch.empty_like(counts)
    starts[order] = counts[order].cumsum(0) - counts[order]
    return starts


@pytest.mark.parametrize("k", [8, 5, 128])  # the first pass's segment, one not a power of two, a grown one
def test_composite_kernel_equals_reference(k):
    n_rays, n_active, dt, min_transmittance = 90, 61, 0.05, 1e-2
    active = torch.randperm(n_rays)[:n_active]
    counts = torch.randint(0, k + 1, (n_active,))
    counts[3] = k
    starts = _packed_layout(counts)
    n = int(counts.sum())
    sigmas, rgbs = torch.rand(n) * 8, torch.rand(n, 3)
    sigmas[int(starts[3]) + k - 1] = float("inf")  # an overflowing density: opaque, not NaN
    colour1, trans1 = torch.rand(n_rays, 3) * 0.2, torch.rand(n_rays)
    t_far = torch.rand(n_rays) + 2.0
    t1 = torch.rand(n_rays)
    colour2, trans2, t2 = colour1.clone(), trans1.clone(), t1.clone()
    args = (active, starts, counts, sigmas, rgbs, dt)
    raymarch.composite_segment(colour1, trans1, *args, t1, t_far, min_transmittance)
    triton_raymarch.composite_segment(colour2, trans2, *args, t2, t_far, min_transmittance)
    torch.testing.assert_close(colour1, colour2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trans1, trans2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t1, t2, atol=0, rtol=0)
    assert float(trans2[active[3]]) < 1e-12 and bool(colour2.isfinite().all())
    ended = torch.zeros(n_rays, dtype=torch.bool)
    ended[active] = trans1[active] <= min_transmittance
    assert 0 < int(ended.sum()) < n_active  # some rays were terminated, some not
    assert bool((t1[ended] == t_far[ended]).all()) and bool((t1[~ended] < 1).all())  # only those moved


def test_homogeneous_segment_transmittance_is_beer_lambert():
    k, dt, sigma = 16, 0.05, 3.0
    for composite in (raymarch.composite_segment, triton_raymarch.composite_segment):
        colour, trans, t = torch.zeros(1, 3), torch.ones(1), torch.zeros(1)
        composite(colour, trans, torch.tensor([0]), torch.tensor([0]), torch.tensor([k]), torch.full((k,), sigma),
                  torch.ones(k, 3), dt, t, torch.ones(1), 0.0)
        assert float(trans) == pytest.approx(math.exp(-sigma * k * dt), rel=1e-5)
        assert float(colour[0, 0]) == pytest.approx(1 - math.exp(-sigma * k * dt), rel=1e-5)


def test_fused_pass_records_what_its_kernel_fused():
    """A recorded fused pass is one march stage labelled "march+compact" (what its kernel fused, for a trace's
    reader); the PyTorch twins record march and compact apart; the trace's rest mode stays "fused" (no field MLP in a
    rest stage)."""
    from ngfx.ngpc_sim.capture import _rest_mode
    from ngfx.render.stages import record_stages

    res, dt = 16, 0.05
    origins, dirs, t_near, t_far = _rays_for_skipping()
    field = lambda p, d: (torch.full((len(p),), 3.0), torch.full((len(p), 3), 0.5))  # noqa: E731
    for fused in (False, True):
        with record_stages("cpu") as records:
            raymarch.render_segments(origins, dirs, t_near, t_far, _occupancy("ball", res), AABB, res, dt, field,
                                     torch.zeros(3), app="test", fused=fused, max_scan=8, min_transmittance=1e-2)
        names = {r.name for r in records}
        marches = [r for r in records if r.name == "test.march"]
        assert marches and ("test.compact" in names) != fused
        assert all(r.attrs["fused"] == ("march+compact" if fused else False) for r in marches)
        assert _rest_mode(records, fused) == ("fused" if fused else "unfused")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU test: the interpreter runs programs one after another")
@pytest.mark.parametrize("warps", [1, 4])
@pytest.mark.parametrize("factor", [0, 4])
def test_march_packed_on_the_gpu_matches_the_twin(monkeypatch, warps, factor):
    """On a GPU, programs run at once and a march program's warps share its scratch (the barrier) and the counters
    (atomics): the kernel still takes every ray's samples of the twin (with a macro level too)."""
    from ngfx.render.ops.occupancy import macro_occupancy

    monkeypatch.setattr(triton_raymarch, "MARCH_WARPS", warps)
    monkeypatch.setattr(triton_raymarch, "MARCH_BLOCK", 128)
    res, dt, k = 16, 0.02, 16
    c2w = look_at(torch.tensor([3.0, -2.0, 1.0]), torch.zeros(3))
    origins, dirs, t_near, t_far = raymarch.ray_gen(c2w, Intrinsics.from_fov_x(64, 48, 0.7), 0, 48, AABB)
    occupancy = _occupancy("ball", res)
    macro = macro_occupancy(occupancy, res, factor) if factor else None
    active = torch.nonzero(t_near < t_far)[:, 0]
    t_twin = t_near.clone()
    twin = raymarch.march_packed(origins, dirs, active, t_twin, t_far, occupancy, AABB, res, dt, k, 64, 1, macro)
    cuda = [x.cuda() for x in (origins, dirs, active, t_near.clone(), t_far, occupancy, AABB)]
    fused = triton_raymarch.march_packed(*cuda[:5], cuda[5], cuda[6], res, dt, k, 64, 1,
                                         macro.cuda() if factor else None)
    fused = raymarch.PackedSegment(*(x.cpu() for x in fused))
    s_twin, taken_twin = _as_slots(twin, origins, dirs, active, k)
    s_fused, taken_fused = _as_slots(fused, origins, dirs, active, k)
    # the GPU's fused multiply-adds and divisions may put a lattice point a rounding off a cell face on the other side
    # (and shift the ray's later slots); a race would scramble far more
    assert int(taken_twin.sum()) > 1000 and float((taken_fused == taken_twin).float().mean()) > 0.99
    both = taken_fused & taken_twin
    assert float((s_fused[both] - s_twin[both]).abs().lt(1e-4).float().mean()) > 0.99
    assert len(set(fused.next_rays.tolist()) ^ set(twin.next_rays.tolist())) <= 0.01 * active.numel()
