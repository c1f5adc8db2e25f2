"""The optional tiny-cuda-nn backend: compared with the reference where tinycudann imports, refused where not."""

import pytest
import torch

from ngfx.encodings import Encoding, reference
from ngfx.encodings.grid import tcnn_available

CONFIG = {"otype": "HashGrid", "n_levels": 8, "n_features_per_level": 2, "log2_hashmap_size": 14,
          "base_resolution": 16, "per_level_scale": 1.5}


@pytest.mark.skipif(tcnn_available(), reason="tinycudann imports here; the refusal cannot be observed")
def test_tcnn_backend_refused_clearly_when_absent():
    enc = Encoding(3, CONFIG, backend="tcnn")
    with pytest.raises(ValueError, match="tinycudann"):
        enc(torch.rand(8, 3))


@pytest.mark.skipif(not tcnn_available(), reason="tinycudann does not import")
def test_tcnn_backend_matches_reference():
    enc = Encoding(3, CONFIG, backend="tcnn").cuda()
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = torch.rand(4096, 3, device="cuda")
    out = enc(x)
    expected = reference.grid_encode(x, enc.params, enc.cfg)
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=2e-3)  # tiny-cuda-nn interpolates in fp16
    v = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * v).sum(), enc.params)
    (ref,) = torch.autograd.grad((expected * v).sum(), enc.params)
    torch.testing.assert_close(grad, ref, rtol=1e-2, atol=1e-2)
