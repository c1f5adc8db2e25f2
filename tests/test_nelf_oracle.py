"""The depth-oracle student (ngfx.nelf.oracle) on CPU: the teacher's bin weights, sampling and compositing in the
chosen bins, its config, and a distillation from an analytic teacher whose geometry is known."""

import json
import math
from dataclasses import replace

import pytest
import torch

from ngfx.cameras import pixel_rays
from ngfx.cli import main
from ngfx.errors import NgfxInputError
from ngfx.nelf.distill import distill_from_app
from ngfx.nelf.network import student_config, student_preset, with_overrides
from ngfx.nelf.oracle import PRESETS, DepthOracle, OracleConfig, ray_bins, sample_weights, teacher_bin_weights
from ngfx.nelf.runs import load_nelf_run, render_nelf_run
from test_nelf_distill import SphereTeacher

BOX = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])


pytestmark = pytest.mark.usefixtures("one_thread")


class SolidSphereTeacher(SphereTeacher):
    """What distillation reads of a NeRF App: an opaque unit sphere (density 200 inside) coloured by its normal,
    on white; its renderer is exact (a ray pointing away misses it), its density is what the bin weights are sampled
    from."""

    def __init__(self, size: int = 24):
        super().__init__(size)

    def density_world(self, points: torch.Tensor) -> torch.Tensor:
        return torch.where(points.norm(dim=-1) < 1.0, 200.0, 0.0)

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        b = (origins * dirs).sum(1)
        disc = b * b - ((origins * origins).sum(1) - 1.0)
        t = -b - disc.clamp_min(0).sqrt()
        normal = origins + t[:, None] * dirs
        return torch.where(((disc > 0) & (t > 0))[:, None], 0.5 + 0.5 * normal, self.background.expand_as(normal))


def _rays(*pairs):
    origins = torch.tensor([o for o, _ in pairs], dtype=torch.float32)
    dirs = torch.nn.functional.normalize(torch.tensor([d for _, d in pairs], dtype=torch.float32), dim=1)
    return origins, dirs


def test_teacher_bin_weights_put_the_light_where_the_surface_is():
    # a ray down the z axis enters the box at t = 2.5 and the sphere at t = 3: bin 4 of 24 (each 0.125 long);
    # a ray at x = 1.2 misses the sphere; a ray pointing away misses the box
    origins, dirs = _rays(([0, 0, 4], [0, 0, -1]), ([1.2, 0, 4], [0, 0, -1]), ([0, 0, 4], [0, 0, 1]))
    weights = teacher_bin_weights(SolidSphereTeacher(), origins, dirs, BOX, n_bins=24)
    assert weights.shape == (3, 25) and torch.allclose(weights.sum(1), torch.ones(3))
    assert int(weights[0, :24].argmax()) == 4 and weights[0, 4] > 0.99
    assert weights[1, 24] == pytest.approx(1.0) and weights[2, 24] == pytest.approx(1.0)  # both reach the background
    start, span, hit = ray_bins(origins, dirs, BOX)
    assert start[0] == pytest.approx(2.5) and span[0] == pytest.approx(3.0) and hit.tolist() == [True, True, False]


