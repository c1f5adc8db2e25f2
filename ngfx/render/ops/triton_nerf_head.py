"""NeRF's colour head in one kernel: density from the density network's outputs, colour from the colour network.

:func:`colour_head` is the Triton twin of :func:`ngfx.render.apps.nerf_field.colour_head`
(``exp(h[:, 0])`` and ``colour_net([h, SH(dirs)])``). Run apart, that is five kernels: the SH colour input
written to HBM (:func:`ngfx.render.ops.triton_sh.colour_input`, ~1.3 ms of an H200 1080p frame) and read back by
the colour MLP, two float copies (~0.7 ms) and a torch exp (~0.35 ms). Here each block of rows reads h and its
directions once, computes the SH basis in registers and feeds h and the SH tile to the first layer as two
``tl.dot``s against the two halves of its weights (the input is never concatenated), then runs the rest of the
colour MLP (:func:`ngfx.encodings.triton_mlp.mlp_block`) and writes density and colour. Inference only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.encodings import triton_mlp
from ngfx.encodings import Network
from ngfx.render.ops.triton_sh import sh_basis

N_SH = 16  # SH degree 4, as the colour input has it


@triton.jit
def _colour_head_kernel(h_ptr, dirs_ptr, w_in_ptr, w_hidden_ptr, w_out_ptr, sigma_ptr, rgb_ptr, n_rows, n_out,
                        P: tl.constexpr, WIDTH: tl.constexpr, OUT: tl.constexpr, N_HIDDEN: tl.constexpr,
                        ACT: tl.constexpr, OUT_ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < n_rows
    cols = tl.arange(0, P)
    operand = w_out_ptr.dtype.element_ty
    h = tl.load(h_ptr + rows[:, None] * P + cols[None, :], mask=mask[:, None], other=0.0)
    # column 0 again from L1 rather than a reduction over the tile
    log_density = tl.load(h_ptr + rows * P, mask=mask, other=0.0).to(tl.float32)
    tl.store(sigma_ptr + rows, tl.exp(log_density), mask=mask)
    x = tl.load(dirs_ptr + rows * 3, mask=mask, other=0.0)
    y = tl.load(dirs_ptr + rows * 3 + 1, mask=mask, other=0.0)
    z = tl.load(dirs_ptr + rows * 3 + 2, mask=mask, other=0.0)
    # first layer: [h, SH] @ w_in = h @ w_in[:P] + SH @ w_in[P:] (sh_basis gives the 16 SH columns)
    pre = tl.dot(h.to(operand), triton_mlp._load_matrix(w_in_ptr, P, WIDTH), input_precision=PRECISION)
    pre = tl.dot(sh_basis(x, y, z).to(operand), triton_mlp._load_matrix(w_in_ptr + P * WIDTH, 16, WIDTH), pre,
                 input_precision=PRECISION)
    hidden = triton_mlp._activation(pre, ACT).to(operand)
    # the remaining layers are an MLP whose input layer is the first hidden layer
    rgb = triton_mlp.mlp_block(hidden, w_hidden_ptr, w_hidden_ptr + WIDTH * WIDTH, w_out_ptr, WIDTH, WIDTH, OUT,
                               N_HIDDEN - 1, ACT, OUT_ACT, PRECISION)
    cols_out = tl.arange(0, OUT)
    tl.store(rgb_ptr + rows[:, None] * n_out + cols_out[None, :], rgb, mask=mask[:, None] & (cols_out[None, :] < n_out))


def colour_head(h: torch.Tensor, dirs: torch.Tensor, colour_net: Network) -> tuple[torch.Tensor, torch.Tensor]:
    """Density outputs h [S, P] (P a power of two >= 16, any float dtype) and unit directions [S, 3]
    -> (density [S], colour [S, n_output_dims]) float32. ``S`` up to 2^24 (int32 offsets)."""
    cfg = colour_net.cfg
    n, p = h.shape
    if p < triton_mlp.MIN_DOT_WIDTH or p & (p - 1) or cfg.n_input_dims != p + N_SH or cfg.n_hidden_layers < 1:
        raise ValueError(f"colour_head: needs a power-of-two (>= {triton_mlp.MIN_DOT_WIDTH}) feature width and a "
                         f"colour network with hidden layers reading those and {N_SH} SH coefficients; got "
                         f"{p} features for a network of {cfg.n_input_dims} inputs, {cfg.n_hidden_layers} hidden")
    if dirs.shape != (n, 3):
        raise ValueError(f"colour_head: dirs must have shape [{n}, 3], got {list(dirs.shape)}")
    sigma = torch.empty(n, device=h.device, dtype=torch.float32)
    rgb = torch.empty(n, cfg.n_output_dims, device=h.device, dtype=torch.float32)
    if n:
        dtype = triton_mlp.operand_dtype(h.device)
        packed_weights = triton_mlp.pack_weights(list(colour_net.weights), cfg, p + N_SH, dtype)
        _colour_head_kernel[(triton.cdiv(n, triton_mlp.MLP_BLOCK),)](
            h.contiguous(), dirs.float().contiguous(), *packed_weights, sigma, rgb, n, cfg.n_output_dims, P=p,
            **triton_mlp.mlp_constants(cfg, dtype), BLOCK=triton_mlp.MLP_BLOCK, num_warps=triton_mlp.MLP_WARPS)
    return sigma, rgb
