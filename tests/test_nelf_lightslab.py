"""The grid-encoded light-slab student: coordinates, network, distillation, ONNX export and the mobile report (CPU)."""

import json
import math

import pytest
import torch

from ngfx.cli import main
from ngfx.errors import NgfxInputError
from ngfx.nelf.distill import distill_from_app
from ngfx.nelf.lightslab import PRESETS, LightSlab, LightSlabConfig, slab_coordinates
from ngfx.nelf.network import fold_batchnorm, student_config, student_preset
from ngfx.nelf.onnx_export import export_run
from ngfx.nelf.runs import load_nelf_run, render_nelf_run
from test_nelf_distill import SphereTeacher


def test_slab_coordinates_geometry():
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    origins = torch.zeros(3, 3)
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.8]])
    enc = slab_coordinates(origins, dirs, aabb, 4).view(3, 4, 5)
    # a ray through the centre along slab 0's normal (+x) crosses both planes at their centres
    assert torch.allclose(enc[0, 0, :4], torch.full((4,), 0.5), atol=1e-6)
    assert enc[0, 0, 4] > 0.99 and enc[1, 1, 4] > 0.99  # +y is slab 1's normal (azimuth 90 degrees)
    assert torch.allclose(enc[..., 4].sum(1), torch.ones(3))
    # tilted ray: up by 0.8/0.6 of its run; planes at +-sqrt(3) (half the diagonal), coordinates / (4 R) + 0.5
    r = math.sqrt(3)
    t_far = r / 0.6
    assert enc[2, 0, 3].item() == pytest.approx(0.8 * t_far / (4 * r) + 0.5, abs=1e-5)  # e2 = +z on the far plane
    assert ((enc[..., :4] >= 0) & (enc[..., :4] <= 1)).all()


def test_network_shapes_gradients_and_config_round_trip():
    cfg = PRESETS["tiny"]
    model = LightSlab(cfg)
    slabs = torch.rand(2, cfg.in_channels, 5, 6)
    out = model(slabs)
    assert out.shape == (2, 3, 10, 12) and ((out > 0) & (out < 1)).all()
    out.mean().backward()
    assert all(g.params.grad is not None and g.params.grad.abs().sum() > 0 for g in model.grids)
    assert student_config(cfg.to_dict()) == cfg and student_preset("lightslab", "quick") == PRESETS["quick"]
    with pytest.raises(NgfxInputError, match="n_slabs"):
        LightSlabConfig.from_dict({"arch": "lightslab", "n_slabs": 0})
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


def test_cli_rejects_an_unknown_arch(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["nelf", "distill", str(tmp_path), "--arch", "nerfnet", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "--arch" in capsys.readouterr().err
