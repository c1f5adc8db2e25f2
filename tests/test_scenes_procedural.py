"""Procedural scenes: the gigapixel image is a tile-consistent function never held whole; CSG SDF and cloud values."""

import math
import resource

import pytest
import torch

from scenes.cloud import MAX_DENSITY, cloud
from scenes.procedural_image import ProceduralImage
from scenes.sdf_csg import BOX, csg_sdf


def test_tile_equals_window_of_larger_tile():
    image = ProceduralImage(40000, 25000)
    big = image.tile(31000, 17000, 64, 48)
    small = image.tile(31010, 17005, 16, 8)
    torch.testing.assert_close(small, big[5:13, 10:26], rtol=0, atol=0)


def test_gigapixel_tiles_without_materialising_the_image():
    image = ProceduralImage(40000, 25000)  # 1e9 pixels: 12 GB as float32 RGB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    corner = image.tile(39936, 24936, 64, 64)  # the far corner, exactly at the image's edge
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert corner.shape == (64, 64, 3) and grown_mib < 100
    assert 0.0 <= float(corner.min()) and float(corner.max()) <= 1.0
    with pytest.raises(ValueError, match="outside"):
        image.tile(39990, 0, 64, 64)


def test_image_has_detail_at_several_scales():
    image = ProceduralImage(1024, 1024)
    coarse = image.tile(0, 0, 1024, 1024)
    assert float(coarse.std()) > 0.15  # not a flat field
    # the soft disc at (0.62, 0.45) of radius 0.025 is white inside (less the fine stripes)
    torch.testing.assert_close(image.sample(torch.tensor([[0.62, 0.45]]))[0], torch.ones(3), atol=0.1, rtol=0)


def test_csg_sdf_known_points_and_unit_gradient():
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3], [0.68, 0.0, 0.0], [0.95, 0.95, 0.95]])
    d = csg_sdf(points)
    assert d[0] < 0 and d[1] > 0 and d[3] > 0  # body inside, carved sphere empty, corner outside
    assert math.isclose(float(d[2]), -0.1, abs_tol=1e-5)  # on the torus' core circle: minus its minor radius
    p = (torch.rand(4000, 3) * 2 - 1).requires_grad_(True)
    (g,) = torch.autograd.grad(csg_sdf(p).sum(), p)
    outside = csg_sdf(p).detach() > 0.05
    assert float(g[outside].norm(dim=1).median()) == pytest.approx(1.0, abs=1e-3)
    lo, hi = torch.tensor(BOX)
    inside = csg_sdf(p).detach() < 0
    assert bool(((p[inside] >= lo - 1e-3) & (p[inside] <= hi + 1e-3)).all())


def test_cloud_density_and_colour_ranges():
    x = torch.rand(20000, 3) * 2 - 1
    sigma, rgb = cloud(x)
    sigma2, _ = cloud(x)
    torch.testing.assert_close(sigma, sigma2)  # deterministic
    assert float(sigma.min()) >= 0 and float(sigma.max()) <= MAX_DENSITY
    assert 0.05 < float((sigma > 0).float().mean()) < 0.6
    assert float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    corners = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, -1.0, 1.0]])
    assert float(cloud(corners)[0].max()) == 0.0  # falls to zero at the box
    assert float(cloud(torch.zeros(1, 3))[0]) > 0.0
    assert float(cloud(x, seed=1)[0].sub(sigma).abs().max()) > 0.0
