"""NeRF's fused field head (triton_nerf_head) equals its PyTorch twin under the interpreter (fp32)."""

import pytest
import torch

from ngfx.encodings import Network
from ngfx.render.apps.nerf_field import NerfField
from ngfx.render.ops.nerf_head import field_head
from ngfx.render.apps.presets import encoding_preset, mlp_preset
from ngfx.render.ops import triton_nerf_head
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


@pytest.mark.parametrize("encode_in_head", [False, True])
def test_fused_query_matches_stage_query(encode_in_head, monkeypatch):
    monkeypatch.setattr(triton_nerf_head, "ENCODE_IN_HEAD", encode_in_head)
    field = _field()
    points, dirs = torch.rand(N_ROWS, 3), _unit_dirs(N_ROWS)
    sigma, rgb = field.query(points, dirs, fused=True)
    expected_sigma, expected_rgb = field.query(points, dirs, fused=False)
    torch.testing.assert_close(sigma, expected_sigma, **TOLERANCE)
    torch.testing.assert_close(rgb, expected_rgb, **TOLERANCE)
    assert expected_rgb.std(0).min() > 1e-3  # the comparison covers varied colours, not one constant
