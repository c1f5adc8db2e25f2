"""Fused NeLF inference: the network in Triton kernels, one for the body and one per super-resolution stage.

The body (a 1x1-conv stem, residual blocks of two 1x1 convs, a global skip) is a per-pixel MLP 256 wide.
``body_kernel`` runs it for a tile of ``BLOCK_M`` pixels with the activations in registers: each layer is two
``tl.dot`` of the whole layer input by one half of the layer's output columns (the even and the odd ones), and
``tl.join`` of the two halves is the next layer's input in channel order. One software-pipelined loop over all
half-layers streams the weights, so the next half-layer's weights load while this one computes and the
pipeline never drains between layers. BatchNorm is folded into the convs first (``fold_batchnorm``). A tile
holds its SM for the whole layer stack, so a last partial round of tiles costs a full one: optionally a second,
tail launch runs those rows in smaller tiles (``split_rows``), or each program takes an extra, smaller tile
through the same weight loads, so that one round of programs covers the rows (``extra_rows``).

Each super-resolution stage (a transposed conv + GELU, then residual blocks 64 or 16 wide, and on the last
stage the 1x1 conv to RGB and the sigmoid) is one ``upsample_kernel``: a transposed conv of stride ``s`` is
``s * s`` small convs, one per output phase (the output pixels ``(s*y + py, s*x + px)``), each summing a few
shifted input pixels times one kernel tap; so a program takes ``BLOCK_M`` input pixels and one phase, and runs
the taps, the residual blocks and the RGB layer in registers, writing each intermediate image once.

Every kernel's GELU is its tanh form by default (the launch's "gelu": "tanh"), on a GPU in packed fp16 with the
hardware tanh, which costs far fewer instructions; "gelu": "erf" takes the exact form (see ``_gelu``).

:class:`FusedNeLF` is inference only; :class:`ngfx.nelf.network.NeLF` remains the reference, and
``tests/test_nelf_triton.py`` compares the two under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import nn

from ngfx.nelf.network import NeLF, ResidualBlock, fold_batchnorm

# launch shape: the body kernel's rows (pixels) per tile, K rows per stem chunk, warps, pipeline stages and
# residual-stream dtype ("fp32" | "fp16"); the rows per tile and warps of its tail launch (0: none; see
# split_rows); the super-resolution kernels' input pixels per tile and warps; every kernel's GELU ("erf": exact,
# "tanh": its tanh form on packed fp16 with the hardware tanh on a GPU). An optional "round_tiles" is how many
# body tiles run at once (default: the device's SM count; give twice that for tiles that run two per SM);
# "extra_rows" (0: none) gives each body program an extra tile of that many rows multiplied by the same
# weight loads (see body_kernel), so 800x800's 10,000 body rows make 125 programs of 64 + 16, one round on 132 SMs.
# bench_nelf.py probes others on the GPU. On the H200 (BENCHMARKS.md) the defaults were the fastest of the probes
# at 800x800 (0.499 ms; 64-row tiles and a 16-row tail 0.558, the exact GELU with neither 0.771) and within 2 % of
# the fastest at 1008x756 (0.336 ms; 83 tiles, one round, no extra tile), max RGB error 2.8e-4 against fp32
# (PyTorch's own fp16: 2.9e-4), body relative error 9.7e-4. Three pipeline stages: with the extra tile two leave
# a single weight buffer (0.506 ms).
DEFAULT_LAUNCH = {"block_m": 64, "block_k": 32, "num_warps": 8, "num_stages": 3, "residual": "fp32",
                  "tail_block_m": 16, "tail_num_warps": 4, "sr_block_m": 64, "sr_num_warps": 4, "gelu": "tanh",
                  "extra_rows": 16}
OPTIONAL_LAUNCH_KEYS = ("round_tiles",)
MIN_DOT = 16
RGB_PAD = 16  # the RGB layer's 3 outputs padded to the smallest tl.dot width
# the integer launch keys: the least value and whether it must be a power of two (tl.arange and tl.dot sizes,
# warps); the keys of NONE_AT_ZERO may also be 0, which turns their launch or tile off
LAUNCH_COUNTS = {"block_m": (MIN_DOT, True), "block_k": (MIN_DOT, True), "sr_block_m": (MIN_DOT, True),
                 "tail_block_m": (MIN_DOT, True), "extra_rows": (MIN_DOT, True), "num_warps": (1, True),
                 "tail_num_warps": (1, True), "sr_num_warps": (1, True), "num_stages": (1, False),
                 "round_tiles": (1, False)}
NONE_AT_ZERO = ("tail_block_m", "extra_rows")
LAUNCH_CHOICES = {"residual": ("fp32", "fp16"), "gelu": ("erf", "tanh")}  # the launch keys that name a form


# GELU's tanh form 0.5 x (1 + tanh(x (A + B x^2))), A = sqrt(2 / pi) = 0x3A62, B = 0.044715 A = 0x2891 and
# 0.5 = 0x3800 in fp16, on a register of two fp16 values: five packed fp16 operations and the hardware tanh
# (sm_75+; two MUFU.TANH in the sm_90 SASS) per two elements, against about twenty instructions per element for
# the erf fit. The last fma rounds once, so x/2 + x/2 * tanh keeps its accuracy where tanh is near -1.
GELU_TANH_F16X2 = tl.constexpr("""{
.reg .b32 ga, gb, gh, gt;
mov.b32 ga, 0x3A623A62;
mov.b32 gb, 0x28912891;
mov.b32 gh, 0x38003800;
mul.rn.f16x2 gt, $1, $1;
fma.rn.f16x2 gt, gt, gb, ga;
mul.rn.f16x2 gt, gt, $1;
tanh.approx.f16x2 gt, gt;
mul.rn.f16x2 gh, gh, $1;
fma.rn.f16x2 $0, gh, gt, gh;
}""")


@triton.jit
def _gelu(x, TANH: tl.constexpr, HW_TANH: tl.constexpr):
    """GELU of fp32 ``x``: with TANH its tanh form, nn.GELU(approximate="tanh"), in packed fp16 with the
    hardware tanh when HW_TANH (a GPU; the result is fp16), else in fp32 as x * sigmoid(2 u), the same function
    (0.5 (1 + tanh u) = sigmoid(2 u)), which the interpreter can run; without TANH the exact form below."""
    if TANH:  # (the constexpr branches not taken are not compiled: one return, of one dtype)
        if HW_TANH:
            y = tl.inline_asm_elementwise(GELU_TANH_F16X2, "=r,r", [x.to(tl.float16)], dtype=tl.float16,
                                          is_pure=True, pack=2)
        else:
            y = x * tl.sigmoid(x * (1.5957691216057308 + 0.07135481627260025 * x * x))
    else:
        y = _gelu_erf(x)
    return y


@triton.jit
def _gelu_erf(x):
    """nn.GELU()'s exact form, x * (1 + erf(x / sqrt(2))) / 2, with erf as a rational minimax fit on [-4, 4] (erf
    is +-1 in fp32 beyond; |error| < 5e-7, the fit of Eigen's fast erf): branch-free, about 20 instructions
    against about 30 for libdevice's erff, which picks one of two polynomials per element. The GELUs are most of
    every layer's instructions (the matrix products run on the tensor cores)."""
    u = tl.minimum(tl.maximum(x * 0.7071067811865476, -4.0), 4.0)
    u2 = u * u
    p = u2 * -2.72614225801306e-10 + 2.77068142495902e-08
    p = p * u2 - 2.10102402082508e-06
    p = p * u2 - 5.69250639462346e-05
    p = p * u2 - 7.34990630326855e-04
    p = p * u2 - 2.95459980854025e-03
    p = p * u2 - 1.60960333262415e-02
    q = u2 * -1.45660718464996e-05 - 2.13374055278905e-04
    q = q * u2 - 1.68282697438203e-03
    q = q * u2 - 7.37332916720468e-03
    q = q * u2 - 1.42647390514189e-02
    return x * (0.5 - 0.5 * u * p * tl.math.rsqrt(q * q))  # q < 0 on [-4, 4]: 1 / q = -1 / sqrt(q^2), one MUFU op


