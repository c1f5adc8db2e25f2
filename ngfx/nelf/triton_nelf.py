"""Fused NeLF inference: every per-pixel residual MLP of the network in one Triton kernel, transposed convs in cuDNN.

The body (a 1x1-conv stem, 28 residual blocks of two 1x1 convs, a global skip) is a per-pixel MLP 256 wide, and
so are the residual blocks after each super-resolution stage (64 or 16 wide). ``residual_mlp_kernel`` runs one
such MLP for a tile of ``BLOCK_M`` pixels: the residual stream stays in registers (fp32), each layer's input is
staged in a per-program scratch tile of two ``BLOCK_M x WIDTH`` buffers (ping-pong, a few tens of KB that live
in L2/L1, never the whole frame in DRAM), and the weights stream layer by layer in ``BLOCK_K``-row chunks
through a software-pipelined ``tl.dot`` loop. BatchNorm is folded into the convs first (``fold_batchnorm``).
The transposed convs, their GELU and the last 1x1 conv to RGB stay in PyTorch (cuDNN), channels-last.

:class:`FusedNeLF` is inference only; :class:`ngfx.nelf.network.NeLF` remains the reference, and
``tests/test_nelf_triton.py`` compares the two under ``TRITON_INTERPRET=1``.

Why a scratch tile and not registers for the layer input: a ``tl.dot`` operand cannot be sliced along K, and
a whole 256 x 256 weight tile (128 KB fp16) is too large to stage at once; chunking K needs the layer input
addressable by column, which the scratch tile gives.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import nn

from ngfx.nelf.network import NeLF, ResidualBlock, fold_batchnorm

# launch shape: rows (pixels) per tile, K rows of weights per pipeline stage, warps, pipeline stages; optional:
# "programs" (the persistent grid's size, default 4 per multiprocessor), "residual": "registers" | "scratch",
# "compile_tail": torch.compile the super-resolution convs, GELU and output layer (default False),
# "fuse_sr": run the super-resolution residual blocks on the kernel (default True) or in PyTorch.
# bench_nelf.py probes others on the GPU; the defaults are what it chose there (see BENCHMARKS.md).
DEFAULT_LAUNCH = {"block_m": 64, "block_k": 32, "num_warps": 8, "num_stages": 4}
MIN_DOT = 16


@triton.jit
def _gelu(x):
    # nn.GELU()'s exact form
    return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def _layer(src, w_ptr, b_ptr, local, cols, ks, BLOCK_M: tl.constexpr, WIDTH: tl.constexpr, BLOCK_K: tl.constexpr,
           NUM_STAGES: tl.constexpr):
    """GELU(src @ W + b) for one scratch tile ``src`` [BLOCK_M, WIDTH] -> fp32 [BLOCK_M, WIDTH]."""
    acc = tl.zeros((BLOCK_M, WIDTH), tl.float32)
    for k in tl.range(0, WIDTH, BLOCK_K, num_stages=NUM_STAGES):
        a = tl.load(src + local[:, None] * WIDTH + (k + ks)[None, :])
        w = tl.load(w_ptr + (k + ks)[:, None] * WIDTH + cols[None, :])
        acc = tl.dot(a, w, acc)
    return _gelu(acc + tl.load(b_ptr + cols)[None, :])


@triton.jit
def residual_mlp_kernel(x_ptr, out_ptr, scratch_ptr, w_stem_ptr, b_stem_ptr, w_ptr, b_ptr, n_rows,
                        TILES_PER_PROGRAM: tl.constexpr, C_IN: tl.constexpr, K_STEM: tl.constexpr, WIDTH: tl.constexpr,
                        N_BLOCKS: tl.constexpr,
                        HAS_STEM: tl.constexpr, GLOBAL_SKIP: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_K: tl.constexpr, NUM_STAGES: tl.constexpr, RESIDUAL_IN_REGISTERS: tl.constexpr):
    """Rows of ``x`` [n_rows, C_IN] -> ``out`` [n_rows, WIDTH]:
    h = GELU(x @ W_stem + b) (or h = x without a stem); per block h += GELU(GELU(h @ W1 + b1) @ W2 + b2);
    out = h (+ the stem's output with GLOBAL_SKIP). Weights are [in, out] row-major, blocks stacked as
    [2 * N_BLOCKS, WIDTH, WIDTH]; the stem's are zero-padded to K_STEM (a multiple of BLOCK_K) input rows.
    The residual stream h is kept in fp32 registers (RESIDUAL_IN_REGISTERS) or only in the scratch tile, at
    the operand precision, which frees the registers for larger tiles."""
    dtype = scratch_ptr.dtype.element_ty
    pid = tl.program_id(0)
    local = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, WIDTH)
    ks = tl.arange(0, BLOCK_K)
    buf_a = scratch_ptr + pid * (2 * BLOCK_M * WIDTH)
    buf_b = buf_a + BLOCK_M * WIDTH
    tile = local[:, None] * WIDTH + cols[None, :]
    # a persistent grid: each program walks tiles, so the scratch stays a few tiles' worth, cache resident
    for i in range(TILES_PER_PROGRAM):  # tiles past the end are masked out
        rows = (pid + i * tl.num_programs(0)) * BLOCK_M + local
        row_ok = rows < n_rows
        out_tile = out_ptr + rows[:, None] * WIDTH + cols[None, :]
        if HAS_STEM:
            acc = tl.zeros((BLOCK_M, WIDTH), tl.float32)
            for k in tl.range(0, K_STEM, BLOCK_K, num_stages=NUM_STAGES):
                a = tl.load(x_ptr + rows[:, None] * C_IN + (k + ks)[None, :],
                            mask=row_ok[:, None] & ((k + ks) < C_IN)[None, :], other=0.0)
                w = tl.load(w_stem_ptr + (k + ks)[:, None] * WIDTH + cols[None, :])
                acc = tl.dot(a.to(dtype), w, acc)
            h = _gelu(acc + tl.load(b_stem_ptr + cols)[None, :])
        else:
            h = tl.load(x_ptr + rows[:, None] * WIDTH + cols[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
        if GLOBAL_SKIP:  # kept in the output tile until the end, to spare registers
            tl.store(out_tile, h.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
        tl.debug_barrier()  # the previous tile's last reads of the scratch are done
        tl.store(buf_a + tile, h.to(dtype))
        tl.debug_barrier()  # the tile is read by other threads than those that wrote it
        for blk in range(N_BLOCKS):
            layer = 2 * blk
            y = _layer(buf_a, w_ptr + layer * WIDTH * WIDTH, b_ptr + layer * WIDTH, local, cols, ks, BLOCK_M, WIDTH,
                       BLOCK_K, NUM_STAGES)
            tl.store(buf_b + tile, y.to(dtype))
            tl.debug_barrier()
            z = _layer(buf_b, w_ptr + (layer + 1) * WIDTH * WIDTH, b_ptr + (layer + 1) * WIDTH, local, cols, ks,
                       BLOCK_M, WIDTH, BLOCK_K, NUM_STAGES)
            if RESIDUAL_IN_REGISTERS:
                h += z
            else:  # each element is read back by the thread that adds to it; no other thread writes it
                h = tl.load(buf_a + tile).to(tl.float32) + z
            tl.store(buf_a + tile, h.to(dtype))
            tl.debug_barrier()
        if GLOBAL_SKIP:
            h += tl.load(out_tile, mask=row_ok[:, None], other=0.0).to(tl.float32)
        tl.store(out_tile, h.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


def _matrix(conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 conv's weight as the [in, out] matrix the kernel multiplies by."""
    return conv.weight[:, :, 0, 0].t()


class ResidualMLP:
    """One per-pixel residual MLP (optional stem, ``blocks``, optional global skip) on the fused kernel."""

    def __init__(self, blocks: list[ResidualBlock], stem: nn.Conv2d | None, global_skip: bool, dtype: torch.dtype,
                 launch: dict):
        self.launch = launch
        conv = blocks[0].conv1 if blocks else stem
        self.width = conv.out_channels
        if self.width < MIN_DOT or self.width & (self.width - 1):
            raise ValueError(f"fused residual MLP: width {self.width} must be a power of two >= {MIN_DOT}")
        device = conv.weight.device
        with torch.no_grad():
            mats = [_matrix(c) for b in blocks for c in (b.conv1, b.conv2)]
            self.w = torch.stack(mats).to(dtype).contiguous() if mats else torch.zeros(1, device=device, dtype=dtype)
            self.b = (torch.stack([c.bias for b in blocks for c in (b.conv1, b.conv2)]).float().contiguous()
                      if mats else torch.zeros(1, device=device))
            self.c_in = stem.in_channels if stem is not None else self.width
            self.block_k = block_k = min(launch["block_k"], self.width)
            self.k_stem = -(-self.c_in // block_k) * block_k
            if stem is not None:
                w_stem = torch.zeros(self.k_stem, self.width, device=device, dtype=dtype)
                w_stem[: self.c_in] = _matrix(stem).to(dtype)
                self.w_stem, self.b_stem = w_stem, stem.bias.float().contiguous()
            else:
                self.w_stem = self.b_stem = torch.zeros(1, device=device, dtype=dtype)
        self.n_blocks, self.has_stem, self.global_skip, self.dtype = len(blocks), stem is not None, global_skip, dtype
        self._scratch: torch.Tensor | None = None
        self.compiled = None  # the last launch's compiled kernel (registers, spills, PTX for the benchmark)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [n_rows, c_in] (row-major) -> [n_rows, width] in the operand dtype."""
        n_rows = x.shape[0]
        block_m = self.launch["block_m"]
        grid = min(triton.cdiv(n_rows, block_m), self.launch.get("programs") or _programs(x.device))
        size = grid * 2 * block_m * self.width
        if self._scratch is None or self._scratch.numel() < size or self._scratch.device != x.device:
            self._scratch = torch.empty(size, device=x.device, dtype=self.dtype)
        out = torch.empty(n_rows, self.width, device=x.device, dtype=self.dtype)
        self.compiled = residual_mlp_kernel[(grid,)](
            x, out, self._scratch, self.w_stem, self.b_stem, self.w, self.b, n_rows,
            TILES_PER_PROGRAM=triton.cdiv(triton.cdiv(n_rows, block_m), grid), C_IN=self.c_in,
            K_STEM=self.k_stem, WIDTH=self.width, N_BLOCKS=self.n_blocks, HAS_STEM=self.has_stem,
            GLOBAL_SKIP=self.global_skip, BLOCK_M=block_m, BLOCK_K=self.block_k,
            NUM_STAGES=self.launch["num_stages"], RESIDUAL_IN_REGISTERS=self.launch.get("residual") != "scratch",
            num_warps=self.launch["num_warps"])
        return out


def _programs(device: torch.device) -> int:
    """Programs of the persistent grid: a few per multiprocessor on the GPU, one per tile elsewhere."""
    if device.type != "cuda":
        return 1 << 30
    return 4 * torch.cuda.get_device_properties(device).multi_processor_count


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[1, C, h, w] -> [h*w, C] rows (a view when ``x`` is channels-last)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _image(rows: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[h*w, C] rows -> [1, C, h, w] with channels-last memory (a view)."""
    return rows.view(1, h, w, rows.shape[1]).permute(0, 3, 1, 2)


class FusedNeLF:
    """Inference forward of a :class:`NeLF` with its per-pixel MLPs on the fused kernel.

    ``dtype`` is the operand dtype: fp16 on the GPU, fp32 under the Triton interpreter. Batch 1 frame.
    """

    def __init__(self, model: NeLF, dtype: torch.dtype = torch.float16, launch: dict | None = None):
        self.launch = dict(DEFAULT_LAUNCH, **(launch or {}))
        model = fold_batchnorm(model)
        self.cfg, self.dtype = model.cfg, dtype
        if model.cfg.norm != "none" and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            raise ValueError("fused NeLF: BatchNorm left after folding")
        self.body = ResidualMLP(list(model.body), model.stem[0], True, dtype, self.launch)
        # super-resolution: [transposed conv (+ folded BN) + GELU] in PyTorch, then its residual blocks fused
        compile_tail = torch.compile if self.launch.get("compile_tail") else (lambda module: module)
        self.stages: list[tuple[nn.Module, ResidualMLP | nn.Module | None]] = []
        layers, i = list(model.upsample), 0
        while i < len(layers):
            up = nn.Sequential(*layers[i:i + 3]).to(dtype).to(memory_format=torch.channels_last)  # convT, BN, GELU
            i += 3
            blocks = []
            while i < len(layers) and isinstance(layers[i], ResidualBlock):
                blocks.append(layers[i])
                i += 1
            tail = None
            if blocks:
                width = blocks[0].conv1.out_channels
                fusable = self.launch.get("fuse_sr", True) and width >= MIN_DOT and not width & (width - 1)
                tail = (ResidualMLP(blocks, None, False, dtype, self.launch) if fusable else
                        compile_tail(nn.Sequential(*blocks).to(dtype).to(memory_format=torch.channels_last)))
            self.stages.append((compile_tail(up), tail))
        self.head = compile_tail(nn.Sequential(model.to_rgb, nn.Sigmoid()).to(dtype).to(
            memory_format=torch.channels_last))

    @torch.no_grad()
    def __call__(self, rays: torch.Tensor) -> torch.Tensor:
        """Encoded rays [1, C_in, h, w] -> RGB [1, 3, H, W] (the operand dtype)."""
        if rays.shape[0] != 1:
            raise ValueError(f"fused NeLF runs one frame at a time, got a batch of {rays.shape[0]}")
        _, _, h, w = rays.shape
        rays = rays.to(self.dtype).contiguous(memory_format=torch.channels_last)
        x = _image(self.body(_rows(rays)), h, w)
        for up, tail in self.stages:
            x = up(x).contiguous(memory_format=torch.channels_last)
            if isinstance(tail, ResidualMLP):
                x = _image(tail(_rows(x)), x.shape[2], x.shape[3])
            elif tail is not None:
                x = tail(x)
        return self.head(x)


__all__ = ["FusedNeLF", "ResidualMLP", "residual_mlp_kernel", "DEFAULT_LAUNCH"]
