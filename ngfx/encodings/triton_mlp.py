"""Fully fused small MLPs in Triton, beside :func:`ngfx.encodings.reference.mlp_forward`.

One program pushes ``BLOCK`` rows through every layer with ``tl.dot`` on [BLOCK, width] tiles; the
activations never leave registers/shared memory and the (tiny) weights are re-read from L2 per program.
Widths are zero-padded to powers of two >= 16 (``tl.dot``'s minimum), so 3 outputs or 32 inputs just work.

Precision: on CUDA the operands are fp16 with fp32 accumulation (tiny-cuda-nn's choice). Measured against
the fp32 reference: forward rel. error 4-6e-4 on the H200; the fp16 backward's dL/dfeatures and table
gradient 1.0-1.5e-2 (CPU and H200 alike), bf16 3.1e-2, so fp16. Under the CPU interpreter everything is fp32
with IEEE dots, so tests compare tightly against the reference.

Backward: the weight gradient is a reduction over all N rows, i.e. a GEMM, so the backward recomputes the
forward through cuBLAS at the same operand precision and lets autograd run it; the kernel is the forward.

:func:`fused_grid_mlp_forward` runs the grid encoding (``triton_grid.encode_block``) and the MLP in one
kernel: the encoded features go from the gather loop straight into the first ``tl.dot``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.encodings import reference, triton_grid
from ngfx.encodings.config import ACTIVATIONS, GridConfig, MLPConfig

MIN_DOT_WIDTH = 16
# Launch shapes with fewer than 64 rows per 4-warp group (the mma.sync path). On the H200 (Triton 3.6) every
# shape that selects wgmma (BLOCK >= 64 with >= 4 warps) gave NaNs or an illegal memory access, in both
# kernels; the benchmark probes shapes in subprocesses. Fastest safe shapes measured there: MLP 64 x 2 warps
# (0.176 ms for 2^21 rows, 32 -> 64 -> 16), fused 32 x 4 warps.
MLP_BLOCK = 64
MLP_WARPS = 2
FUSED_BLOCK = 32
FUSED_WARPS = 4


def operand_dtype(device: torch.device) -> torch.dtype:
    """fp16 operands on the GPU, fp32 under the interpreter."""
    return torch.float16 if device.type == "cuda" else torch.float32


def _padded(width: int) -> int:
    return max(MIN_DOT_WIDTH, triton.next_power_of_2(width))


@triton.jit
def _activation(z, CODE: tl.constexpr):
    # codes follow config.ACTIVATIONS: None, ReLU, Sigmoid, Exponential, Softplus, Tanh
    if CODE == 1:
        z = tl.maximum(z, 0.0)
    elif CODE == 2:
        z = tl.sigmoid(z)
    elif CODE == 3:
        z = tl.exp(z)
    elif CODE == 4:
        z = tl.where(z > 20.0, z, tl.log(1.0 + tl.exp(tl.minimum(z, 20.0))))  # torch's threshold=20
    elif CODE == 5:
        z = 2.0 * tl.sigmoid(2.0 * z) - 1.0
    return z


@triton.jit
def _load_matrix(ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    rows = tl.arange(0, ROWS)
    cols = tl.arange(0, COLS)
    return tl.load(ptr + rows[:, None] * COLS + cols[None, :])


@triton.jit
def mlp_block(h, w_in_ptr, w_hidden_ptr, w_out_ptr, KIN: tl.constexpr, WIDTH: tl.constexpr,
              OUT: tl.constexpr, N_HIDDEN: tl.constexpr, ACT: tl.constexpr, OUT_ACT: tl.constexpr,
              PRECISION: tl.constexpr):
    """[BLOCK, KIN] activations (operand dtype) -> [BLOCK, OUT] float32 through the padded layers."""
    dtype = h.dtype
    if N_HIDDEN == 0:
        z = tl.dot(h, _load_matrix(w_out_ptr, KIN, OUT), input_precision=PRECISION)
    else:
        z = tl.dot(h, _load_matrix(w_in_ptr, KIN, WIDTH), input_precision=PRECISION)
        h = _activation(z, ACT).to(dtype)
        for layer in tl.static_range(N_HIDDEN - 1):
            z = tl.dot(h, _load_matrix(w_hidden_ptr + layer * WIDTH * WIDTH, WIDTH, WIDTH),
                       input_precision=PRECISION)
            h = _activation(z, ACT).to(dtype)
        z = tl.dot(h, _load_matrix(w_out_ptr, WIDTH, OUT), input_precision=PRECISION)
    return _activation(z, OUT_ACT)


@triton.jit
def _mlp_kernel(x_ptr, w_in_ptr, w_hidden_ptr, w_out_ptr, out_ptr, n_rows, n_in, n_out,
                KIN: tl.constexpr, WIDTH: tl.constexpr, OUT: tl.constexpr, N_HIDDEN: tl.constexpr,
                ACT: tl.constexpr, OUT_ACT: tl.constexpr, PRECISION: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols_in = tl.arange(0, KIN)
    mask_rows = rows < n_rows
    h = tl.load(x_ptr + rows[:, None] * n_in + cols_in[None, :],
                mask=mask_rows[:, None] & (cols_in[None, :] < n_in), other=0.0)
    out = mlp_block(h.to(w_out_ptr.dtype.element_ty), w_in_ptr, w_hidden_ptr, w_out_ptr, KIN, WIDTH, OUT,
                    N_HIDDEN, ACT, OUT_ACT, PRECISION)
    cols_out = tl.arange(0, OUT)
    tl.store(out_ptr + rows[:, None] * n_out + cols_out[None, :], out,
             mask=mask_rows[:, None] & (cols_out[None, :] < n_out))


@triton.jit
def _fused_grid_mlp_kernel(x_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr,
                           w_in_ptr, w_hidden_ptr, w_out_ptr, out_ptr, n_points, n_out,
                           D: tl.constexpr, F: tl.constexpr, LEVELS: tl.constexpr, N_LEVELS: tl.constexpr,
                           INTERP: tl.constexpr, PACKED: tl.constexpr, WIDTH: tl.constexpr, OUT: tl.constexpr,
                           N_HIDDEN: tl.constexpr, ACT: tl.constexpr, OUT_ACT: tl.constexpr,
                           PRECISION: tl.constexpr, BLOCK: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask_n = offs_n < n_points
    features = triton_grid.encode_block(x_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, offs_n,
                                        mask_n, D, F, LEVELS, N_LEVELS, INTERP, PACKED)
    out = mlp_block(features.to(w_out_ptr.dtype.element_ty), w_in_ptr, w_hidden_ptr, w_out_ptr, LEVELS * F,
                    WIDTH, OUT, N_HIDDEN, ACT, OUT_ACT, PRECISION)
    cols_out = tl.arange(0, OUT)
    tl.store(out_ptr + offs_n[:, None] * n_out + cols_out[None, :], out,
             mask=mask_n[:, None] & (cols_out[None, :] < n_out))


def pack_weights(weights: list[torch.Tensor], cfg: MLPConfig, kin: int, dtype: torch.dtype):
    """Transposed, zero-padded weights: (w_in [kin, W], w_hidden [max(H-1, 1), W, W], w_out [W or kin, OUT])."""
    width, out = _padded(cfg.n_neurons), _padded(cfg.n_output_dims)
    device = weights[0].device

    def padded(w: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        buffer = torch.zeros(rows, cols, dtype=dtype, device=device)
        buffer[: w.shape[1], : w.shape[0]] = w.detach().t()
        return buffer

    hidden = torch.zeros(max(cfg.n_hidden_layers - 1, 1), width, width, dtype=dtype, device=device)
    if cfg.n_hidden_layers == 0:
        return padded(weights[0], kin, out), hidden, padded(weights[0], kin, out)
    for i, w in enumerate(weights[1:-1]):
        hidden[i] = padded(w, width, width)
    return padded(weights[0], kin, width), hidden, padded(weights[-1], width, out)


def _mlp_constants(cfg: MLPConfig, dtype: torch.dtype) -> dict:
    return dict(WIDTH=_padded(cfg.n_neurons), OUT=_padded(cfg.n_output_dims), N_HIDDEN=cfg.n_hidden_layers,
                ACT=ACTIVATIONS.index(cfg.activation), OUT_ACT=ACTIVATIONS.index(cfg.output_activation),
                PRECISION="ieee" if dtype == torch.float32 else None)


def _check_weights(weights: list[torch.Tensor], cfg: MLPConfig) -> None:
    shapes = [tuple(w.shape) for w in weights]
    if shapes != cfg.layer_shapes:
        raise ValueError(f"mlp_forward: weight shapes {shapes} do not match the config's {cfg.layer_shapes}")


def _mlp_kernel_forward(x: torch.Tensor, weights: list[torch.Tensor], cfg: MLPConfig, dtype: torch.dtype):
    kin = _padded(cfg.n_input_dims)
    packed_weights = pack_weights(weights, cfg, kin, dtype)
    out = torch.empty(x.shape[0], cfg.n_output_dims, dtype=torch.float32, device=x.device)
    _mlp_kernel[(triton.cdiv(x.shape[0], MLP_BLOCK),)](
        x.contiguous(), *packed_weights, out, x.shape[0], cfg.n_input_dims, cfg.n_output_dims, KIN=kin,
        **_mlp_constants(cfg, dtype), BLOCK=MLP_BLOCK, num_warps=MLP_WARPS)
    return out


class _MLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cfg: MLPConfig, dtype, *weights):
        ctx.save_for_backward(x, *weights)
        ctx.cfg, ctx.dtype = cfg, dtype
        return _mlp_kernel_forward(x, list(weights), cfg, dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, *weights = ctx.saved_tensors
        # The backward runs in fp32: in fp16, gradients through NeRF's exp(density) overflowed and small ones
        # underflowed, and Lego training diverged to NaN on the H200 after a few thousand steps.
        with torch.enable_grad():
            x_op = x.detach().float().requires_grad_(ctx.needs_input_grad[0])
            w_op = [w.detach().float().requires_grad_() for w in weights]
            out = reference.mlp_forward(x_op, w_op, ctx.cfg)
            inputs = ([x_op] if ctx.needs_input_grad[0] else []) + w_op
            grads = list(torch.autograd.grad(out, inputs, grad_out.float()))
        grad_x = grads.pop(0).to(x.dtype) if ctx.needs_input_grad[0] else None
        return (grad_x, None, None, *[g.to(w.dtype) for g, w in zip(grads, weights)])


def mlp_forward(x: torch.Tensor, weights: list[torch.Tensor], cfg: MLPConfig,
                precision: torch.dtype | None = None) -> torch.Tensor:
    """Triton twin of :func:`ngfx.encodings.reference.mlp_forward`.

    Args:
        x: [N, n_input_dims]; weights: [out, in] per layer, input layer first.
        precision: operand dtype (default fp16 on CUDA, fp32 otherwise); accumulation is always fp32.
    Returns:
        [N, n_output_dims] float32; differentiable with respect to x and every weight.
    """
    _check_weights(weights, cfg)
    if x.ndim != 2 or x.shape[1] != cfg.n_input_dims:
        raise ValueError(f"mlp_forward: x must have shape [N, {cfg.n_input_dims}], got {list(x.shape)}")
    return _MLP.apply(x, cfg, precision or operand_dtype(x.device), *weights)


def fused_grid_mlp_forward(x: torch.Tensor, params: torch.Tensor, weights: list[torch.Tensor],
                           grid_cfg: GridConfig, mlp_cfg: MLPConfig,
                           precision: torch.dtype | None = None) -> torch.Tensor:
    """Inference: ``mlp(grid_encode(x))`` in one kernel, [N, D] -> [N, n_output_dims] float32 (no autograd).

    ``precision`` is the dtype of both the table copy and the MLP operands (fp16 on CUDA by default).
    """
    _check_weights(weights, mlp_cfg)
    if mlp_cfg.n_input_dims != grid_cfg.n_output_dims:
        raise ValueError(f"fused_grid_mlp_forward: the MLP takes {mlp_cfg.n_input_dims} inputs, the encoding "
                         f"gives {grid_cfg.n_output_dims}")
    if x.ndim != 2 or x.shape[1] != grid_cfg.n_dims:
        raise ValueError(f"fused_grid_mlp_forward: x must have shape [N, {grid_cfg.n_dims}], got {list(x.shape)}")
    dtype = precision or operand_dtype(x.device)
    grid_constants = triton_grid.kernel_constants(grid_cfg, min_width=MIN_DOT_WIDTH)
    kin = grid_constants["LEVELS"] * grid_cfg.n_features_per_level
    packed_weights = pack_weights(weights, mlp_cfg, kin, dtype)
    meta = triton_grid.level_metadata(grid_cfg, x.device)
    table, packed = triton_grid.forward_table(params, grid_cfg, dtype)
    out = torch.empty(x.shape[0], mlp_cfg.n_output_dims, dtype=torch.float32, device=x.device)
    _fused_grid_mlp_kernel[(triton.cdiv(x.shape[0], FUSED_BLOCK),)](
        x.detach().contiguous().float(), table, *meta, *packed_weights, out, x.shape[0], mlp_cfg.n_output_dims,
        **grid_constants, PACKED=packed, **_mlp_constants(mlp_cfg, dtype), BLOCK=FUSED_BLOCK, num_warps=FUSED_WARPS)
    return out