@triton.jit
def _x_chunk(x_ptr, rows, n_rows, k_cols, C_IN: tl.constexpr):
    """The input columns ``k_cols`` of ``rows`` of ``x`` [n_rows, C_IN] (0 past either end)."""
    return tl.load(x_ptr + rows[:, None] * C_IN + k_cols[None, :],
                   mask=(rows < n_rows)[:, None] & (k_cols < C_IN)[None, :], other=0.0)


@triton.jit
def _half_layer(a, w, bias, dtype: tl.constexpr, GELU_TANH: tl.constexpr, HW_TANH: tl.constexpr):
    """GELU(a @ w + bias) in ``dtype``: one half of a layer's output columns for one tile."""
    return _gelu(tl.dot(a, w) + bias, GELU_TANH, HW_TANH).to(dtype)


@triton.jit
def _stem_output(acc, b_stem, out_tile, row_ok, GELU_TANH: tl.constexpr, HW_TANH: tl.constexpr):
    """The stem's output GELU(acc + b_stem) of one tile in fp32, also stored in ``out_tile``: the global skip,
    kept there to spare registers until ``_add_skip`` reads it back."""
    h = _gelu(acc + b_stem, GELU_TANH, HW_TANH).to(tl.float32)
    tl.store(out_tile, h.to(out_tile.dtype.element_ty), mask=row_ok[:, None])
    return h


