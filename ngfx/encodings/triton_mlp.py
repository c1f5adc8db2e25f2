"""Fully fused small MLPs in Triton, beside :func:`ngfx.encodings.reference.mlp_forward`.

One program pushes ``BLOCK`` rows through every layer with ``tl.dot`` on [BLOCK, width] tiles; the
activations never leave registers/shared memory and the (tiny) weights are re-read from L2 per program.
Widths are zero-padded to powers of two >= 16 (``tl.dot``'s minimum), so 3 outputs or 32 inputs just work.

Precision: on CUDA the operands are fp16 with fp32 accumulation (tiny-cuda-nn's choice). Measured against
the fp32 reference: forward rel. error 4-6e-4 on the H200; the table gradient of a training step 1.0-1.5e-2,
most of it ReLU masks that flip under the fp16 forward. Under the CPU interpreter everything is fp32 with IEEE
dots, so tests compare tightly against the reference.

Backward (:func:`mlp_backward_block`): one persistent kernel recomputes each block's activations from its
inputs (operand dtype, as the forward ran) and runs the layers backwards with fp32 operands (TF32 tensor cores
on the GPU, IEEE fp32 under the interpreter): TF32 keeps fp32's exponent range, so gradients through
exp(density) neither overflow nor underflow as an fp16 backward's did (Lego diverged to NaN). Each program
sums its blocks' weight gradients in registers and writes one partial per program; the host adds the partials.

:func:`fused_grid_mlp_forward` runs the grid encoding (``triton_grid.encode_block``) and the MLP in one
kernel: the encoded features go from the gather loop straight into the first ``tl.dot``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.encodings import reference, triton_grid
from ngfx.encodings.config import ACTIVATIONS, GridConfig, MLPConfig
from ngfx.encodings.derived import derived

MIN_DOT_WIDTH = 16
# Launch shapes with fewer than 64 rows per 4-warp group (the mma.sync path). On the H200 (Triton 3.6) every
# shape that selects wgmma (BLOCK >= 64 with >= 4 warps) gave NaNs or an illegal memory access in these two
# forward kernels (the backward kernel ran right at 64 x 4, wgmma in its SASS); the benchmark probes shapes in
# subprocesses. Fastest safe shapes measured there: MLP 64 x 2 warps (0.176 ms for 2^21 rows, 32 -> 64 -> 16),
# fused 32 x 4 warps.
MLP_BLOCK = 64
MLP_WARPS = 2
BACKWARD_BLOCK = 32  # best of the H200 sweep (issue 13's run): 0.64 ms for 2^21 rows, 32 -> 64 -> 16 forward
BACKWARD_WARPS = 2  # and backward, 64 x 2 0.97 ms, 64 x 4 (wgmma, correct there) 0.81 ms
PROGRAMS_PER_SM = 8  # persistent backward programs per multiprocessor
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
def _activation_derivative(z, CODE: tl.constexpr):
    """d activation / dz at the pre-activation ``z`` (as torch's autograd defines it)."""
    if CODE == 0:
        return tl.full(z.shape, 1.0, tl.float32)
    if CODE == 1:
        return tl.where(z > 0.0, 1.0, 0.0)
    if CODE == 2:
        s = tl.sigmoid(z)
        return s * (1.0 - s)
    if CODE == 3:
        return tl.exp(z)
    if CODE == 4:
        return tl.where(z > 20.0, 1.0, tl.sigmoid(z))
    t = 2.0 * tl.sigmoid(2.0 * z) - 1.0
    return 1.0 - t * t


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
def _layer_weights(w_in_ptr, w_hidden_ptr, w_out_ptr, LAYER: tl.constexpr, KIN: tl.constexpr, WIDTH: tl.constexpr,
                   OUT: tl.constexpr, N_HIDDEN: tl.constexpr):
    """Padded [in, out] weights of layer ``LAYER`` (0 = input layer, N_HIDDEN = output layer)."""
    if LAYER == N_HIDDEN:  # one return: the compiler checks every return's type, taken or not
        weights = _load_matrix(w_out_ptr, KIN if N_HIDDEN == 0 else WIDTH, OUT)
    elif LAYER == 0:
        weights = _load_matrix(w_in_ptr, KIN, WIDTH)
    else:
        weights = _load_matrix(w_hidden_ptr + (LAYER - 1) * WIDTH * WIDTH, WIDTH, WIDTH)
    return weights


@triton.jit
def _layer_input(x, w_in_ptr, w_hidden_ptr, w_out_ptr, LAYER: tl.constexpr, KIN: tl.constexpr,
                 WIDTH: tl.constexpr, OUT: tl.constexpr, N_HIDDEN: tl.constexpr, ACT: tl.constexpr,
                 PRECISION: tl.constexpr):
    """(input of layer ``LAYER``, pre-activation it came from), recomputed from ``x`` as the forward ran."""
    h = x
    z = x.to(tl.float32)
    for layer in tl.static_range(LAYER):
        z = tl.dot(h, _layer_weights(w_in_ptr, w_hidden_ptr, w_out_ptr, layer, KIN, WIDTH, OUT, N_HIDDEN),
                   input_precision=PRECISION)
        h = _activation(z, ACT).to(x.dtype)
    return h, z


@triton.jit
def mlp_backward_block(x, grad_out, w_in_ptr, w_hidden_ptr, w_out_ptr, grad_in, grad_hidden, grad_out_layer,
                       KIN: tl.constexpr, WIDTH: tl.constexpr, OUT: tl.constexpr, N_HIDDEN: tl.constexpr,
                       HIDDEN_SLOTS: tl.constexpr, ACT: tl.constexpr, OUT_ACT: tl.constexpr,
                       PRECISION: tl.constexpr, GRAD_PRECISION: tl.constexpr):
    """Backward of one block: x [BLOCK, KIN] (operand dtype), dL/dout [BLOCK, OUT] fp32 -> dL/dx [BLOCK, KIN]
    fp32, with each layer's weight gradient ([in, out], padded) added to its accumulator.

    ``grad_hidden`` [HIDDEN_SLOTS, WIDTH, WIDTH] holds the hidden layers' (slot = layer - 1).
    """
    slots = tl.arange(0, HIDDEN_SLOTS)
    delta = grad_out
    for LAYER in tl.static_range(N_HIDDEN, -1, -1):  # output layer first
        h, z = _layer_input(x, w_in_ptr, w_hidden_ptr, w_out_ptr, LAYER, KIN, WIDTH, OUT, N_HIDDEN, ACT, PRECISION)
        weights = _layer_weights(w_in_ptr, w_hidden_ptr, w_out_ptr, LAYER, KIN, WIDTH, OUT, N_HIDDEN)
        if LAYER == N_HIDDEN:
            z_out = tl.dot(h, weights, input_precision=PRECISION)
            delta = grad_out * _activation_derivative(z_out, OUT_ACT)  # dL/d(pre-activation), fp32
        grad_weights = tl.dot(tl.trans(h.to(tl.float32)), delta, input_precision=GRAD_PRECISION)
        if LAYER == N_HIDDEN:
            grad_out_layer += grad_weights
        elif LAYER == 0:
            grad_in += grad_weights
        else:
            grad_hidden += tl.where(slots[:, None, None] == LAYER - 1, grad_weights[None, :, :], 0.0)
        delta = tl.dot(delta, tl.trans(weights.to(tl.float32)), input_precision=GRAD_PRECISION)
        if LAYER > 0:
            delta = delta * _activation_derivative(z, ACT)
    return delta, grad_in, grad_hidden, grad_out_layer


@triton.jit
def _mlp_backward_kernel(x_ptr, grad_out_ptr, w_in_ptr, w_hidden_ptr, w_out_ptr, grad_x_ptr, partial_in_ptr,
                         partial_hidden_ptr, partial_out_ptr, n_rows, n_blocks, n_in, n_out,
                         KIN: tl.constexpr, WIDTH: tl.constexpr, OUT: tl.constexpr, N_HIDDEN: tl.constexpr,
                         HIDDEN_SLOTS: tl.constexpr, ACT: tl.constexpr, OUT_ACT: tl.constexpr,
                         PRECISION: tl.constexpr, GRAD_PRECISION: tl.constexpr, NEED_DX: tl.constexpr,
                         BLOCK: tl.constexpr):
    LAST_IN: tl.constexpr = KIN if N_HIDDEN == 0 else WIDTH
    HIDDEN_WIDTH: tl.constexpr = WIDTH if N_HIDDEN >= 2 else 1  # no W x W registers held when unused
    grad_in = tl.zeros((KIN, WIDTH), tl.float32)
    grad_hidden = tl.zeros((HIDDEN_SLOTS, HIDDEN_WIDTH, HIDDEN_WIDTH), tl.float32)
    grad_out_layer = tl.zeros((LAST_IN, OUT), tl.float32)
    cols_in = tl.arange(0, KIN)
    cols_out = tl.arange(0, OUT)
    block = tl.program_id(0)
    while block < n_blocks:  # a while loop: the interpreter cannot run a for loop to a runtime bound
        rows = block * BLOCK + tl.arange(0, BLOCK)
        mask_rows = rows < n_rows
        mask_in = mask_rows[:, None] & (cols_in[None, :] < n_in)
        x = tl.load(x_ptr + rows[:, None] * n_in + cols_in[None, :], mask=mask_in, other=0.0)
        grad_out = tl.load(grad_out_ptr + rows[:, None] * n_out + cols_out[None, :],
                           mask=mask_rows[:, None] & (cols_out[None, :] < n_out), other=0.0)
        grad_x, grad_in, grad_hidden, grad_out_layer = mlp_backward_block(
            x.to(w_out_ptr.dtype.element_ty), grad_out, w_in_ptr, w_hidden_ptr, w_out_ptr, grad_in, grad_hidden,
            grad_out_layer, KIN, WIDTH, OUT, N_HIDDEN, HIDDEN_SLOTS, ACT, OUT_ACT, PRECISION, GRAD_PRECISION)
        if NEED_DX:
            tl.store(grad_x_ptr + rows[:, None] * n_in + cols_in[None, :], grad_x, mask=mask_in)
        block += tl.num_programs(0)
    program = tl.program_id(0)
    offs_w = tl.arange(0, WIDTH)
    offs_hidden = tl.arange(0, HIDDEN_WIDTH)
    offs_last = tl.arange(0, LAST_IN)
    slots = tl.arange(0, HIDDEN_SLOTS)
    tl.store(partial_in_ptr + program * KIN * WIDTH + cols_in[:, None] * WIDTH + offs_w[None, :], grad_in)
    tl.store(partial_hidden_ptr + program * HIDDEN_SLOTS * HIDDEN_WIDTH * HIDDEN_WIDTH
             + slots[:, None, None] * HIDDEN_WIDTH * HIDDEN_WIDTH + offs_hidden[None, :, None] * HIDDEN_WIDTH
             + offs_hidden[None, None, :], grad_hidden)
    tl.store(partial_out_ptr + program * LAST_IN * OUT + offs_last[:, None] * OUT + cols_out[None, :],
             grad_out_layer)


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
    """Transposed, zero-padded weights: (w_in [kin, W], w_hidden [max(H-1, 1), W, W], w_out [W or kin, OUT]);
    read-only, reused while the weights are unchanged (:mod:`ngfx.encodings.derived`)."""
    key = ("mlp", kin, dtype, cfg.n_neurons, cfg.n_output_dims, cfg.n_hidden_layers)
    return derived(weights, key, lambda: _pack_weights(weights, cfg, kin, dtype))


def _pack_weights(weights: list[torch.Tensor], cfg: MLPConfig, kin: int, dtype: torch.dtype):
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


def mlp_constants(cfg: MLPConfig, dtype: torch.dtype, prefix: str = "") -> dict:
    """The MLP constexprs of a network; with a ``prefix`` (a kernel running two networks) named ``prefix + KEY``,
    PRECISION left out (the networks share it)."""
    constants = dict(WIDTH=_padded(cfg.n_neurons), OUT=_padded(cfg.n_output_dims), N_HIDDEN=cfg.n_hidden_layers,
                     ACT=ACTIVATIONS.index(cfg.activation), OUT_ACT=ACTIVATIONS.index(cfg.output_activation),
                     PRECISION="ieee" if dtype == torch.float32 else None)
    if prefix:
        return {prefix + key: value for key, value in constants.items() if key != "PRECISION"}
    return constants


@triton.jit
def tile_column(tile, COLUMN: tl.constexpr, WIDTH: tl.constexpr):
    """Column ``COLUMN`` [BLOCK] of a [BLOCK, WIDTH] tile (a masked sum: the other columns add zeros, exactly)."""
    cols = tl.arange(0, WIDTH)[None, :]
    return tl.sum(tl.where(cols == COLUMN, tile, 0.0), axis=1)


def _check_weights(weights: list[torch.Tensor], cfg: MLPConfig) -> None:
    shapes = [tuple(w.shape) for w in weights]
    if shapes != cfg.layer_shapes:
        raise ValueError(f"mlp_forward: weight shapes {shapes} do not match the config's {cfg.layer_shapes}")


def _mlp_kernel_forward(x: torch.Tensor, packed_weights: tuple[torch.Tensor, ...], cfg: MLPConfig,
                        dtype: torch.dtype):
    kin = _padded(cfg.n_input_dims)
    out = torch.empty(x.shape[0], cfg.n_output_dims, dtype=torch.float32, device=x.device)
    _mlp_kernel[(triton.cdiv(x.shape[0], MLP_BLOCK),)](
        x.contiguous(), *packed_weights, out, x.shape[0], cfg.n_input_dims, cfg.n_output_dims, KIN=kin,
        **mlp_constants(cfg, dtype), BLOCK=MLP_BLOCK, num_warps=MLP_WARPS)
    return out


def _program_count(n_blocks: int, device: torch.device) -> int:
    """Persistent programs: enough to fill the GPU, few enough that the per-program partials stay small."""
    if device.type != "cuda":
        return min(n_blocks, 2)  # the interpreter: still more than one block per program
    return min(n_blocks, PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count)


def _mlp_kernel_backward(x: torch.Tensor, grad_out: torch.Tensor, packed_weights: tuple[torch.Tensor, ...],
                         cfg: MLPConfig, dtype: torch.dtype, need_dx: bool):
    """(dL/dx or None, [dL/dW per layer, each [out, in] like the weights]) of the kernel forward at ``x``, with the
    weights as :func:`pack_weights` packed them for that forward."""
    kin, width = _padded(cfg.n_input_dims), _padded(cfg.n_neurons)
    out_width = _padded(cfg.n_output_dims)
    last_in = kin if cfg.n_hidden_layers == 0 else width
    slots = triton.next_power_of_2(max(cfg.n_hidden_layers - 1, 1))
    hidden_width = width if cfg.n_hidden_layers >= 2 else 1
    n_blocks = triton.cdiv(x.shape[0], BACKWARD_BLOCK)
    n_programs = max(_program_count(n_blocks, x.device), 1)
    partials = [torch.empty(n_programs, *shape, dtype=torch.float32, device=x.device)
                for shape in ((kin, width), (slots, hidden_width, hidden_width), (last_in, out_width))]
    grad_x = torch.empty(x.shape[0], cfg.n_input_dims, dtype=torch.float32, device=x.device) if need_dx else None
    _mlp_backward_kernel[(n_programs,)](
        x.contiguous(), grad_out.contiguous().float(), *packed_weights,
        grad_x if need_dx else partials[0], *partials, x.shape[0], n_blocks, cfg.n_input_dims, cfg.n_output_dims, KIN=kin,
        HIDDEN_SLOTS=slots, **mlp_constants(cfg, dtype), GRAD_PRECISION="ieee" if dtype == torch.float32 else "tf32",
        NEED_DX=need_dx, BLOCK=BACKWARD_BLOCK, num_warps=BACKWARD_WARPS)
    grad_in, grad_hidden, grad_last = (p.sum(0) for p in partials)
    n_in, n_neurons, n_out = cfg.n_input_dims, cfg.n_neurons, cfg.n_output_dims
    if cfg.n_hidden_layers == 0:
        return grad_x, [grad_last[:n_in, :n_out].t()]
    hidden = [grad_hidden[i, :n_neurons, :n_neurons].t() for i in range(cfg.n_hidden_layers - 1)]
    return grad_x, [grad_in[:n_in, :n_neurons].t(), *hidden, grad_last[:n_neurons, :n_out].t()]


class _MLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cfg: MLPConfig, dtype, *weights):
        ctx.save_for_backward(x, *weights)
        # the backward reads the forward's packed weights: packing again would copy the same values
        ctx.cfg, ctx.dtype = cfg, dtype
        ctx.packed_weights = pack_weights(list(weights), cfg, _padded(cfg.n_input_dims), dtype)
        return _mlp_kernel_forward(x, ctx.packed_weights, cfg, dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, *weights = ctx.saved_tensors
        grad_x, grad_weights = _mlp_kernel_backward(x, grad_out, ctx.packed_weights, ctx.cfg, ctx.dtype,
                                                    ctx.needs_input_grad[0])
        return ((grad_x.to(x.dtype) if grad_x is not None else None), None, None,
                *[g.to(w.dtype) for g, w in zip(grad_weights, weights)])


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
        **grid_constants, PACKED=packed, **mlp_constants(mlp_cfg, dtype), BLOCK=FUSED_BLOCK, num_warps=FUSED_WARPS)
    return out
