"""The depth-oracle student shipped: ONNX export checked against PyTorch with onnxruntime, and the mobile report's
costs of its graph (CPU; a tiny oracle distilled from a tiny project NeRF)."""

import json

import onnx
import pytest
import torch

from ngfx.cli import main
from ngfx.nelf.distill import distill_from_app
from ngfx.nelf.onnx_export import export_model, export_run, onnx_max_error
from ngfx.nelf.oracle import DepthOracle, ray_bins
from ngfx.nelf.runs import load_nelf_run
from ngfx.render.apps import nerf
from ngfx.render.neural_field import fit

SIZE = 32  # the exported frame, 32 x 32 rays


@pytest.fixture(scope="module")
def oracle_export(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("oracle_export")
    with pytest.MonkeyPatch.context() as env:
        # the teacher on its PyTorch twins: under the Triton interpreter its renders took 8 s a distillation step
        env.delenv("TRITON_INTERPRET", raising=False)
        teacher = nerf.build_app("synthetic", "hashgrid", "tiny", device="cpu")
        fit(teacher, steps=60)
        teacher.eval()
        distill_from_app(teacher, out / "run", "tiny", arch="oracle", n_pseudo=8, steps=40)
    summary = export_run(out / "run", out / "model.onnx", (SIZE, SIZE))
    model, _ = load_nelf_run(out / "run")
    yield out / "run", out / "model.onnx", summary, model
    torch.set_num_threads(threads)


def scene_rays(aabb: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """[n, 6] rays as cameras see a scene: origins on a sphere of radius 4 about the box, aimed at random points
    of a region a bit larger than the box (most hit it, some graze or pass it), and one ray in four aimed away
    from the box (a sure miss)."""
    gen = torch.Generator().manual_seed(seed)
    centre, half = aabb.mean(0), (aabb[1] - aabb[0]) / 2
    origins = torch.randn(n, 3, generator=gen)
    origins = centre + 4.0 * origins / origins.norm(dim=1, keepdim=True)
    targets = centre + 1.2 * half * (torch.rand(n, 3, generator=gen) * 2 - 1)
    dirs = targets - origins
    dirs[::4] = -dirs[::4]
    return torch.cat([origins, dirs / dirs.norm(dim=1, keepdim=True)], dim=1)


def test_the_onnx_graph_renders_as_pytorch_does(oracle_export):
    _, path, summary, model = oracle_export
    assert isinstance(model, DepthOracle)
    assert summary["max_abs_error_vs_pytorch"] < 1e-4  # export_run's own check, a frame of the run's orbit
    rays = scene_rays(model.aabb, SIZE * SIZE)
    _, _, hit = ray_bins(rays[:, :3], rays[:, 3:], model.aabb)
    assert 0.3 < hit.float().mean() < 0.9  # both kinds of ray are checked
    image = rays.T.reshape(1, 6, SIZE, SIZE)  # channels: origin xyz, direction xyz, as encode_frames builds them
    with torch.no_grad():
        rgb = model(image).reshape(3, -1).T
    assert (rgb[~hit] == model.background).all()
    assert (rgb[hit] - model.background).abs().amax() > 0.05  # the rays that hit see the scene, not the background
    assert onnx_max_error(model, path, image) < 1e-4


def test_the_metadata_says_how_to_build_the_rays(oracle_export):
    run_dir, path, _, model = oracle_export
    graph = onnx.load(str(path))
    props = {p.key: p.value for p in graph.metadata_props}
    run = json.loads((run_dir / "run.json").read_text())
    assert props["ngfx.input"] == "rays" and props["ngfx.input_shape"].startswith(f"[1, 6, {SIZE}, {SIZE}]")
    assert "channels 0..2 the ray's origin" in props["ngfx.input_layout"]
    assert "channels 3..5 its unit direction" in props["ngfx.input_layout"]
    assert props["ngfx.scene_box"].startswith(json.dumps(run["aabb"]))
    assert json.loads(props["ngfx.nelf_config"]) == run["nelf_config"]
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (graph.graph.input[0], graph.graph.output[0])]
    assert dims == [[1, 6, SIZE, SIZE], [1, 3, SIZE, SIZE]]


def test_the_mobile_report_costs_every_deployed_parameter_and_layer(oracle_export, tmp_path):
    run_dir, path, _, model = oracle_export
    assert main(["mobile-report", str(path), "--out", str(tmp_path / "rep")]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["resolution"] == [SIZE, SIZE]
    assert report["totals"]["params"] == sum(p.numel() for p in model.parameters())
    table = [layer for layer in report["layers"] if layer["kind"] == "table"]
    grids = (model.points_grid, model.field.density_net.encoding)
    assert len(table) == 1 and table[0]["params"] == sum(g.params.numel() for g in grids)
    # every ray runs the oracle MLP once and the field's two MLPs at each of its samples
    rays, cfg = SIZE * SIZE, model.cfg
    oracle_macs = sum(m.in_features * m.out_features for m in model.oracle if isinstance(m, torch.nn.Linear))
    field_macs = sum(w.numel() for net in (model.field.density_net.network, model.field.colour_net)
                     for w in net.weights)
    assert report["totals"]["macs"] == rays * (oracle_macs + cfg.n_samples * field_macs)
    # and gathers, at every point, each level's 8 cell corners: at each bin centre of the oracle, at each sample
    gathered = rays * 8 * (cfg.n_bins * cfg.oracle_levels * cfg.oracle_features + cfg.n_samples * cfg.field_levels * 2)
    assert table[0]["activation_bytes"] == 2 * gathered
    assert report["frame"]["estimate_s"] > 0
    # a run folder is costed through its ONNX export, to the same table
    assert main(["mobile-report", str(run_dir), "--resolution", f"{SIZE}x{SIZE}", "--out", str(tmp_path / "rep2")]) == 0
    again = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert again["totals"] == report["totals"] and again["resolution"] == [SIZE, SIZE]


def test_the_file_does_not_grow_with_the_frame(oracle_export, tmp_path):
    """Traced on a small frame with the frame's sizes as symbols, pinned to the frame asked for: the graph holds no
    tensor per ray (a grid lookup's zeros and ones, folded at a known size, made a paper-size oracle's file
    gigabytes) and renders that frame, though it was traced on another."""
    _, path, _, model = oracle_export
    bigger = export_model(model, tmp_path / "bigger.onnx", (2 * SIZE, 2 * SIZE))
    # four times the rays, the same file but for the sizes it notes (per-ray constants grew it with the rays)
    assert bigger.stat().st_size < 1.01 * path.stat().st_size
    rays = scene_rays(model.aabb, 4 * SIZE * SIZE, seed=1).T.reshape(1, 6, 2 * SIZE, 2 * SIZE)
    assert onnx_max_error(model, bigger, rays) < 1e-4