@triton.jit
def _add_skip(h, out_tile, row_ok):
    """``out_tile`` <- the residual stream ``h`` + the stem output that ``_stem_output`` stored there."""
    h = h.to(tl.float32) + tl.load(out_tile, mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(out_tile, h.to(out_tile.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def body_kernel(x_ptr, out_ptr, w_stem_ptr, b_stem_ptr, w_ptr, b_ptr, n_rows, C_IN: tl.constexpr,
                K_STEM: tl.constexpr, WIDTH: tl.constexpr, N_LAYERS: tl.constexpr, BLOCK_M: tl.constexpr,
                EXTRA_M: tl.constexpr, BLOCK_K: tl.constexpr, NUM_STAGES: tl.constexpr,
                RESIDUAL_FP32: tl.constexpr, GELU_TANH: tl.constexpr, HW_TANH: tl.constexpr):
    """Rows of ``x`` [n_rows, C_IN] -> ``out`` [n_rows, WIDTH]: s = GELU(x @ W_stem + b); h = s; per residual
    block h += GELU(GELU(h @ W1 + b1) @ W2 + b2); out = h + s.

    A program takes ``BLOCK_M + EXTRA_M`` consecutive rows: a tile of BLOCK_M and, when EXTRA_M > 0, an extra
    tile of EXTRA_M rows multiplied by the same weight block once it is loaded (two ``tl.dot`` per weight load),
    so more rows share one weight stream without a larger tile's registers: ``_x`` names are the extra tile's.
    ``w`` is [N_LAYERS, 2, WIDTH, WIDTH // 2]: half 0 of a layer holds its even output columns, half 1 its odd
    ones, so joining the two halves' outputs gives the columns back in order; ``b`` is [N_LAYERS, 2, WIDTH // 2]
    likewise. The stem's weights [K_STEM, WIDTH] are zero-padded to K_STEM (a multiple of BLOCK_K) rows.
    The residual stream h is fp32, or with RESIDUAL_FP32 false the operand dtype (as PyTorch's fp16 forward
    keeps it), which halves its registers. GELU_TANH, HW_TANH: see ``_gelu``."""
    dtype = w_ptr.dtype.element_ty
    HALF: tl.constexpr = WIDTH // 2
    rows = tl.program_id(0) * (BLOCK_M + EXTRA_M) + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, WIDTH)
    half_cols = tl.arange(0, HALF)
    ks = tl.arange(0, BLOCK_K)
    out_tile = out_ptr + rows[:, None] * WIDTH + cols[None, :]
    acc = tl.zeros((BLOCK_M, WIDTH), tl.float32)
    if EXTRA_M > 0:  # (constexpr branches: with EXTRA_M 0 none of the extra tile's code is compiled)
        rows_x = tl.program_id(0) * (BLOCK_M + EXTRA_M) + BLOCK_M + tl.arange(0, EXTRA_M)
        out_tile_x = out_ptr + rows_x[:, None] * WIDTH + cols[None, :]
        acc_x = tl.zeros((EXTRA_M, WIDTH), tl.float32)
    for k in tl.range(0, K_STEM, BLOCK_K, num_stages=NUM_STAGES):  # the stem, K in BLOCK_K chunks
        w = tl.load(w_stem_ptr + (k + ks)[:, None] * WIDTH + cols[None, :])
        acc = tl.dot(_x_chunk(x_ptr, rows, n_rows, k + ks, C_IN).to(dtype), w, acc)
        if EXTRA_M > 0:
            acc_x = tl.dot(_x_chunk(x_ptr, rows_x, n_rows, k + ks, C_IN).to(dtype), w, acc_x)
    b_stem = tl.load(b_stem_ptr + cols)[None, :]
    h = _stem_output(acc, b_stem, out_tile, rows < n_rows, GELU_TANH, HW_TANH)
    if not RESIDUAL_FP32:
        h = h.to(dtype)
    a = h.to(dtype)  # the current layer's input
    first = tl.zeros((BLOCK_M, HALF), dtype)  # the current layer's even output columns, once computed
    if EXTRA_M > 0:
        h_x = _stem_output(acc_x, b_stem, out_tile_x, rows_x < n_rows, GELU_TANH, HW_TANH).to(h.dtype)
        a_x = h_x.to(dtype)
        first_x = tl.zeros((EXTRA_M, HALF), dtype)
    for i in tl.range(0, 2 * N_LAYERS, num_stages=NUM_STAGES):
        layer = i // 2
        w = tl.load(w_ptr + i * WIDTH * HALF + cols[:, None] * HALF + half_cols[None, :])
        bias = tl.load(b_ptr + i * HALF + half_cols)[None, :]
        z = _half_layer(a, w, bias, dtype, GELU_TANH, HW_TANH)
        if EXTRA_M > 0:
            z_x = _half_layer(a_x, w, bias, dtype, GELU_TANH, HW_TANH)
        if i % 2 == 0:
            first = z
            if EXTRA_M > 0:
                first_x = z_x
        else:
            y = tl.reshape(tl.join(first, z), (BLOCK_M, WIDTH))  # columns 2j, 2j + 1 <- first[:, j], z[:, j]
            if EXTRA_M > 0:
                y_x = tl.reshape(tl.join(first_x, z_x), (EXTRA_M, WIDTH))
            if layer % 2 == 0:  # the block's first conv: its output is the second conv's input
                a = y
                if EXTRA_M > 0:
                    a_x = y_x
            else:  # the block's second conv: the residual stream takes its output
                h += y.to(h.dtype)
                a = h.to(dtype)
                if EXTRA_M > 0:
                    h_x += y_x.to(h_x.dtype)
                    a_x = h_x.to(dtype)
    _add_skip(h, out_tile, rows < n_rows)
    if EXTRA_M > 0:
        _add_skip(h_x, out_tile_x, rows_x < n_rows)


@triton.jit
def upsample_kernel(x_ptr, out_ptr, w_up_ptr, b_up_ptr, w_ptr, b_ptr, w_rgb_ptr, b_rgb_ptr, h_in, w_in,
                    C_IN: tl.constexpr, C_OUT: tl.constexpr, KERNEL: tl.constexpr, STRIDE: tl.constexpr,
                    PAD: tl.constexpr, TAPS: tl.constexpr, N_BLOCKS: tl.constexpr, RGB: tl.constexpr,
                    RGB_COLS: tl.constexpr, BLOCK_M: tl.constexpr, GELU_TANH: tl.constexpr, HW_TANH: tl.constexpr):
    """One super-resolution stage: image rows ``x`` [h_in * w_in, C_IN] (row-major pixels) -> GELU(transposed
    conv) -> residual blocks -> ``out``: rows [h_out * w_out, C_OUT], or with RGB the planar image
    [3, h_out, w_out] of sigmoid(h @ W_rgb + b_rgb). A program runs one output phase of ``BLOCK_M`` input
    pixels.

    ConvTranspose2d: out[s*m + p] = sum over taps t = (p + PAD) % s + s*j < KERNEL of x[m - j + (p + PAD) // s]
    @ W[t], per axis. ``w_up`` is [KERNEL, KERNEL, C_IN, C_OUT] (the taps' [in, out] matrices), ``w``
    [2 * N_BLOCKS, C_OUT, C_OUT], ``b`` [2 * N_BLOCKS, C_OUT], ``w_rgb`` [C_OUT, RGB_COLS] (3 columns used).
    GELU_TANH, HW_TANH: see ``_gelu``; the residual stream h is fp32 either way."""
    dtype = w_up_ptr.dtype.element_ty
    pid = tl.program_id(0)
    phase = pid % (STRIDE * STRIDE)  # the phases of one tile run side by side: the same input, nearby output
    py = phase // STRIDE
    px = phase % STRIDE
    pix = (pid // (STRIDE * STRIDE)) * BLOCK_M + tl.arange(0, BLOCK_M)
    pix_ok = pix < h_in * w_in
    y = pix // w_in
    x = pix % w_in
    ci = tl.arange(0, C_IN)
    co = tl.arange(0, C_OUT)
    square = co[:, None] * C_OUT + co[None, :]
    w_out = STRIDE * w_in
    acc = tl.zeros((BLOCK_M, C_OUT), tl.float32)
    for ty in tl.static_range(TAPS):
        ky = (py + PAD) % STRIDE + STRIDE * ty
        iy = y - ty + (py + PAD) // STRIDE
        for tx in tl.static_range(TAPS):
            kx = (px + PAD) % STRIDE + STRIDE * tx
            ix = x - tx + (px + PAD) // STRIDE
            tap_ok = (ky < KERNEL) & (kx < KERNEL)
            src_ok = pix_ok & (iy >= 0) & (iy < h_in) & (ix >= 0) & (ix < w_in) & tap_ok
            a = tl.load(x_ptr + (iy * w_in + ix)[:, None] * C_IN + ci[None, :], mask=src_ok[:, None],
                        other=0.0)
            tap = tl.minimum(ky, KERNEL - 1) * KERNEL + tl.minimum(kx, KERNEL - 1)  # past-the-end tap: a = 0
            w = tl.load(w_up_ptr + tap * C_IN * C_OUT + ci[:, None] * C_OUT + co[None, :])
            acc = tl.dot(a.to(dtype), w, acc)
    h = _gelu(acc + tl.load(b_up_ptr + co)[None, :], GELU_TANH, HW_TANH).to(tl.float32)
    for blk in range(N_BLOCKS):
        layer = 2 * blk
        z = _gelu(tl.dot(h.to(dtype), tl.load(w_ptr + layer * C_OUT * C_OUT + square))
                  + tl.load(b_ptr + layer * C_OUT + co)[None, :], GELU_TANH, HW_TANH)
        h += _gelu(tl.dot(z.to(dtype), tl.load(w_ptr + (layer + 1) * C_OUT * C_OUT + square))
                   + tl.load(b_ptr + (layer + 1) * C_OUT + co)[None, :], GELU_TANH, HW_TANH).to(tl.float32)
    out_pix = (STRIDE * y + py) * w_out + STRIDE * x + px
    if RGB:
        c = tl.arange(0, RGB_COLS)
        rgb = tl.sigmoid(tl.dot(h.to(dtype), tl.load(w_rgb_ptr + co[:, None] * RGB_COLS + c[None, :]))
                         + tl.load(b_rgb_ptr + c)[None, :])
        tl.store(out_ptr + c[None, :] * (STRIDE * h_in * w_out) + out_pix[:, None],
                 rgb.to(out_ptr.dtype.element_ty), mask=pix_ok[:, None] & (c < 3)[None, :])
    else:
        tl.store(out_ptr + out_pix[:, None] * C_OUT + co[None, :], h.to(out_ptr.dtype.element_ty),
                 mask=pix_ok[:, None])


def _matrix(conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 conv's weight as the [in, out] matrix the kernels multiply by."""
    return conv.weight[:, :, 0, 0].t()


def _check_width(width: int, what: str, minimum: int = MIN_DOT) -> None:
    if width < minimum or width & (width - 1):
        raise ValueError(f"fused NeLF: {what} width {width} must be a power of two >= {minimum}")


def full_launch(changes: dict | None) -> dict:
    """DEFAULT_LAUNCH with ``changes``, checked (a bad key or value: ValueError naming it)."""
    launch = dict(DEFAULT_LAUNCH, **(changes or {}))
    unknown = sorted(set(launch) - set(DEFAULT_LAUNCH) - set(OPTIONAL_LAUNCH_KEYS))
    if unknown:
        raise ValueError(f"fused NeLF: unknown launch key(s) {', '.join(unknown)} (known: "
                         f"{', '.join([*DEFAULT_LAUNCH, *OPTIONAL_LAUNCH_KEYS])})")
    for key, choices in LAUNCH_CHOICES.items():
        if launch[key] not in choices:
            raise ValueError(f"fused NeLF: launch {key} must be {' or '.join(map(repr, choices))}, got {launch[key]!r}")
    for key, (least, power_of_two) in LAUNCH_COUNTS.items():
        value = launch.get(key)
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if key not in launch or (is_int and value == 0 and key in NONE_AT_ZERO):
            continue
        if not is_int or value < least or (power_of_two and value & (value - 1)):
            what = f"a power of two >= {least}" if power_of_two else f"an integer >= {least}"
            raise ValueError(f"fused NeLF: launch {key} {value!r} must be "
                             f"{'0 (none) or ' if key in NONE_AT_ZERO else ''}{what}")
    return launch


def _gelu_flags(launch: dict, device: torch.device) -> dict:
    """The kernels' GELU constexprs: the hardware tanh only where the kernel runs compiled on a GPU."""
    compiled = device.type == "cuda" and os.environ.get("TRITON_INTERPRET") != "1"
    return {"GELU_TANH": launch["gelu"] == "tanh", "HW_TANH": launch["gelu"] == "tanh" and compiled}


def split_rows(n_rows: int, block_m: int, tail_block_m: int, round_tiles: int) -> int:
    """The rows the body's main launch takes, ``block_m`` per program (its tile and any extra tile); a tail
    launch takes the rest in tiles of ``tail_block_m``. A tile holds its SM for the whole layer stack, so when
    the tiles make more than one round of ``round_tiles`` and the last round is partial (800x800's x8 body: 157
    tiles of 64 rows on 132 SMs), that round costs a full one on a few SMs. The main launch then takes the whole
    rounds and the tail launch the rest in smaller, quicker tiles, if they fit one round; otherwise (or with
    ``tail_block_m`` 0) all rows."""
    tiles = triton.cdiv(n_rows, block_m)
    main = tiles // round_tiles * round_tiles * block_m
    if (not tail_block_m or main in (0, n_rows) or tiles % round_tiles == 0
            or triton.cdiv(n_rows - main, tail_block_m) > round_tiles):
        return n_rows
    return main


def extra_tile_rows(n_rows: int, block_m: int, extra: int, round_tiles: int) -> int:
    """The rows of each body program's extra tile: the launch's ``extra`` where tiles of ``block_m`` alone would
    take more than one round of ``round_tiles`` (a program with an extra tile is slower, so it pays only where it
    saves a round: 800x800's 157 tiles of 64 rows become 125 programs of 80), else 0."""
    return extra if triton.cdiv(n_rows, block_m) > round_tiles else 0


def _sm_count(device: torch.device) -> int:
    """The device's SMs (the tiles of one round), one on a CPU (no tail launch there unless the launch says)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _block_weights(blocks: list[ResidualBlock], dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """[2 * n_blocks, width, width] matrices and [2 * n_blocks, width] biases of residual blocks (a 1-element
    placeholder each on ``device`` when there are none: a kernel argument must be a tensor)."""
    convs = [c for b in blocks for c in (b.conv1, b.conv2)]
    if not convs:
        return torch.zeros(1, dtype=dtype, device=device), torch.zeros(1, device=device)
    return (torch.stack([_matrix(c) for c in convs]).to(dtype).contiguous(),
            torch.stack([c.bias for c in convs]).float().contiguous())


class Body:
    """The stem, residual blocks and global skip of a :class:`NeLF` on ``body_kernel``, on the model's device."""

    def __init__(self, model: NeLF, dtype: torch.dtype, launch: dict | None = None):
        self.launch, self.dtype = full_launch(launch), dtype
        stem, blocks = model.stem[0], list(model.body)
        device = stem.weight.device
        # what a frame's launches need from the device, asked once
        self.round_tiles = self.launch.get("round_tiles") or _sm_count(device)
        self.gelu_flags = _gelu_flags(self.launch, device)
        self.width, self.c_in, self.n_blocks = stem.out_channels, stem.in_channels, len(blocks)
        _check_width(self.width, "body", 2 * MIN_DOT)  # each half-layer product is >= MIN_DOT wide
        self.block_k = min(self.launch["block_k"], self.width)
        self.k_stem = -(-self.c_in // self.block_k) * self.block_k
        with torch.no_grad():
            self.w_stem = torch.zeros(self.k_stem, self.width, dtype=dtype, device=device)
            self.w_stem[: self.c_in] = _matrix(stem).to(dtype)
            self.b_stem = stem.bias.float().contiguous()
            self.w, self.b = _block_weights(blocks, dtype, device)
            if blocks:  # [layer, half, in, out / 2]: the even, then the odd output columns
                n, w = self.w.shape[0], self.width
                self.w = self.w.view(n, w, w // 2, 2).permute(0, 3, 1, 2).contiguous()
                self.b = self.b.view(n, w // 2, 2).transpose(1, 2).contiguous()
        self.compiled = None  # the last launch's compiled kernel (registers, spills, PTX for the benchmark)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [n_rows, c_in] (row-major) -> [n_rows, width] in the operand dtype: the main launch (with an extra
        tile a program where ``extra_rows`` says), then the tail launch on the rows it leaves (``split_rows``)."""
        launch, n_rows = self.launch, x.shape[0]
        out = torch.empty(n_rows, self.width, device=x.device, dtype=self.dtype)
        extra = extra_tile_rows(n_rows, launch["block_m"], launch["extra_rows"], self.round_tiles)
        main = split_rows(n_rows, launch["block_m"] + extra, launch["tail_block_m"], self.round_tiles)
        self.compiled = self._launch(x, out, main, launch["block_m"], extra, launch["num_warps"])
        if main < n_rows:
            self._launch(x[main:], out[main:], n_rows - main, launch["tail_block_m"], 0, launch["tail_num_warps"])
        return out

    def _launch(self, x: torch.Tensor, out: torch.Tensor, n_rows: int, block_m: int, extra_m: int, num_warps: int):
        """``body_kernel`` on the first ``n_rows`` rows of ``x``, ``block_m + extra_m`` rows a program -> the
        compiled kernel."""
        return body_kernel[(triton.cdiv(n_rows, block_m + extra_m),)](
            x, out, self.w_stem, self.b_stem, self.w, self.b, n_rows, C_IN=self.c_in, K_STEM=self.k_stem,
            WIDTH=self.width, N_LAYERS=2 * self.n_blocks, BLOCK_M=block_m, EXTRA_M=extra_m, BLOCK_K=self.block_k,
            NUM_STAGES=self.launch["num_stages"], RESIDUAL_FP32=self.launch["residual"] == "fp32",
            **self.gelu_flags, num_warps=num_warps)


class UpsampleStage:
    """One super-resolution stage (transposed conv with its folded BatchNorm, GELU, residual blocks; the RGB
    layer and sigmoid when ``to_rgb`` is given) on ``upsample_kernel``, on the transposed conv's device."""

    def __init__(self, up: nn.ConvTranspose2d, blocks: list[ResidualBlock], to_rgb: nn.Conv2d | None,
                 dtype: torch.dtype, launch: dict | None = None):
        self.launch, self.dtype = full_launch(launch), dtype
        self.c_in, self.c_out = up.in_channels, up.out_channels
        _check_width(self.c_in, "super-resolution input")
        _check_width(self.c_out, "super-resolution")
        self.kernel, self.stride, self.pad = up.kernel_size[0], up.stride[0], up.padding[0]
        self.n_blocks = len(blocks)
        device = up.weight.device
        self.gelu_flags = _gelu_flags(self.launch, device)
        with torch.no_grad():
            self.w_up = up.weight.permute(2, 3, 0, 1).to(dtype).contiguous()  # [k, k, in, out]
            self.b_up = up.bias.float().contiguous()
            self.w, self.b = _block_weights(blocks, dtype, device)
            self.w_rgb = torch.zeros(self.c_out, RGB_PAD, dtype=dtype, device=device)
            self.b_rgb = torch.zeros(RGB_PAD, device=device)
            if to_rgb is not None:
                self.w_rgb[:, :3] = _matrix(to_rgb).to(dtype)
                self.b_rgb[:3] = to_rgb.bias.float()
        self.rgb = to_rgb is not None

    def __call__(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Image rows [h * w, c_in] -> rows [h * w * stride^2, c_out], or with RGB [3, h * stride, w * stride]."""
        s = self.stride
        shape = (3, h * s, w * s) if self.rgb else (h * w * s * s, self.c_out)
        out = torch.empty(shape, device=x.device, dtype=self.dtype)
        block_m = self.launch["sr_block_m"]
        upsample_kernel[(triton.cdiv(h * w, block_m) * s * s,)](
            x, out, self.w_up, self.b_up, self.w, self.b, self.w_rgb, self.b_rgb, h, w, C_IN=self.c_in,
            C_OUT=self.c_out, KERNEL=self.kernel, STRIDE=s, PAD=self.pad, TAPS=-(-self.kernel // s),
            N_BLOCKS=self.n_blocks, RGB=self.rgb, RGB_COLS=RGB_PAD, BLOCK_M=block_m,
            **self.gelu_flags, num_warps=self.launch["sr_num_warps"])
        return out


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """[1, C, h, w] -> [h*w, C] rows (a view when ``x`` is channels-last)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


class FusedNeLF:
    """Inference forward of a :class:`NeLF` on the fused kernels: the body, then one kernel per
    super-resolution stage, the last one ending in the RGB layer.

    ``dtype`` is the operand dtype: fp16 on the GPU, fp32 under the Triton interpreter. Batch 1 frame.
    """

    def __init__(self, model: NeLF, dtype: torch.dtype = torch.float16, launch: dict | None = None):
        self.launch = full_launch(launch)
        model = fold_batchnorm(model)
        self.cfg, self.dtype = model.cfg, dtype
        if not model.cfg.sr_stages:
            raise ValueError("fused NeLF: the network needs a super-resolution stage (the last one runs the RGB layer)")
        self.body = Body(model, dtype, self.launch)
        # per stage (network.super_resolution_head): transposed conv, its folded BatchNorm (now Identity), GELU,
        # then sr_blocks residual blocks
        layers, per_stage = list(model.upsample), 3 + model.cfg.sr_blocks
        self.stages = [UpsampleStage(layers[i], layers[i + 3:i + per_stage],
                                     model.to_rgb if i + per_stage == len(layers) else None, dtype, self.launch)
                       for i in range(0, len(layers), per_stage)]

    @torch.no_grad()
    def __call__(self, rays: torch.Tensor) -> torch.Tensor:
        """Encoded rays [1, C_in, h, w] -> RGB [1, 3, H, W] (the operand dtype)."""
        if rays.shape[0] != 1:
            raise ValueError(f"fused NeLF runs one frame at a time, got a batch of {rays.shape[0]}")
        _, _, h, w = rays.shape
        x = self.body(pixel_rows(rays.to(self.dtype).contiguous(memory_format=torch.channels_last)))
        for stage in self.stages:
            x = stage(x, h, w)
            h, w = h * stage.stride, w * stage.stride
        return x[None]


__all__ = ["FusedNeLF", "Body", "UpsampleStage", "body_kernel", "upsample_kernel", "split_rows", "extra_tile_rows",
           "full_launch", "pixel_rows", "DEFAULT_LAUNCH"]
