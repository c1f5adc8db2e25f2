"""Fused Triton MLP and fused grid+MLP vs the PyTorch reference (CPU, TRITON_INTERPRET=1)."""

import pytest
import torch

from ngfx.encodings import NetworkWithInputEncoding, reference, triton_mlp
from ngfx.encodings.config import ACTIVATIONS, parse_grid_config, parse_network_config


def random_weights(cfg):
    return [(torch.randn(n_out, n_in) / n_in**0.5).requires_grad_() for n_out, n_in in cfg.layer_shapes]


MLP_CASES = [  # (inputs, outputs, width, hidden layers, activation, output activation)
    (32, 16, 64, 2, "ReLU", "None"),
    (3, 4, 16, 1, "None", "Sigmoid"),
    (20, 3, 32, 0, "ReLU", "Softplus"),
    (8, 1, 128, 3, "ReLU", "Tanh"),
    (5, 2, 16, 8, "ReLU", "Exponential"),
    (17, 33, 48, 1, "ReLU", "ReLU"),
]


@pytest.mark.parametrize("n_in,n_out,width,n_hidden,act,out_act", MLP_CASES)
def test_mlp_forward_and_gradients_match_reference(n_in, n_out, width, n_hidden, act, out_act):
    cfg = parse_network_config(n_in, n_out, {"n_neurons": width, "n_hidden_layers": n_hidden,
                                             "activation": act, "output_activation": out_act})
    weights = random_weights(cfg)
    x = torch.randn(70, n_in, requires_grad=True)
    out = triton_mlp.mlp_forward(x, weights, cfg)
    expected = reference.mlp_forward(x, weights, cfg)
    assert out.dtype == torch.float32 and out.shape == (70, n_out)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    v = torch.randn_like(out)
    grads = torch.autograd.grad((out * v).sum(), [x, *weights])
    ref_grads = torch.autograd.grad((expected * v).sum(), [x, *weights])
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-5)


def test_weight_gradients_without_input_gradient():
    cfg = parse_network_config(12, 3, {"n_neurons": 32, "n_hidden_layers": 2, "output_activation": "Exponential"})
    weights = random_weights(cfg)
    x = torch.randn(150, 12)  # no gradient: the kernel skips dL/dx
    v = torch.randn(150, 3)
    grads = torch.autograd.grad((triton_mlp.mlp_forward(x, weights, cfg) * v).sum(), weights)
    ref_grads = torch.autograd.grad((reference.mlp_forward(x, weights, cfg) * v).sum(), weights)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_output_activation(activation):
    cfg = parse_network_config(16, 4, {"n_neurons": 16, "n_hidden_layers": 1, "output_activation": activation})
    weights = [w * 4 for w in random_weights(cfg)]  # large pre-activations reach softplus' threshold
    x = torch.randn(64, 16)
    torch.testing.assert_close(triton_mlp.mlp_forward(x, weights, cfg), reference.mlp_forward(x, weights, cfg),
                               rtol=1e-5, atol=1e-5)


def test_fp16_operands_within_fp16_error():
    cfg = parse_network_config(32, 16, {"n_neurons": 64, "n_hidden_layers": 2})
    weights = random_weights(cfg)
    x = torch.randn(64, 32)
    out = triton_mlp.mlp_forward(x, weights, cfg, precision=torch.float16)
    expected = reference.mlp_forward(x, weights, cfg)
    rel = (out - expected).norm() / expected.norm()
    assert 0 < rel < 5e-3


def test_wrong_weight_shapes_raise():
    cfg = parse_network_config(8, 4, {"n_neurons": 16, "n_hidden_layers": 1})
    with pytest.raises(ValueError, match="weight shapes"):
        triton_mlp.mlp_forward(torch.randn(4, 8), [torch.randn(16, 8), torch.randn(5, 16)], cfg)


FUSED_CASES = [  # (grid type, dims, interpolation, levels, features, hidden layers, outputs)
    ("HashGrid", 3, "Linear", 6, 2, 2, 3),
    ("DenseGrid", 2, "Smoothstep", 3, 2, 1, 16),
    ("TiledGrid", 3, "Nearest", 5, 4, 0, 4),
    ("HashGrid", 2, "Linear", 2, 1, 1, 1),
]


@pytest.mark.parametrize("otype,n_dims,interpolation,n_levels,n_features,n_hidden,n_out", FUSED_CASES)
def test_fused_grid_mlp_matches_reference(otype, n_dims, interpolation, n_levels, n_features, n_hidden, n_out):
    grid_cfg = parse_grid_config(n_dims, {"otype": otype, "n_levels": n_levels, "n_features_per_level": n_features,
                                          "log2_hashmap_size": 9, "base_resolution": 4, "per_level_scale": 1.6,
                                          "interpolation": interpolation})
    mlp_cfg = parse_network_config(grid_cfg.n_output_dims, n_out, {"n_neurons": 32, "n_hidden_layers": n_hidden})
    params = torch.rand(grid_cfg.n_params) * 2 - 1
    weights = random_weights(mlp_cfg)
    x = torch.rand(100, n_dims)
    out = triton_mlp.fused_grid_mlp_forward(x, params, weights, grid_cfg, mlp_cfg)
    expected = reference.mlp_forward(reference.grid_encode(x, params, grid_cfg), weights, mlp_cfg)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_network_with_input_encoding_on_triton_matches_reference():
    model = NetworkWithInputEncoding(3, 4, {"otype": "HashGrid", "n_levels": 4, "log2_hashmap_size": 8},
                                     {"n_neurons": 16, "n_hidden_layers": 1}, backend="triton")
    with torch.no_grad():
        model.encoding.params.uniform_(-1, 1)
    x = torch.rand(50, 3)
    expected = reference.mlp_forward(reference.grid_encode(x, model.encoding.params, model.encoding.cfg),
                                     list(model.network.weights), model.network.cfg)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    trained = model(x)  # with gradients: same kernels, autograd through both
    torch.testing.assert_close(trained, expected, rtol=1e-4, atol=1e-5)
    trained.sum().backward()
    assert model.encoding.params.grad.abs().sum() > 0


def test_fused_rejects_mismatched_widths():
    grid_cfg = parse_grid_config(3, {"otype": "HashGrid", "n_levels": 4})
    mlp_cfg = parse_network_config(7, 4, {"n_neurons": 16, "n_hidden_layers": 1})
    with pytest.raises(ValueError, match="inputs"):
        triton_mlp.fused_grid_mlp_forward(torch.rand(4, 3), torch.zeros(grid_cfg.n_params),
                                          [torch.zeros(s) for s in mlp_cfg.layer_shapes], grid_cfg, mlp_cfg)
