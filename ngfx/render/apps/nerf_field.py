"""instant-ngp's NeRF network: hash-grid density MLP + spherical-harmonics colour MLP, with named stages.

density: grid encoding of x in [0, 1]^3 -> 64-wide MLP (1 hidden layer) -> 16 outputs, the first a
log-density (``trunc_exp``); colour: the 16 density outputs + SH degree 4 of the view direction (16) ->
64-wide MLP (2 hidden layers) -> sigmoid RGB.
"""

from __future__ import annotations

import torch
from torch import nn

from ngfx.encodings import Network, NetworkWithInputEncoding
from ngfx.render import stages
from ngfx.render.apps.presets import mlp_preset
from ngfx.render.ops.nerf_head import field_head, trunc_exp
from ngfx.render.ops.sh import colour_input

N_DENSITY_OUTPUTS = 16
SH_DEGREE = 4
# what the fused field head kernel does in one launch, as its trace stage declares it
HEAD_FUSED = "density_mlp+exp+sh+color_mlp"


def _nbytes(*tensors: torch.Tensor) -> float:
    return float(sum(t.numel() * t.element_size() for t in tensors))


class NerfField(nn.Module):
    """Points in the unit cube [N, 3] and unit directions [N, 3] -> density [N], colour [N, 3]."""

    def __init__(self, encoding_config: dict):
        super().__init__()
        self.density_net = NetworkWithInputEncoding(3, N_DENSITY_OUTPUTS, encoding_config, mlp_preset(1))
        self.colour_net = Network(N_DENSITY_OUTPUTS + SH_DEGREE ** 2, 3, mlp_preset(2, output_activation="Sigmoid"))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3] in [0, 1]^3 -> [N] density (differentiable)."""
        return trunc_exp(self.density_net(x)[:, 0].float())

    def forward(self, x: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return field_head(self.density_net.encoding(x), dirs, self.density_net.network, self.colour_net)

    def _attrs(self) -> dict:
        c = self.density_net.encoding.cfg
        return {"app": "nerf", "otype": c.grid_type, "n_levels": c.n_levels,
                "n_features_per_level": c.n_features_per_level, "log2_hashmap_size": c.log2_hashmap_size,
                "n_dims": 3}

    @staticmethod
    def _flops(net: Network, n: int) -> float:
        return 2.0 * n * sum(o * i for o, i in net.cfg.layer_shapes)

    @torch.no_grad()
    def query(self, x: torch.Tensor, dirs: torch.Tensor, fused: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: the fastest path for a render, its kernels as named stages while recording.

        ``fused`` runs the density MLP and the colour head (density exp, SH of the direction, colour MLP) in one
        Triton kernel (:func:`ngfx.render.ops.triton_nerf_head.field_head`), after the grid kernel or, with
        ``triton_nerf_head.ENCODE_IN_HEAD``, encoding in the same kernel; recorded, each kernel is a stage
        (:meth:`_recorded_fused`). Unfused, its twin runs; recorded, encoding, density MLP, SH and colour MLP are
        stages of their own (the paper's unfused baseline).
        """
        enc, density_mlp = self.density_net.encoding, self.density_net.network
        if not stages.is_recording():  # a stage records nothing then: no stage bookkeeping on a render's hot path
            if not fused:
                return field_head(enc(x), dirs, density_mlp, self.colour_net)
            from ngfx.encodings.triton_mlp import operand_dtype
            from ngfx.render.ops import triton_nerf_head  # imports triton

            if triton_nerf_head.ENCODE_IN_HEAD:
                return triton_nerf_head.field_head(x, dirs, density_mlp, self.colour_net, encoding=enc)
            # fp16 features (fp32 under the interpreter): half the bytes to HBM and back
            return triton_nerf_head.field_head(enc.features(x, operand_dtype(x.device)), dirs, density_mlp,
                                               self.colour_net)
        n, attrs = x.shape[0], self._attrs()
        c = enc.cfg
        grid_bytes = n * c.n_levels * 8 * c.n_features_per_level * 4.0
        if fused:
            return self._recorded_fused(x, dirs, attrs, grid_bytes)
        with stages.stage("nerf.density_encoding", "encoding", n_inputs=n, bytes_read=n * 12.0 + grid_bytes,
                          bytes_written=n * enc.n_output_dims * 4.0, **attrs):
            features = enc(x)
        with stages.stage("nerf.density_mlp", "mlp", n_inputs=n, flops=self._flops(density_mlp, n),
                          bytes_read=features.numel() * 4.0, bytes_written=n * 64.0, **attrs):
            h = density_mlp(features).float()
        # The view-direction SH encoding is no grid: the NGPC's encoding engine does not run it, the SMs do.
        with stages.stage("nerf.dir_encoding", "rest", n_inputs=n, bytes_read=n * 12.0, bytes_written=n * 64.0,
                          app="nerf", otype="SphericalHarmonics", n_dims=3):
            features = colour_input(h, dirs)
        with stages.stage("nerf.color_mlp", "mlp", n_inputs=n, flops=self._flops(self.colour_net, n),
                          bytes_read=n * 128.0, bytes_written=n * 12.0, app="nerf"):
            rgb = self.colour_net(features).float()
        return trunc_exp(h[:, 0]), rgb

    def _recorded_fused(self, x: torch.Tensor, dirs: torch.Tensor, attrs: dict,
                        grid_bytes: float) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`query`'s fused path as the stages of the kernels it runs: the grid encoding, then the field head,
        one MLP stage with both networks' layers that declares what it fused (:data:`HEAD_FUSED`), so the simulator
        moves it to the NGPC's MLP engine whole and speeds none of it up as rest work. With ``ENCODE_IN_HEAD`` the
        one kernel also encodes: a rest stage that fused the MLPs, which the simulator replays as timed (the trace
        is labelled ``per_ray``). Bytes: each kernel's inputs and outputs as they are (fp16 features on a GPU)."""
        from ngfx.encodings.triton_mlp import operand_dtype
        from ngfx.render.ops import triton_nerf_head  # imports triton

        enc, density_mlp = self.density_net.encoding, self.density_net.network
        n = x.shape[0]
        flops = self._flops(density_mlp, n) + self._flops(self.colour_net, n)
        if triton_nerf_head.ENCODE_IN_HEAD:
            with stages.stage("nerf.field_head", "rest", n_inputs=n, flops=flops,
                              bytes_read=_nbytes(x, dirs) + grid_bytes, app="nerf",
                              fused="grid_encoding+" + HEAD_FUSED) as record:
                sigma, rgb = triton_nerf_head.field_head(x, dirs, density_mlp, self.colour_net, encoding=enc)
        else:
            with stages.stage("nerf.density_encoding", "encoding", n_inputs=n, bytes_read=_nbytes(x) + grid_bytes,
                              **attrs) as record:
                features = enc.features(x, operand_dtype(x.device))
            record.bytes_written = _nbytes(features)
            layers = [list(shape) for shape in density_mlp.cfg.layer_shapes + self.colour_net.cfg.layer_shapes]
            with stages.stage("nerf.field_head", "mlp", n_inputs=n, flops=flops, bytes_read=_nbytes(features, dirs),
                              mlp_layers=layers, fused=HEAD_FUSED, **attrs) as record:
                sigma, rgb = triton_nerf_head.field_head(features, dirs, density_mlp, self.colour_net)
        record.bytes_written = _nbytes(sigma, rgb)
        return sigma, rgb