def test_sample_weights_composite_front_to_back():
    sigma = torch.tensor([[0.0, 1e4, 1e4], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    w = sample_weights(sigma, torch.tensor([0.1, 0.1, 0.1]))
    assert w[0].tolist() == pytest.approx([0.0, 1.0, 0.0])  # the first opaque sample takes all the light
    assert w[1].sum() == 0
    expected = [(1 - math.exp(-0.05)) * math.exp(-0.05 * i) for i in range(3)]
    assert w[2].tolist() == pytest.approx(expected, rel=1e-5)


class _RecordingField(torch.nn.Module):
    """Stands in for the NeRF field: opaque red wherever x > 0.5 of the unit cube, empty elsewhere; remembers the
    points it was asked about."""

    def forward(self, x, dirs):
        self.points = x
        solid = x[:, 2] < 0.5  # below the box's middle plane z = 0
        return torch.where(solid, 1e4, 0.0), torch.tensor([1.0, 0.0, 0.0]).expand(len(x), 3)

    def query(self, x, dirs, fused=False):
        return self.forward(x, dirs)


def test_shade_samples_only_the_bins_asked_and_composites_over_the_background():
    model = DepthOracle(replace(PRESETS["tiny"], n_bins=8))  # 8 bins of the box segment, 2 samples a bin
    model.field = _RecordingField()
    origins, dirs = _rays(([0, 0, 4], [0, 0, -1]), ([0, 0, 4], [0, 0, -1]), ([0, 0, 4], [0, 0, 1]))
    # ray 0 is sampled in bins 6 and 1 (given out of order), ray 1 in bins 0 and 1 (above z = 0), ray 2 misses
    with torch.no_grad():
        colour = model.shade(origins, dirs, torch.tensor([[6, 1], [0, 1], [0, 1]]))
    t = 4 - model.field.points.reshape(3, 4, 3)[:, :, 2] * 3 + 1.5  # unit z back to the distance along the ray
    assert t[0].tolist() == pytest.approx([2.5 + 0.375 * (1 + f) for f in (0.25, 0.75)]
                                          + [2.5 + 0.375 * (6 + f) for f in (0.25, 0.75)])  # front to back
    assert colour[0].tolist() == pytest.approx([1, 0, 0])  # bin 6 lies below z = 0: solid red
    assert colour[1].tolist() == pytest.approx([1, 1, 1])  # only empty space sampled: the background
    assert colour[2].tolist() == pytest.approx([1, 1, 1])  # missed the box


def test_config_round_trips_and_bad_fields_are_named():
    cfg = PRESETS["tiny"]
    assert student_config(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert with_overrides(cfg, {"n_bins": 16}, "f.json").n_bins == 16
    for change, field in (({"top_bins": 13}, "top_bins"), ({"n_bins": 0}, "n_bins"),
                          ({"aabb": [[0, 0, 0], [0, 1, 1]]}, "aabb"), ({"background": [1, 2, 0]}, "background"),
                          ({"field_per_level_scale": float("nan")}, "field_per_level_scale"),
                          ({"bins": 3}, "bins")):
        with pytest.raises(NgfxInputError, match=field):
            OracleConfig.from_dict({**cfg.to_dict(), **change}, "f.json")
    with pytest.raises(NgfxInputError, match="oracle sizes"):
        student_preset("oracle", "huge")


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("oracle_run")
    run = distill_from_app(SolidSphereTeacher(), out, "tiny", arch="oracle", n_pseudo=16, steps=300,
                           checkpoint_every=150)
    return out, run


def test_oracle_learns_where_the_sphere_is_and_the_student_its_colours(oracle_run):
    out, run = oracle_run
    m = run["metrics"]
    assert run["arch"] == "oracle" and run["nelf_config"]["aabb"] == BOX.tolist()
    assert run["batch"] == 256 and run["pseudo_views"] == 16
    assert m["student_psnr_db"] > m["constant_colour_psnr_db"] + 8.0
    model, _ = load_nelf_run(out)
    teacher = SolidSphereTeacher()
    origins, dirs = pixel_rays(teacher.eval_poses[0], teacher.intrinsics)
    weights = teacher_bin_weights(teacher, origins, dirs, model.aabb, model.cfg.n_bins)
    with torch.no_grad():
        picked = model.bin_logits(origins, dirs)[:, :model.cfg.n_bins].topk(model.cfg.top_bins, dim=1).indices
        solid = weights[:, :-1].sum(1) > 0.5
        found = (picked == weights[:, :-1].argmax(1, keepdim=True)).any(1)
        assert float(found[solid].float().mean()) > 0.95  # the oracle's bins hold the sphere's surface
        assert float((picked == 0).all(1)[solid].float().mean()) < 0.05  # not the same bins whatever the ray


def test_oracle_run_renders_and_resumes_only_as_itself(oracle_run, tmp_path, capsys):
    out, run = oracle_run
    paths = render_nelf_run(out, tmp_path / "frames", (24, 24), n_frames=2)
    assert len([p for p in paths if p.suffix == ".png"]) == 2
    metrics = json.loads((tmp_path / "frames" / "metrics.json").read_text())
    assert metrics["forward"] == "pytorch" and metrics["resolution"] == [24, 24]
    # a run of another arch in the same folder is refused, naming the flag
    with pytest.raises(NgfxInputError, match="--arch"):
        distill_from_app(SolidSphereTeacher(), out, "tiny", arch="mobile_r2l", steps=1)


def test_finetuning_an_oracle_exits_2_naming_the_flag(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    assert main(["train", "nerf", "--scene", "synthetic", "--size", "tiny", "--steps", "2", "--device", "cpu",
                 "--out", str(teacher)]) == 0
    capsys.readouterr()
    code = main(["nelf", "distill", str(teacher), "--out", str(tmp_path / "s"), "--arch", "oracle", "--size", "tiny",
                 "--finetune-steps", "5", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "--finetune-steps" in err and "Traceback" not in err
