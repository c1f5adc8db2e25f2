"""The grid-encoded light-slab student: coordinates, network, distillation, ONNX export and the mobile report (CPU)."""

import json
import math
from dataclasses import replace

import pytest
import torch

from ngfx.cameras import Intrinsics, orbit_poses, pixel_rays
from ngfx.cli import main
from ngfx.errors import NgfxInputError
from ngfx.nelf.distill import distill_from_app
from ngfx.nelf.lightslab import PRESETS, LightSlab, LightSlabConfig, place_slabs, slab_coordinates, slab_frames
from ngfx.nelf.network import fold_batchnorm, student_config, student_preset
from ngfx.nelf.onnx_export import export_run
from ngfx.nelf.runs import load_nelf_run, render_nelf_run
from test_nelf_distill import SphereTeacher


def test_slab_coordinates_geometry():
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    origins = torch.zeros(3, 3)
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.8]])
    enc = slab_coordinates(origins, dirs, aabb, slab_frames(replace(PRESETS["tiny"], n_slabs=4))).view(3, 4, 5)
    # a ray through the centre along slab 0's normal (+x) crosses both planes at their centres
    assert torch.allclose(enc[0, 0, :4], torch.full((4,), 0.5), atol=1e-6)
    assert enc[0, 0, 4] > 0.99 and enc[1, 1, 4] > 0.99  # +y is slab 1's normal (azimuth 90 degrees)
    assert torch.allclose(enc[..., 4].sum(1), torch.ones(3))
    # tilted ray: up by 0.8/0.6 of its run; planes at +-sqrt(3) (half the diagonal), coordinates / (4 R) + 0.5
    r = math.sqrt(3)
    t_far = r / 0.6
    assert enc[2, 0, 3].item() == pytest.approx(0.8 * t_far / (4 * r) + 0.5, abs=1e-5)  # e2 = +z on the far plane
    assert ((enc[..., :4] >= 0) & (enc[..., :4] <= 1)).all()


def test_place_slabs_finds_the_camera_groups():
    """Three groups of viewing directions -> three normals, each its group's mean direction; same answer twice."""
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [-0.6, 0.8, 0.0]])
    dirs = torch.cat([m + 0.1 * torch.randn(30, 3, generator=gen) for m in means])
    normals = torch.tensor(place_slabs(dirs, 3))
    assert place_slabs(dirs, 3) == place_slabs(dirs, 3)
    # a camera at the centre has no direction: left out, not a NaN normal; none but such cameras: refused
    assert place_slabs(torch.cat([dirs, torch.zeros(1, 3)]), 3) == place_slabs(dirs, 3)
    with pytest.raises(NgfxInputError, match="train_poses"):
        place_slabs(torch.zeros(4, 3), 2)
    opposite = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    assert torch.isfinite(torch.tensor(place_slabs(opposite, 1))).all()  # a group whose mean is zero keeps a normal
    unit = dirs / dirs.norm(dim=1, keepdim=True)
    for group, mean in zip(unit.split(30), means):
        expected = group.mean(0) / group.mean(0).norm()
        assert (normals @ expected).max() > 0.9999  # one normal is this group's mean
        assert (normals @ mean).max() > 0.98


def test_slabs_facing_the_cameras_keep_every_ray_inside_its_planes():
    """Cameras on a hemisphere up to 85 degrees of elevation (as Lego's): with slabs placed on the cameras every
    ray's heaviest slab has all four plane coordinates strictly inside (0, 1); the fixed horizontal ring clamps
    the rays of the cameras looking down (the failure that cost the first Lego light slab its eval views)."""
    aabb = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
    poses = torch.cat([orbit_poses(8, 4.0, elevation_deg=e) for e in (10.0, 35.0, 60.0, 85.0)])
    k = Intrinsics.from_fov_x(12, 12, math.radians(40))
    origins, dirs = map(torch.cat, zip(*(pixel_rays(p, k) for p in poses)))

    def clamped(cfg):
        enc = slab_coordinates(origins, dirs, aabb, slab_frames(cfg)).view(len(origins), cfg.n_slabs, 5)
        uvst = enc[torch.arange(len(enc)), enc[..., 4].argmax(1), :4]
        return float(((uvst <= 0) | (uvst >= 1)).any(1).float().mean())

    ring = replace(PRESETS["quick"], n_slabs=6)
    placed = replace(ring, slab_normals=place_slabs(-poses[:, :3, 3], 6))
    assert clamped(placed) == 0.0 and clamped(ring) > 0.05
    enc = slab_coordinates(origins, dirs, aabb, slab_frames(placed)).view(len(origins), 6, 5)
    assert enc[..., 4].amax(1).mean() > 0.5  # most of a ray's features come from one slab


