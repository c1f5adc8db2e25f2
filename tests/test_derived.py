"""Derived tensors (fp16 tables, packed weights) are reused only while their sources are unchanged."""

import torch

from ngfx.encodings.derived import MAX_ENTRIES, derived


def test_reused_until_a_source_changes_in_place():
    w = torch.nn.Parameter(torch.ones(3))
    builds = []

    def build():
        builds.append(1)
        return w.detach() * 2

    first = derived([w], "double", build)
    assert derived([w], "double", build) is first and len(builds) == 1
    with torch.no_grad():
        w.add_(1.0)  # as an optimiser step does
    again = derived([w], "double", build)
    assert len(builds) == 2 and torch.equal(again, torch.full((3,), 4.0))
    torch.optim.SGD([w], lr=0.5).zero_grad()
    w.sum().backward()
    torch.optim.SGD([w], lr=0.5).step()
    assert torch.equal(derived([w], "double", build), torch.full((3,), 3.0)) and len(builds) == 3
    assert derived([w], "other key", build) is not None and len(builds) == 4


def test_fused_adam_steps_are_seen():
    """PyTorch's fused Adam (the training optimiser on CUDA) leaves version counters as they were."""
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([w], lr=0.5, fused=True)
    first = derived([w], "copy", lambda: w.detach().clone())
    w.grad = torch.ones(3)
    version = w._version
    optimizer.step()
    assert w._version == version  # the counter did not move: the cache must not rely on it alone
    torch.testing.assert_close(derived([w], "copy", lambda: w.detach().clone()), w.detach())
    assert not torch.equal(first, w.detach())


def test_a_new_tensor_is_never_served_an_old_entry():
    values = []
    for i in range(3 * MAX_ENTRIES):  # the id of a freed tensor is soon reused by a new one
        w = torch.full((2,), float(i))
        values.append(float(derived([w], "copy", lambda: w.clone())[0]))
        del w
    assert values == [float(i) for i in range(3 * MAX_ENTRIES)]


def test_pack_weights_follows_the_weights():
    from ngfx.encodings import triton_mlp
    from ngfx.encodings.config import parse_network_config

    cfg = parse_network_config(4, 3, {"otype": "FullyFusedMLP", "n_neurons": 16, "n_hidden_layers": 1})
    weights = [torch.nn.Parameter(torch.randn(o, i)) for o, i in cfg.layer_shapes]
    packed = triton_mlp.pack_weights(weights, cfg, 16, torch.float32)
    assert triton_mlp.pack_weights(weights, cfg, 16, torch.float32) is packed
    with torch.no_grad():
        weights[0].mul_(2.0)
    repacked = triton_mlp.pack_weights(weights, cfg, 16, torch.float32)
    torch.testing.assert_close(repacked[0][:4, :], 2 * packed[0][:4, :])
