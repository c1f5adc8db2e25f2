"""Triton kernels for the multi-resolution grid encoding, beside :func:`ngfx.encodings.reference.grid_encode`.

One program encodes ``BLOCK`` points at every level at once: the work is laid out as
``[BLOCK, LEVELS, F]`` tensors, so the gathers of all levels and all 2^D corners are independent loads in
flight together (the forward is bound by L2 latency, not arithmetic). Per-level metadata (scale, entry
count, offset, dense strides) is a tiny int/float tensor read once per program.

Precision: on CUDA the forward reads an fp16 copy of the table (16 levels x 2^19 x 2 features is 32 MiB,
which fits the H200's 60 MB L2; the fp32 table does not), interpolates in fp32 and returns fp32. The
backward accumulates fp32 gradients with fp32 atomics into a zeroed buffer; atomics rather than a sort:
hash collisions make the scatter pattern data dependent, and on the GPU the table's 32-64 MiB sits in L2,
where atomics resolve. The atomics are relaxed: Triton's default (acq_rel) wraps each one in a GPU-wide memory
barrier and cache invalidation (MEMBAR.ALL.GPU, CCTL.IVALL in the SASS), which serialises the scatter, while a
sum needs no ordering. For F = 2 on the GPU each corner's feature pair is one 8-byte vector reduction
(``red.global.add.v2.f32``, sm_90), half the atomic operations; the interpreter cannot run inline PTX, so there
(CPU tests, fp32 everywhere) the same pairs go through ``tl.atomic_add``.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ngfx.encodings.config import GridConfig
from ngfx.encodings.derived import derived

INTERPOLATION_CODES = {"Linear": 0, "Smoothstep": 1, "Nearest": 2}
SUPPORTED_DIMS = (2, 3)
FORWARD_BLOCK = 256  # best of the H200 sweep (issue 13's run; 128 x 4 within 1 %)
FORWARD_WARPS = 8
# Encoding.features (inference) on rendered samples, which come ray after ray (neighbours share cells) rather than
# uniform: H200, Lego 4K frame (703a117, bench_render --knobs): 256 x 8 warps 42.48 ms, 128 x 4 42.08, 64 x 4 40.18
FEATURES_BLOCK = 64
FEATURES_WARPS = 4
BACKWARD_BLOCK = 32  # best of the H200 sweep (issue 13's run: 32 x 2, 64 x 4, 128 x 8 within 0.5 %)
BACKWARD_WARPS = 2


@triton.jit
def _level_geometry(x_ptr, meta_scale_ptr, offs_n, mask_n, offs_l, mask_l, d: tl.constexpr, D: tl.constexpr):
    """Integer cell [BLOCK, LEVELS] (int32), fractional position in it and d(frac)/dx (the level's scale)."""
    x = tl.load(x_ptr + offs_n * D + d, mask=mask_n, other=0.0)
    scale = tl.load(meta_scale_ptr + offs_l, mask=mask_l, other=0.0)
    pos = x[:, None] * scale[None, :] + 0.5
    cell = tl.floor(pos)
    return cell.to(tl.int32), pos - cell, scale


@triton.jit
def _corner_index(cells0, cells1, cells2, bits: tl.constexpr, stride_ptr, hashed, size, magic, shift, offs_l,
                  mask_l, D: tl.constexpr):
    """Entry index [BLOCK, LEVELS] of corner ``bits`` of each point's cell, in uint32 like the reference."""
    c0 = (cells0 + (bits & 1)).to(tl.uint32)
    c1 = (cells1 + ((bits >> 1) & 1)).to(tl.uint32)
    s0 = tl.load(stride_ptr + offs_l * 3 + 0, mask=mask_l, other=0).to(tl.uint32)
    s1 = tl.load(stride_ptr + offs_l * 3 + 1, mask=mask_l, other=0).to(tl.uint32)
    hash_index = c0 ^ (c1 * 2654435761)
    dense_index = c0 * s0[None, :] + c1 * s1[None, :]
    if D == 3:
        c2 = (cells2 + ((bits >> 2) & 1)).to(tl.uint32)
        s2 = tl.load(stride_ptr + offs_l * 3 + 2, mask=mask_l, other=0).to(tl.uint32)
        hash_index = hash_index ^ (c2 * 805459861)
        dense_index = dense_index + c2 * s2[None, :]
    index = tl.where(hashed[None, :] != 0, hash_index, dense_index)
    # index % size by multiply-high (libdivide's branch-free u32 scheme): a hardware division per corner
    # and level would cost more than the rest of the index arithmetic together
    high = tl.umulhi(index, magic[None, :])
    quotient = (((index - high) >> 1) + high) >> shift[None, :]
    return index - quotient * size[None, :]


@triton.jit
def _corner_weight(fracs0, fracs1, fracs2, bits: tl.constexpr, INTERP: tl.constexpr, D: tl.constexpr):
    w0 = _smooth(fracs0, INTERP)
    w1 = _smooth(fracs1, INTERP)
    weight = (w0 if (bits & 1) else 1.0 - w0) * (w1 if (bits >> 1) & 1 else 1.0 - w1)
    if D == 3:
        w2 = _smooth(fracs2, INTERP)
        weight = weight * (w2 if (bits >> 2) & 1 else 1.0 - w2)
    return weight


@triton.jit
def _smooth(frac, INTERP: tl.constexpr):
    if INTERP == 1:
        return frac * frac * (3.0 - 2.0 * frac)
    return frac


@triton.jit
def _smooth_derivative(frac, INTERP: tl.constexpr):
    if INTERP == 1:
        return 6.0 * frac * (1.0 - frac)
    return tl.full(frac.shape, 1.0, tl.float32)


@triton.jit
def _point_levels(x_ptr, meta_scale_ptr, meta_int_ptr, offs_n, mask_n, D: tl.constexpr, F: tl.constexpr,
                  LEVELS: tl.constexpr, N_LEVELS: tl.constexpr):
    """Everything the gather loops need about points ``offs_n`` at every level (padded levels masked).

    ``meta_int`` holds per level: entry offset, entry count, hashed flag, modulo magic and shift (5 int32).
    """
    offs_l = tl.arange(0, LEVELS)
    mask_l = offs_l < N_LEVELS
    offs_f = tl.arange(0, F)
    mask3 = mask_n[:, None, None] & mask_l[None, :, None] & (offs_f[None, None, :] < F)
    level_offset = tl.load(meta_int_ptr + offs_l * 5 + 0, mask=mask_l, other=0)
    size = tl.load(meta_int_ptr + offs_l * 5 + 1, mask=mask_l, other=8).to(tl.uint32)
    hashed = tl.load(meta_int_ptr + offs_l * 5 + 2, mask=mask_l, other=0)
    magic = tl.load(meta_int_ptr + offs_l * 5 + 3, mask=mask_l, other=0).to(tl.uint32)
    shift = tl.load(meta_int_ptr + offs_l * 5 + 4, mask=mask_l, other=2).to(tl.uint32)
    cells0, fracs0, scale = _level_geometry(x_ptr, meta_scale_ptr, offs_n, mask_n, offs_l, mask_l, 0, D)
    cells1, fracs1, _ = _level_geometry(x_ptr, meta_scale_ptr, offs_n, mask_n, offs_l, mask_l, 1, D)
    cells2 = cells1
    fracs2 = fracs1
    if D == 3:
        cells2, fracs2, _ = _level_geometry(x_ptr, meta_scale_ptr, offs_n, mask_n, offs_l, mask_l, 2, D)
    return (offs_l, mask_l, offs_f, mask3, level_offset, size, hashed, magic, shift, cells0, cells1, cells2,
            fracs0, fracs1, fracs2, scale)


@triton.jit
def encode_block(x_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, offs_n, mask_n,
                 D: tl.constexpr, F: tl.constexpr, LEVELS: tl.constexpr, N_LEVELS: tl.constexpr,
                 INTERP: tl.constexpr, PACKED: tl.constexpr):
    """Encoded features [BLOCK, LEVELS * F] float32 of the points ``offs_n`` (levels >= N_LEVELS are zero).

    ``PACKED``: the table is fp16 with F = 2, passed as int32 words, so each corner is one 4-byte gather.
    """
    (offs_l, mask_l, offs_f, mask3, level_offset, size, hashed, magic, shift, cells0, cells1, cells2, fracs0,
     fracs1, fracs2, _) = _point_levels(x_ptr, meta_scale_ptr, meta_int_ptr, offs_n, mask_n, D, F, LEVELS, N_LEVELS)
    N_CORNERS: tl.constexpr = 1 if INTERP == 2 else 2**D
    if PACKED:
        return _encode_packed_pairs(table_ptr, offs_n, mask_n, offs_l, mask_l, level_offset, size, hashed, magic,
                                    shift, cells0, cells1, cells2, fracs0, fracs1, fracs2, stride_ptr, D,
                                    LEVELS, INTERP, N_CORNERS)
    features = tl.zeros((offs_n.shape[0], LEVELS, F), tl.float32)
    for bits in tl.static_range(N_CORNERS):
        index = _corner_index(cells0, cells1, cells2, bits, stride_ptr, hashed, size, magic, shift, offs_l, mask_l,
                              D)
        entry = (level_offset[None, :] + index.to(tl.int32)) * F
        values = tl.load(table_ptr + entry[:, :, None] + offs_f[None, None, :], mask=mask3, other=0.0)
        if INTERP == 2:
            features += values.to(tl.float32)
        else:
            weight = _corner_weight(fracs0, fracs1, fracs2, bits, INTERP, D)
            features += weight[:, :, None] * values.to(tl.float32)
    return tl.reshape(features, (offs_n.shape[0], LEVELS * F))


@triton.jit
def _encode_packed_pairs(table_ptr, offs_n, mask_n, offs_l, mask_l, level_offset, size, hashed, magic, shift,
                         cells0, cells1, cells2, fracs0, fracs1, fracs2, stride_ptr, D: tl.constexpr,
                         LEVELS: tl.constexpr, INTERP: tl.constexpr, N_CORNERS: tl.constexpr):
    mask2 = mask_n[:, None] & mask_l[None, :]
    first = tl.zeros((offs_n.shape[0], LEVELS), tl.float32)
    second = tl.zeros((offs_n.shape[0], LEVELS), tl.float32)
    for bits in tl.static_range(N_CORNERS):
        index = _corner_index(cells0, cells1, cells2, bits, stride_ptr, hashed, size, magic, shift, offs_l, mask_l,
                              D)
        word = tl.load(table_ptr + level_offset[None, :] + index.to(tl.int32), mask=mask2, other=0)
        value0 = (word & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        value1 = (word >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        if INTERP == 2:
            first += value0
            second += value1
        else:
            weight = _corner_weight(fracs0, fracs1, fracs2, bits, INTERP, D)
            first += weight * value0
            second += weight * value1
    return tl.reshape(tl.join(first, second), (offs_n.shape[0], LEVELS * 2))


@triton.jit
def _grid_forward_kernel(x_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, out_ptr, n_points,
                         D: tl.constexpr, F: tl.constexpr, LEVELS: tl.constexpr, N_LEVELS: tl.constexpr,
                         INTERP: tl.constexpr, PACKED: tl.constexpr, BLOCK: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask_n = offs_n < n_points
    features = encode_block(x_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, offs_n, mask_n,
                            D, F, LEVELS, N_LEVELS, INTERP, PACKED)
    offs_c = tl.arange(0, LEVELS * F)
    tl.store(out_ptr + offs_n[:, None] * (N_LEVELS * F) + offs_c[None, :], features.to(out_ptr.dtype.element_ty),
             mask=mask_n[:, None] & (offs_c[None, :] < N_LEVELS * F))


@triton.jit
def _scatter_add_pairs(address, first, second, mask, VECTOR_RED: tl.constexpr):
    """table[address] += first, table[address + 1] += second, where ``mask`` (all [BLOCK, LEVELS])."""
    if VECTOR_RED:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $4, 0; @p red.relaxed.gpu.global.add.v2.f32 [$1], {$2, $3}; "
            "mov.b32 $0, 0; }",
            "=r,l,f,f,r", [address.to(tl.int64, bitcast=True), first, second, mask.to(tl.int32)],
            dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.atomic_add(address, first, mask=mask, sem="relaxed")
        tl.atomic_add(address + 1, second, mask=mask, sem="relaxed")


@triton.jit
def _grid_backward_kernel(x_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, grad_out_ptr,
                          grad_table_ptr, grad_x_ptr, n_points,
                          D: tl.constexpr, F: tl.constexpr, LEVELS: tl.constexpr, N_LEVELS: tl.constexpr,
                          INTERP: tl.constexpr, NEED_DX: tl.constexpr, VECTOR_RED: tl.constexpr,
                          BLOCK: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask_n = offs_n < n_points
    (offs_l, mask_l, offs_f, mask3, level_offset, size, hashed, magic, shift, cells0, cells1, cells2, fracs0,
     fracs1, fracs2, scale) = _point_levels(x_ptr, meta_scale_ptr, meta_int_ptr, offs_n, mask_n, D, F, LEVELS, N_LEVELS)
    grad_out = tl.load(grad_out_ptr + offs_n[:, None, None] * (N_LEVELS * F) + offs_l[None, :, None] * F
                       + offs_f[None, None, :], mask=mask3, other=0.0)
    mask2 = mask_n[:, None] & mask_l[None, :]
    if F == 2:
        grad_first, grad_second = tl.split(grad_out)
    # d(corner weight)/dx_d = scale * h'(frac_d) * (+-1) * product of the other dimensions' weights
    w0 = _smooth(fracs0, INTERP)
    w1 = _smooth(fracs1, INTERP)
    w2 = _smooth(fracs2, INTERP)
    dw0 = _smooth_derivative(fracs0, INTERP) * scale[None, :]
    dw1 = _smooth_derivative(fracs1, INTERP) * scale[None, :]
    dw2 = _smooth_derivative(fracs2, INTERP) * scale[None, :]
    dx0 = tl.zeros((BLOCK, LEVELS), tl.float32)
    dx1 = tl.zeros((BLOCK, LEVELS), tl.float32)
    dx2 = tl.zeros((BLOCK, LEVELS), tl.float32)
    N_CORNERS: tl.constexpr = 1 if INTERP == 2 else 2**D
    for bits in tl.static_range(N_CORNERS):
        index = _corner_index(cells0, cells1, cells2, bits, stride_ptr, hashed, size, magic, shift, offs_l, mask_l,
                              D)
        entry = (level_offset[None, :] + index.to(tl.int32)) * F
        pointers = entry[:, :, None] + offs_f[None, None, :]
        weight = tl.full(index.shape, 1.0, tl.float32)
        if INTERP != 2:
            weight = _corner_weight(fracs0, fracs1, fracs2, bits, INTERP, D)
        if F == 2:
            _scatter_add_pairs(grad_table_ptr + entry, grad_first * weight, grad_second * weight, mask2, VECTOR_RED)
        else:
            tl.atomic_add(grad_table_ptr + pointers, grad_out * weight[:, :, None], mask=mask3, sem="relaxed")
        if INTERP != 2:
            if NEED_DX:
                values = tl.load(table_ptr + pointers, mask=mask3, other=0.0)
                g = tl.sum(grad_out * values, axis=2)  # dL/d(corner weight), [BLOCK, LEVELS]
                f0 = w0 if (bits & 1) else 1.0 - w0
                f1 = w1 if (bits >> 1) & 1 else 1.0 - w1
                s0 = 1.0 if (bits & 1) else -1.0
                s1 = 1.0 if (bits >> 1) & 1 else -1.0
                if D == 3:
                    f2 = w2 if (bits >> 2) & 1 else 1.0 - w2
                    s2 = 1.0 if (bits >> 2) & 1 else -1.0
                    dx0 += g * s0 * dw0 * f1 * f2
                    dx1 += g * s1 * dw1 * f0 * f2
                    dx2 += g * s2 * dw2 * f0 * f1
                else:
                    dx0 += g * s0 * dw0 * f1
                    dx1 += g * s1 * dw1 * f0
    if NEED_DX:
        tl.store(grad_x_ptr + offs_n * D + 0, tl.sum(dx0, axis=1), mask=mask_n)
        tl.store(grad_x_ptr + offs_n * D + 1, tl.sum(dx1, axis=1), mask=mask_n)
        if D == 3:
            tl.store(grad_x_ptr + offs_n * D + 2, tl.sum(dx2, axis=1), mask=mask_n)


def _modulo_magic(divisor: int) -> tuple[int, int]:
    """(magic, shift) such that n % divisor == n - divisor * ((((n - hi) >> 1) + hi) >> shift) for every uint32 n,
    hi = umulhi(n, magic) (libdivide's branch-free unsigned 32-bit division); magic as int32 bits."""
    log2 = divisor.bit_length() - 1
    if divisor & (divisor - 1) == 0:
        return 0, log2 - 1
    magic, remainder = divmod(1 << (32 + log2), divisor)
    magic = 2 * magic + (2 * remainder >= divisor)
    magic = (magic + 1) & 0xFFFFFFFF
    return magic - (1 << 32) if magic >= 1 << 31 else magic, log2


@functools.lru_cache(maxsize=64)
def level_metadata(cfg: GridConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-level tensors the kernels read: scales [L] f32, (offset, entries, hashed, magic, shift) [L, 5] i32, the
    row-major strides [L, 3] i32 (0 for dimensions tiny-cuda-nn leaves out to avoid overflow).

    Cached per config and device: building them is a host-to-device copy, which waits for the GPU to drain
    its queue, once per call otherwise. Read-only; the kernels never write them."""
    if cfg.n_dims not in SUPPORTED_DIMS:
        raise ValueError(f"the triton grid backend supports D in {SUPPORTED_DIMS}, got D={cfg.n_dims}; "
                         "use backend='torch'")
    if cfg.n_params >= 2**31:
        raise ValueError(f"the triton grid backend indexes with int32; {cfg.n_params} parameters are too many")
    strides = []
    for level in range(cfg.n_levels):
        row, stride = [0, 0, 0], 1
        for d in range(cfg.n_dims):
            if stride > cfg.table_sizes[level]:
                break
            row[d] = stride
            stride *= cfg.resolutions[level]
        strides.append(row)
    ints = [[cfg.offsets[l], cfg.table_sizes[l], int(cfg.hashed[l]), *_modulo_magic(cfg.table_sizes[l])]
            for l in range(cfg.n_levels)]
    return (torch.tensor(cfg.scales, dtype=torch.float32, device=device),
            torch.tensor(ints, dtype=torch.int32, device=device),
            torch.tensor(strides, dtype=torch.int64, device=device).to(torch.int32))


def table_dtype(device: torch.device) -> torch.dtype:
    """fp16 tables on the GPU (L2-resident, as tiny-cuda-nn), fp32 under the CPU interpreter."""
    return torch.float16 if device.type == "cuda" else torch.float32


def forward_table(params: torch.Tensor, cfg: GridConfig, dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
    """The table the forward kernels read and whether it is packed (fp16 pairs as int32 words); read-only, reused
    while ``params`` is unchanged (:mod:`ngfx.encodings.derived`)."""
    packed = dtype == torch.float16 and cfg.n_features_per_level == 2

    def build() -> torch.Tensor:
        table = params.detach().to(dtype).contiguous()
        return table.view(torch.int32) if packed else table

    return derived([params], ("table", dtype, packed), build), packed


def kernel_constants(cfg: GridConfig, min_width: int = 1) -> dict:
    """Constexprs of the kernels; levels are padded to a power of two (and to ``min_width`` features)."""
    levels = max(triton.next_power_of_2(cfg.n_levels), triton.cdiv(min_width, cfg.n_features_per_level))
    return dict(D=cfg.n_dims, F=cfg.n_features_per_level, LEVELS=levels,
                N_LEVELS=cfg.n_levels, INTERP=INTERPOLATION_CODES[cfg.interpolation])


def encode_forward(x: torch.Tensor, params: torch.Tensor, cfg: GridConfig, precision: torch.dtype | None = None,
                   out_dtype: torch.dtype = torch.float32, inference: bool = False) -> torch.Tensor:
    """The forward kernel alone, no autograd: x [N, D] float32 -> features [N, n_output_dims] in ``out_dtype``
    (inference may ask fp16: half the bytes written and read back by an fp16 consumer). ``precision``: as
    :func:`grid_encode`; ``inference`` takes the launch shape timed on rendered samples."""
    table, packed = forward_table(params, cfg, precision or table_dtype(x.device))
    out = torch.empty(x.shape[0], cfg.n_output_dims, dtype=out_dtype, device=x.device)
    block, warps = (FEATURES_BLOCK, FEATURES_WARPS) if inference else (FORWARD_BLOCK, FORWARD_WARPS)
    if x.shape[0]:
        _grid_forward_kernel[(triton.cdiv(x.shape[0], block),)](
            x, table, *level_metadata(cfg, x.device), out, x.shape[0], **kernel_constants(cfg), PACKED=packed,
            BLOCK=block, num_warps=warps)
    return out


class _GridEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params, cfg: GridConfig, precision):
        x = x.contiguous().float()
        out = encode_forward(x, params, cfg, precision)
        ctx.save_for_backward(x, params)
        ctx.cfg, ctx.meta = cfg, level_metadata(cfg, x.device)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, params = ctx.saved_tensors
        cfg = ctx.cfg
        need_dx = ctx.needs_input_grad[0]
        grad_table = torch.zeros(params.numel(), dtype=torch.float32, device=x.device)
        # zeros: Nearest has no x-gradient and the kernel writes none; a dummy pointer when unused
        grad_x = torch.zeros_like(x) if need_dx else grad_table
        grid = (triton.cdiv(x.shape[0], BACKWARD_BLOCK),)
        _grid_backward_kernel[grid](x, params.detach().float().contiguous(), *ctx.meta,
                                    grad_out.contiguous().float(), grad_table, grad_x, x.shape[0],
                                    **kernel_constants(cfg), NEED_DX=need_dx,
                                    VECTOR_RED=x.device.type == "cuda" and cfg.n_features_per_level == 2,
                                    BLOCK=BACKWARD_BLOCK, num_warps=BACKWARD_WARPS)
        return (grad_x if need_dx else None), grad_table.to(params.dtype), None, None


def grid_encode(x: torch.Tensor, params: torch.Tensor, cfg: GridConfig,
                precision: torch.dtype | None = None) -> torch.Tensor:
    """Triton twin of :func:`ngfx.encodings.reference.grid_encode`.

    Args:
        x: [N, D] float32 positions in [0, 1], D in (2, 3); gradients flow to x when it requires them.
        params: [n_params] flat table (tiny-cuda-nn layout); gradients always flow to it.
        precision: dtype of the table copy the forward reads (default fp16 on CUDA, fp32 otherwise).
    Returns:
        [N, n_levels * F] float32, level-major.
    """
    if x.ndim != 2 or x.shape[1] != cfg.n_dims:
        raise ValueError(f"grid_encode: x must have shape [N, {cfg.n_dims}], got {list(x.shape)}")
    if params.numel() != cfg.n_params:
        raise ValueError(f"grid_encode: params has {params.numel()} values, the config needs {cfg.n_params}")
    return _GridEncode.apply(x, params, cfg, precision)
