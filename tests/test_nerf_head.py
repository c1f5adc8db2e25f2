"""NeRF's fused colour head (triton_nerf_head) equals its PyTorch twin under the interpreter (fp32)."""

import pytest
import torch

from ngfx.render.apps.nerf_field import NerfField, colour_head
from ngfx.render.apps.presets import encoding_preset
from ngfx.render.ops import triton_nerf_head
from ngfx.render.ops.sh import spherical_harmonics

N_ROWS = 257  # not a multiple of the kernel's block
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _field() -> NerfField:
    return NerfField(encoding_preset("hashgrid", 3, "tiny"))


def _unit_dirs(n: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, 3), dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_colour_head_matches_twin(dtype):
    field = _field()
    h, dirs = (2.0 * torch.randn(N_ROWS, 16)).to(dtype), _unit_dirs(N_ROWS)
    sigma, rgb = triton_nerf_head.colour_head(h, dirs, field.colour_net)
    expected_sigma, expected_rgb = colour_head(h, dirs, field.colour_net)
    assert sigma.dtype == rgb.dtype == torch.float32
    assert sigma.shape == (N_ROWS,) and rgb.shape == (N_ROWS, 3)
    torch.testing.assert_close(sigma, expected_sigma, **TOLERANCE)
    torch.testing.assert_close(rgb, expected_rgb, **TOLERANCE)


def test_colour_head_orders_features_before_sh():
    """The colour input is [h, SH]: with the halves swapped the colours differ far beyond the tolerance."""
    field = _field()
    h, dirs = 2.0 * torch.randn(N_ROWS, 16), _unit_dirs(N_ROWS)
    _, rgb = triton_nerf_head.colour_head(h, dirs, field.colour_net)
    swapped = field.colour_net(torch.cat([spherical_harmonics(dirs), h], dim=1))
    assert (rgb - swapped).abs().max() > 1000 * TOLERANCE["atol"]


def test_colour_head_of_no_rows():
    field = _field()
    sigma, rgb = triton_nerf_head.colour_head(torch.zeros(0, 16), torch.zeros(0, 3), field.colour_net)
    assert sigma.shape == (0,) and rgb.shape == (0, 3)


def test_colour_head_rejects_mismatched_shapes():
    field = _field()
    with pytest.raises(ValueError, match="feature width"):
        triton_nerf_head.colour_head(torch.zeros(4, 8), _unit_dirs(4), field.colour_net)
    with pytest.raises(ValueError, match="dirs must have shape"):
        triton_nerf_head.colour_head(torch.zeros(4, 16), _unit_dirs(5), field.colour_net)


def test_fused_query_matches_stage_query():
    field = _field()
    with torch.no_grad():
        field.density_net.encoding.params.mul_(1e3)  # densities and colours that vary across the points
    points, dirs = torch.rand(N_ROWS, 3), _unit_dirs(N_ROWS)
    sigma, rgb = field.query(points, dirs, fused=True)
    expected_sigma, expected_rgb = field.query(points, dirs, fused=False)
    torch.testing.assert_close(sigma, expected_sigma, **TOLERANCE)
    torch.testing.assert_close(rgb, expected_rgb, **TOLERANCE)
    assert expected_rgb.std(0).min() > 1e-3  # the comparison covers varied colours, not one constant
