"""NeRF's fused field head (triton_nerf_head) equals its PyTorch twin under the interpreter (fp32)."""

import pytest
import torch
import triton

from ngfx.encodings import Network
from ngfx.render.apps.nerf_field import NerfField
from ngfx.render.ops.nerf_head import field_head
from ngfx.render.apps.presets import encoding_preset, mlp_preset
from ngfx.render.ops import triton_nerf_head, triton_raymarch
from ngfx.render.ops.sh import spherical_harmonics

N_ROWS = 257  # not a multiple of either launch's block
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _field(encoding: str = "hashgrid") -> NerfField:
    field = NerfField(encoding_preset(encoding, 3, "tiny"))
    with torch.no_grad():
        field.density_net.encoding.params.uniform_(-1.0, 1.0)  # densities and colours that vary across points
    return field


def _unit_dirs(n: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, 3), dim=1)


def _features(field: NerfField, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(N_ROWS, field.density_net.network.cfg.n_input_dims).to(dtype)


# hashgrid: 8 levels x 2 features (16 inputs); lowres: 2 levels x 4 (8 inputs, padded to 16 in the kernel)
@pytest.mark.parametrize("encoding", ["hashgrid", "lowres"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_field_head_of_features_matches_twin(encoding, dtype):
    field = _field(encoding)
    features, dirs = _features(field, dtype), _unit_dirs(N_ROWS)
    sigma, rgb = triton_nerf_head.field_head(features, dirs, field.density_net.network, field.colour_net)
    expected_sigma, expected_rgb = field_head(features, dirs, field.density_net.network, field.colour_net)
    assert sigma.dtype == rgb.dtype == torch.float32
    assert sigma.shape == (N_ROWS,) and rgb.shape == (N_ROWS, 3)
    torch.testing.assert_close(sigma, expected_sigma, **TOLERANCE)
    torch.testing.assert_close(rgb, expected_rgb, **TOLERANCE)


def _poison_outputs(monkeypatch):
    """torch.empty gives NaN-filled float tensors: a row the kernel never writes stays NaN, whatever memory held."""
    empty = torch.empty

    def poisoned(*args, **kwargs):
        tensor = empty(*args, **kwargs)
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    monkeypatch.setattr(torch, "empty", poisoned)


VARIANTS = [{"HEAD_PERSISTENT": True}, {"HEAD_SH_JOINED": True}, {"HEAD_PERSISTENT": True, "HEAD_SH_JOINED": True}]


@pytest.mark.parametrize("n_rows", [N_ROWS, 5])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join(v))
@pytest.mark.parametrize("encoding", ["hashgrid", "lowres"])
def test_field_head_variants_match_twin(encoding, variant, n_rows, monkeypatch):
    """Every row written once, as the twin computes it: with N_ROWS the persistent programs (2 under the
    interpreter) loop over 5 blocks, the last one masked; 5 rows are one masked block."""
    for name, value in variant.items():
        monkeypatch.setattr(triton_nerf_head, name, value)
    n_blocks = triton.cdiv(n_rows, triton_nerf_head.HEAD_BLOCK)
    if n_rows == N_ROWS:
        n_programs = triton_nerf_head.head_programs(n_blocks, torch.device("cpu"))
        assert n_rows % triton_nerf_head.HEAD_BLOCK and 2 * n_programs < n_blocks  # a program takes 3 blocks
    field = _field(encoding)
    features = torch.randn(n_rows, field.density_net.network.cfg.n_input_dims)
    dirs = _unit_dirs(n_rows)
    expected_sigma, expected_rgb = field_head(features, dirs, field.density_net.network, field.colour_net)
    _poison_outputs(monkeypatch)
    sigma, rgb = triton_nerf_head.field_head(features, dirs, field.density_net.network, field.colour_net)
    assert sigma.dtype == rgb.dtype == torch.float32
    torch.testing.assert_close(sigma, expected_sigma, **TOLERANCE)
    torch.testing.assert_close(rgb, expected_rgb, **TOLERANCE)


@pytest.mark.parametrize("persistent", [False, True])
def test_field_head_rgb_half(persistent, monkeypatch):
    """HEAD_RGB_HALF: colour float16 (the twin's rounded to fp16), density still float32; the twin stays fp32."""
    monkeypatch.setattr(triton_nerf_head, "HEAD_RGB_HALF", True)
    monkeypatch.setattr(triton_nerf_head, "HEAD_PERSISTENT", persistent)
    field = _field()
    features, dirs = _features(field), _unit_dirs(N_ROWS)
    sigma, rgb = triton_nerf_head.field_head(features, dirs, field.density_net.network, field.colour_net)
    expected_sigma, expected_rgb = field_head(features, dirs, field.density_net.network, field.colour_net)
    assert sigma.dtype == expected_sigma.dtype == expected_rgb.dtype == torch.float32 and rgb.dtype == torch.float16
    torch.testing.assert_close(sigma, expected_sigma, **TOLERANCE)
    torch.testing.assert_close(rgb, expected_rgb.half())  # fp16's tolerance: within a rounding of the twin
    assert expected_rgb.std(0).min() > 1e-3


def test_composite_reads_half_colour_as_its_float_values():
    """The fused composite kernel (the fused query's consumer) loads fp16 colours and promotes them: the same
    image as from their float32 values, bit for bit."""
    counts = torch.tensor([3, 0, 4, 1, 2])
    starts = torch.tensor([0, 3, 5, 9, 12])  # a gap after ray 2's samples, as packed segments may leave
    n_rays, n_samples = counts.numel(), 14
    sigmas = torch.rand(n_samples) * 5.0
    rgbs = torch.rand(n_samples, 3).half()
    results = []
    for colours in (rgbs, rgbs.float()):
        colour, transmittance = torch.zeros(n_rays, 3), torch.ones(n_rays)
        t, t_far = torch.zeros(n_rays), torch.ones(n_rays)
        triton_raymarch.composite_segment(colour, transmittance, torch.arange(n_rays), starts, counts, sigmas, colours,
                                          0.1, t, t_far, 1e-3)
        results.append((colour, transmittance))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert results[0][0][0].min() > 0.05 and not results[0][0][1].any()  # colour where samples were, none without


@pytest.mark.parametrize("encoding", ["hashgrid", "lowres"])
def test_field_head_encoding_points_matches_twin(encoding):
    field = _field(encoding)
    points, dirs = torch.rand(N_ROWS, 3), _unit_dirs(N_ROWS)
    enc = field.density_net.encoding
    sigma, rgb = triton_nerf_head.field_head(points, dirs, field.density_net.network, field.colour_net, encoding=enc)
    expected_sigma, expected_rgb = field_head(enc(points), dirs, field.density_net.network, field.colour_net)
    torch.testing.assert_close(sigma, expected_sigma, **TOLERANCE)
    torch.testing.assert_close(rgb, expected_rgb, **TOLERANCE)
    assert expected_sigma.std() > 1e-2 and expected_rgb.std(0).min() > 1e-3  # varied points, not one constant


def test_field_head_reads_density_column_zero_and_orders_h_before_sh():
    """Density is exp of h's first column and the colour input is [h, SH]: a kernel taking another column or
    swapping the halves differs from the twin far beyond the tolerance."""
    field = _field()
    features, dirs = _features(field), _unit_dirs(N_ROWS)
    sigma, rgb = triton_nerf_head.field_head(features, dirs, field.density_net.network, field.colour_net)
    h = field.density_net.network(features)
    torch.testing.assert_close(sigma, torch.exp(h[:, 0]), **TOLERANCE)
    assert (sigma - torch.exp(h[:, 1])).abs().max() > 1000 * TOLERANCE["atol"]
    swapped = field.colour_net(torch.cat([spherical_harmonics(dirs), h], dim=1))
    assert (rgb - swapped).abs().max() > 1000 * TOLERANCE["atol"]


@pytest.mark.parametrize("encode", [False, True])
def test_field_head_of_no_rows(encode):
    field = _field()
    enc = field.density_net.encoding if encode else None
    x = torch.zeros(0, 3) if encode else _features(field)[:0]
    sigma, rgb = triton_nerf_head.field_head(x, torch.zeros(0, 3), field.density_net.network, field.colour_net,
                                             encoding=enc)
    assert sigma.shape == (0,) and rgb.shape == (0, 3)


def test_field_head_rejects_mismatched_shapes():
    field = _field()
    density_mlp, colour_net, enc = field.density_net.network, field.colour_net, field.density_net.encoding
    with pytest.raises(ValueError, match="features must have shape"):
        triton_nerf_head.field_head(torch.zeros(4, 8), _unit_dirs(4), density_mlp, colour_net)
    with pytest.raises(ValueError, match="points must have shape"):
        triton_nerf_head.field_head(torch.zeros(4, 2), _unit_dirs(4), density_mlp, colour_net, encoding=enc)
    with pytest.raises(ValueError, match="dirs must have shape"):
        triton_nerf_head.field_head(torch.zeros(4, 16), _unit_dirs(5), density_mlp, colour_net)
    with pytest.raises(ValueError, match="density network with a power-of-two"):
        triton_nerf_head.field_head(torch.zeros(4, 16), _unit_dirs(4), density_mlp,
                                    Network(20, 3, mlp_preset(2)))


@pytest.mark.parametrize("setting", [{"ENCODE_IN_HEAD": False}, {"ENCODE_IN_HEAD": True},
                                     {"HEAD_PERSISTENT": True, "HEAD_SH_JOINED": True, "HEAD_RGB_HALF": True}],
                         ids=lambda v: "+".join(v))
def test_fused_query_matches_stage_query(setting, monkeypatch):
    for name, value in setting.items():
        monkeypatch.setattr(triton_nerf_head, name, value)
    field = _field()
    points, dirs = torch.rand(N_ROWS, 3), _unit_dirs(N_ROWS)
    sigma, rgb = field.query(points, dirs, fused=True)
    expected_sigma, expected_rgb = field.query(points, dirs, fused=False)
    assert expected_rgb.dtype == torch.float32  # the unfused query never takes the knob
    torch.testing.assert_close(sigma, expected_sigma, **TOLERANCE)
    if setting.get("HEAD_RGB_HALF"):
        assert rgb.dtype == torch.float16
        expected_rgb = expected_rgb.half()
    torch.testing.assert_close(rgb, expected_rgb, **({} if rgb.dtype == torch.float16 else TOLERANCE))
    assert expected_rgb.std(0).min() > 1e-3  # the comparison covers varied colours, not one constant
