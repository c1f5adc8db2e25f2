"""NeRF's field head in one kernel: density MLP, density and colour MLP per block of rows, h kept in registers.

:func:`field_head` is the Triton twin of :func:`ngfx.render.ops.nerf_head.field_head`
(``h = density_mlp(features)``, ``exp(h[:, 0])`` and ``colour_net([h, SH(dirs)])``). Run apart (as until a1f223e and
1085b31), the density MLP wrote h [S, 16] fp32 to HBM and a colour-head kernel read it back (an H200 1080p Lego
frame, 20 M samples: 0.93 ms for the density MLP, 1.94 ms for that head). Here each block of rows reads its encoded features and directions
once, runs the density MLP (:func:`ngfx.encodings.triton_mlp.mlp_block`), takes the log-density from h's first
column, computes the SH basis in registers and feeds h and the SH tile to the colour network's first layer as two
``tl.dot``s against the two halves of its weights (the input is never concatenated), then runs the rest of the
colour MLP and writes density and colour. Inference only.

With an ``encoding``, the kernel takes unit-cube points instead of features and encodes them itself
(:func:`ngfx.encodings.triton_grid.encode_block`), so the features never reach HBM either. Grid gathers are
latency bound and want many rows in flight, the MLPs want registers; the fused grid + MLP kernel
(:func:`ngfx.encodings.triton_mlp.fused_grid_mlp_forward`) ran slower on the H200 than the grid kernel and the
MLP kernel apart, and so did this one: :data:`ENCODE_IN_HEAD` (which of the two :meth:`NerfField.query` runs) is off.
H200, Lego (dd41f92, BENCHMARKS.md): 12.25 / 41.42 ms at 1080p / 4K with the grid kernel first, 16.48 / 56.50 ms
encoding in the head.

Features in, timed alone on the H200 (2^24 rows of Lego-shaped networks, 64 rows x 2 warps, fp16 operands): 1.42 ms
at 120 registers with :func:`ngfx.render.ops.triton_sh.sh_basis` joining the SH tile from per-row columns, against
2.10 ms at 182 registers with a chain of selects over the tile (the same outputs to the bit; the Lego frame at 4K
35.11 -> 32.78 ms, at 1080p 10.43 / 10.47 ms). The head is bound by how many programs a multiprocessor holds, not by
reading its weights: capped at 128 registers the select form ran 1.68 ms, the joined one gained nothing from caps
(96: 1.42 ms, spilling). A persistent head loading both networks' weights (20 KB) once per program needed 255
registers and gained nothing (2.11 ms with the select form, 1.49 joined), so each program reads them. Colour
written as float16 sped up the composite kernel (0.276 -> 0.257 ms for 20.4 M samples) but not the frame (4K 32.78
-> 33.08 ms), so colour is float32. Other shapes: 32 x 2 2.30 ms, 32 x 1 1.83, 16 x 1 3.07; the wgmma shapes still
fail (64 x 4 faulted, 128 x 4 gave NaNs) or lose (128 x 8 1.56 ms).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.encodings import Encoding, Network, triton_grid, triton_mlp
from ngfx.render.ops.triton_sh import sh_basis

N_SH = 16  # SH degree 4, as the colour input has it
# NerfField.query's fused path: True encodes the points inside the head kernel, False runs the grid kernel first
ENCODE_IN_HEAD = False
# rows a head program takes and its warps (features in): under 64 rows per 4 warps, as triton_mlp's MLP_BLOCK (wgmma
# shapes broke on the H200 with Triton 3.6); timed on the H200 by bench_render --knobs
HEAD_BLOCK = triton_mlp.MLP_BLOCK
HEAD_WARPS = triton_mlp.MLP_WARPS
# constexprs of the encoding when the kernel reads features (a pruned constexpr branch never uses them)
_NO_ENCODING = dict(D=0, F=0, LEVELS=0, N_LEVELS=0, INTERP=0, PACKED=False)


@triton.jit
def _field_head_kernel(x_ptr, dirs_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr,
                       density_in_ptr, density_hidden_ptr, density_out_ptr, w_in_ptr, w_hidden_ptr, w_out_ptr,
                       sigma_ptr, rgb_ptr, n_rows, n_in, n_out,
                       ENCODE: tl.constexpr, D: tl.constexpr, F: tl.constexpr, LEVELS: tl.constexpr,
                       N_LEVELS: tl.constexpr, INTERP: tl.constexpr, PACKED: tl.constexpr, KIN: tl.constexpr,
                       DENSITY_WIDTH: tl.constexpr, DENSITY_OUT: tl.constexpr, DENSITY_N_HIDDEN: tl.constexpr,
                       DENSITY_ACT: tl.constexpr, DENSITY_OUT_ACT: tl.constexpr,
                       WIDTH: tl.constexpr, OUT: tl.constexpr, N_HIDDEN: tl.constexpr, ACT: tl.constexpr,
                       OUT_ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < n_rows
    operand = w_out_ptr.dtype.element_ty
    if ENCODE:  # x holds points [n_rows, D]; KIN == LEVELS * F
        features = triton_grid.encode_block(x_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, rows, mask,
                                            D, F, LEVELS, N_LEVELS, INTERP, PACKED)
    else:  # x holds features [n_rows, n_in], padded to KIN columns
        cols_in = tl.arange(0, KIN)
        features = tl.load(x_ptr + rows.to(tl.int64)[:, None] * n_in + cols_in[None, :],
                           mask=mask[:, None] & (cols_in[None, :] < n_in), other=0.0)
    # h [BLOCK, DENSITY_OUT] float32, as the density MLP kernel would write it
    h = triton_mlp.mlp_block(features.to(operand), density_in_ptr, density_hidden_ptr, density_out_ptr, KIN,
                             DENSITY_WIDTH, DENSITY_OUT, DENSITY_N_HIDDEN, DENSITY_ACT, DENSITY_OUT_ACT, PRECISION)
    tl.store(sigma_ptr + rows, tl.exp(triton_mlp.tile_column(h, 0, DENSITY_OUT)), mask=mask)
    x = tl.load(dirs_ptr + rows * 3, mask=mask, other=0.0)
    y = tl.load(dirs_ptr + rows * 3 + 1, mask=mask, other=0.0)
    z = tl.load(dirs_ptr + rows * 3 + 2, mask=mask, other=0.0)
    # first layer: [h, SH] @ w_in = h @ w_in[:P] + SH @ w_in[P:] (P = DENSITY_OUT; sh_basis gives the 16 SH columns)
    pre = tl.dot(h.to(operand), triton_mlp._load_matrix(w_in_ptr, DENSITY_OUT, WIDTH), input_precision=PRECISION)
    pre = tl.dot(sh_basis(x, y, z).to(operand),
                 triton_mlp._load_matrix(w_in_ptr + DENSITY_OUT * WIDTH, 16, WIDTH),
                 pre, input_precision=PRECISION)
    hidden = triton_mlp._activation(pre, ACT).to(operand)
    # the remaining layers are an MLP whose input layer is the first hidden layer
    rgb = triton_mlp.mlp_block(hidden, w_hidden_ptr, w_hidden_ptr + WIDTH * WIDTH, w_out_ptr, WIDTH, WIDTH, OUT,
                               N_HIDDEN - 1, ACT, OUT_ACT, PRECISION)
    cols_out = tl.arange(0, OUT)
    tl.store(rgb_ptr + rows[:, None] * n_out + cols_out[None, :], rgb, mask=mask[:, None] & (cols_out[None, :] < n_out))


def _check_networks(density_mlp: Network, colour_net: Network) -> None:
    p, colour = density_mlp.cfg.n_output_dims, colour_net.cfg
    if p < triton_mlp.MIN_DOT_WIDTH or p & (p - 1) or colour.n_input_dims != p + N_SH or colour.n_hidden_layers < 1:
        raise ValueError(f"field_head: needs a density network with a power-of-two (>= {triton_mlp.MIN_DOT_WIDTH}) "
                         f"number of outputs and a colour network with hidden layers reading those and {N_SH} SH "
                         f"coefficients; got {p} density outputs for a colour network of {colour.n_input_dims} "
                         f"inputs, {colour.n_hidden_layers} hidden")


def field_head(x: torch.Tensor, dirs: torch.Tensor, density_mlp: Network, colour_net: Network,
               encoding: Encoding | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(density [S] float32, colour [S, n_output_dims] float32) of NeRF's field; ``S`` up to 2^24 rows.

    Args:
        x: encoded features [S, density_mlp's inputs] (any float dtype), or with ``encoding`` unit-cube points
            [S, D] that the kernel encodes.
        dirs: unit view directions [S, 3].
        density_mlp: the density network (its first output is the log-density); colour_net: the colour network
            on [density outputs, SH(dirs)].
    """
    _check_networks(density_mlp, colour_net)
    n_in = density_mlp.cfg.n_input_dims
    if encoding is not None and encoding.n_output_dims != n_in:
        raise ValueError(f"field_head: the encoding gives {encoding.n_output_dims} features, the density network "
                         f"takes {n_in}")
    what, width = ("points", encoding.n_input_dims) if encoding is not None else ("features", n_in)
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"field_head: {what} must have shape [S, {width}], got {list(x.shape)}")
    n = x.shape[0]
    if dirs.shape != (n, 3):
        raise ValueError(f"field_head: dirs must have shape [{n}, 3], got {list(dirs.shape)}")
    sigma = torch.empty(n, device=x.device, dtype=torch.float32)
    rgb = torch.empty(n, colour_net.cfg.n_output_dims, device=x.device, dtype=torch.float32)
    if not n:
        return sigma, rgb
    dtype = triton_mlp.operand_dtype(x.device)
    if encoding is None:
        grid_args, grid_constants = (x, x, x, x), _NO_ENCODING
        kin, block, warps = triton_mlp._padded(n_in), HEAD_BLOCK, HEAD_WARPS
    else:
        x = x.float()
        table, packed = triton_grid.forward_table(encoding.params, encoding.cfg, dtype)
        grid_args = (table, *triton_grid.level_metadata(encoding.cfg, x.device))
        grid_constants = dict(triton_grid.kernel_constants(encoding.cfg, min_width=triton_mlp.MIN_DOT_WIDTH),
                              PACKED=packed)
        kin = grid_constants["LEVELS"] * encoding.cfg.n_features_per_level
        block, warps = triton_mlp.FUSED_BLOCK, triton_mlp.FUSED_WARPS
    p = density_mlp.cfg.n_output_dims
    density_weights = triton_mlp.pack_weights(list(density_mlp.weights), density_mlp.cfg, kin, dtype)
    colour_weights = triton_mlp.pack_weights(list(colour_net.weights), colour_net.cfg, p + N_SH, dtype)
    constants = dict(**triton_mlp.mlp_constants(density_mlp.cfg, dtype, "DENSITY_"),
                     **triton_mlp.mlp_constants(colour_net.cfg, dtype))
    _field_head_kernel[(triton.cdiv(n, block),)](
        x.contiguous(), dirs.float().contiguous(), *grid_args, *density_weights, *colour_weights, sigma, rgb, n,
        n_in, colour_net.cfg.n_output_dims, ENCODE=encoding is not None, **grid_constants, KIN=kin, **constants,
        BLOCK=block, num_warps=warps)
    return sigma, rgb