def test_network_shapes_gradients_and_config_round_trip():
    cfg = PRESETS["tiny"]
    model = LightSlab(cfg)
    slabs = torch.rand(2, cfg.in_channels, 5, 6)
    out = model(slabs)
    assert out.shape == (2, 3, 10, 12) and ((out > 0) & (out < 1)).all()
    out.mean().backward()
    assert all(g.params.grad is not None and g.params.grad.abs().sum() > 0 for g in model.grids)
    assert student_config(cfg.to_dict()) == cfg and student_preset("lightslab", "quick") == PRESETS["quick"]
    axes = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    placed = replace(cfg, n_slabs=4, slab_normals=((0.0, 0.0, -2.0), *axes))
    assert student_config(placed.to_dict()) == replace(placed, slab_normals=((0.0, 0.0, -1.0), *axes))
    for bad in ([[0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0], *axes], [[math.nan, 0, 1], *axes], "up"):
        with pytest.raises(NgfxInputError, match="slab_normals"):
            LightSlabConfig.from_dict({**cfg.to_dict(), "slab_normals": bad})
    with pytest.raises(NgfxInputError, match="n_slabs"):
        LightSlabConfig.from_dict({"arch": "lightslab", "n_slabs": 0})
    with pytest.raises(NgfxInputError, match="n_slabs"):  # not a slab_normals count mismatch
        LightSlabConfig.from_dict({"arch": "lightslab", "n_slabs": "1", "slab_normals": [[0.0, 0.0, 1.0]]})
    for key, bad in (("per_level_scale", math.nan), ("per_level_scale", -1.5), ("per_level_scale", "1.5"),
                     ("n_blocks", -1), ("sr_blocks", "1")):
        with pytest.raises(NgfxInputError, match=key):
            LightSlabConfig.from_dict({"arch": "lightslab", key: bad})
    with pytest.raises(NgfxInputError, match="--arch"):
        student_preset("nerfnet", "tiny")


@pytest.fixture(scope="module")
def slab_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("slab_run")
    run = distill_from_app(SphereTeacher(), out, "tiny", arch="lightslab", steps=120, checkpoint_every=60)
    return out, run


def test_lightslab_distils_renders_exports_and_is_costed(slab_run, tmp_path):
    out, run = slab_run
    m = run["metrics"]
    assert run["arch"] == "lightslab" and run["nelf_config"]["arch"] == "lightslab"
    assert len(run["nelf_config"]["slab_normals"]) == run["nelf_config"]["n_slabs"]  # placed on the teacher's cameras
    assert m["student_psnr_db"] > m["constant_colour_psnr_db"] + 1.0
    model, _ = load_nelf_run(out)
    assert isinstance(model, LightSlab)
    assert len(render_nelf_run(out, tmp_path / "frames", (32, 32), n_frames=1)) == 1
    summary = export_run(out, tmp_path / "slab.onnx")
    assert summary["max_abs_error_vs_pytorch"] < 1e-4
    assert main(["mobile-report", str(tmp_path / "slab.onnx"), "--out", str(tmp_path / "rep")]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    grid_params = sum(g.params.numel() for g in model.grids)
    table = [layer for layer in report["layers"] if layer["kind"] == "table"]
    assert table and table[0]["params"] == grid_params  # the grids are stored and costed, not dropped
    # every deployed parameter counted once: grids + convs with BatchNorm folded in
    assert report["totals"]["params"] == sum(p.numel() for p in fold_batchnorm(model).parameters())
    assert report["resolution"] == [32, 32]
    # a run folder is costed through its ONNX export too
    assert main(["mobile-report", str(out), "--resolution", "32x32", "--out", str(tmp_path / "rep2")]) == 0
    again = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert again["totals"] == report["totals"]


def test_the_export_does_not_grow_with_the_frame(slab_run, tmp_path):
    """Traced on a small frame with the frame's sizes as symbols, then pinned: the file holds no tensor per ray (a
    paper-size light slab traced at 800x800 held every lookup's zeros and ones, and its trace ran out of 8 GB) and
    renders a frame of the run's orbit at either size as PyTorch does."""
    out, _ = slab_run
    small, bigger = (export_run(out, tmp_path / f"{size}.onnx", (size, size)) for size in (32, 64))
    assert bigger["bytes"] < 1.01 * small["bytes"]  # four times the rays, the same file but for the sizes it notes
    assert small["max_abs_error_vs_pytorch"] < 1e-4 and bigger["max_abs_error_vs_pytorch"] < 1e-4


def test_cli_rejects_an_unknown_arch(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["nelf", "distill", str(tmp_path), "--arch", "nerfnet", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "--arch" in capsys.readouterr().err
