"""The fused per-ray volume renderer: march -> grid encoding -> MLPs -> composite in one persistent kernel.

The Triton twin of :func:`ngfx.render.ops.fused_volume.render_volume`. Each program holds ``BLOCK`` lanes,
one ray each, and loops until the frame's rays run out:

1. every lane walks its ray's lattice through the occupancy grid (:func:`triton_raymarch.lattice_step`,
   jumping over empty cells) to its next occupied sample; a lane whose ray leaves the box writes its pixel
   and takes the next ray of the frame at once (a prefix sum over the lanes and one atomic per program),
   so the tile stays full without a host round trip;
2. the tile's samples are encoded (:func:`ngfx.encodings.triton_grid.encode_block`) and pushed through the
   density MLP and, for NeRF, the SH + colour MLP (:func:`ngfx.encodings.triton_mlp.mlp_block`, ``tl.dot``
   on fp16 operands on the GPU), all in registers;
3. each lane composites its sample front to back; a ray whose transmittance fell to ``min_transmittance``
   (early termination, checked after every sample) writes its pixel and the lane takes a new ray.

Per sample nothing goes to HBM but its position (12 bytes into a per-program scratch row that
``encode_block`` reads back through L1/L2, as it reads points by pointer). The samples are those of the
stage-by-stage path (same lattice, same occupancy jumps); rays stop after the sample that drops their
transmittance, not at the end of a segment, so fewer samples are evaluated.

NeRF's colour input ``[h (16), SH (16)]`` is built by interleaving the two tiles (``tl.join``), with the colour
network's first-layer rows permuted to match on the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.encodings import triton_grid, triton_mlp
from ngfx.render import stages
from ngfx.render.ops.fused_volume import VolumeField
from ngfx.render.ops.raymarch import SKIP_MARGIN
from ngfx.render.ops.triton_raymarch import grid_operand, lattice_step, load_box, load_ray
from ngfx.render.ops.triton_sh import sh_basis

BLOCK = 64  # lanes (rays) per program; 64 x 2 warps is the Triton MLP's fastest safe shape (triton_mlp)
WARPS = 2
PROGRAMS_PER_SM = 16
# Lattice iterations a lane may walk per round before the tile evaluates the samples found (it goes on next
# round from where it stopped), so a lane crossing empty space need not keep the whole tile scanning. H200,
# NVR cloud 1080p per-ray frame: 128 (the apps' max_scan) 85.3 ms, 32 67.2, 16 58.2, 8 53.0, 4 51.6 ms
# (capping registers at 128 to fit more programs: 86.7 ms, the spills cost more). BENCHMARKS.md, issue 14.
SCAN_PER_ROUND = 4
INTERPRETER_BLOCK = 64  # lanes per program under the interpreter: few, wide numpy steps (its cost is per step)
FUSED_STAGES = "march+grid_encoding+mlp+sh+composite"  # what a fused frame's one stage holds (traces)
KIND_CODES = {"nerf": 0, "nvr": 1}



@triton.jit
def _replace_rays(done, alive, ray, t0, far, ox, oy, oz, dx, dy, dz, j, trans, red, green, blue,
                  out_ptr, bg_ptr, o_ptr, d_ptr, t_start_ptr, t_far_ptr, counter_ptr, n_rays):
    """Live rays ``done`` write their pixel over the background; lanes ``done`` take the frame's next rays
    (fresh state; one atomic per program) -> the state, with ``alive`` last."""
    written = done & alive
    tl.store(out_ptr + ray * 3, red + trans * tl.load(bg_ptr), mask=written)
    tl.store(out_ptr + ray * 3 + 1, green + trans * tl.load(bg_ptr + 1), mask=written)
    tl.store(out_ptr + ray * 3 + 2, blue + trans * tl.load(bg_ptr + 2), mask=written)
    wanted = done.to(tl.int32)
    first = tl.atomic_add(counter_ptr, tl.sum(wanted, axis=0), sem="relaxed")
    new_ray = first + tl.cumsum(wanted, axis=0) - 1
    taken = done & (new_ray < n_rays)
    new_ox, new_oy, new_oz, new_dx, new_dy, new_dz = load_ray(o_ptr, d_ptr, new_ray, taken)
    return (tl.where(taken, new_ray, ray),
            tl.where(taken, tl.load(t_start_ptr + new_ray, mask=taken, other=0.0), t0),
            tl.where(taken, tl.load(t_far_ptr + new_ray, mask=taken, other=0.0), far),
            tl.where(taken, new_ox, ox), tl.where(taken, new_oy, oy), tl.where(taken, new_oz, oz),
            tl.where(taken, new_dx, dx), tl.where(taken, new_dy, dy), tl.where(taken, new_dz, dz),
            tl.where(taken, 0.0, j), tl.where(taken, 1.0, trans), tl.where(taken, 0.0, red),
            tl.where(taken, 0.0, green), tl.where(taken, 0.0, blue), (alive & (done == 0)) | taken)


@triton.jit
def _field(scratch_ptr, rows, found, ux, uy, uz, dx, dy, dz, density_scale,
           table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, dw_in, dw_hidden, dw_out, cw_in, cw_hidden, cw_out,
           KIND: tl.constexpr, D: tl.constexpr, F: tl.constexpr, LEVELS: tl.constexpr, N_LEVELS: tl.constexpr,
           INTERP: tl.constexpr, PACKED: tl.constexpr, D_WIDTH: tl.constexpr, D_OUT: tl.constexpr,
           D_N_HIDDEN: tl.constexpr, D_ACT: tl.constexpr, D_OUT_ACT: tl.constexpr, C_WIDTH: tl.constexpr,
           C_OUT: tl.constexpr, C_N_HIDDEN: tl.constexpr, C_ACT: tl.constexpr, C_OUT_ACT: tl.constexpr,
           PRECISION: tl.constexpr):
    """Density and colour (red, green, blue) [BLOCK] of the field at unit points (ux, uy, uz) of lanes ``found``."""
    tl.debug_barrier()  # the previous iteration's reads of the scratch row are done
    tl.store(scratch_ptr + rows * 3, ux)
    tl.store(scratch_ptr + rows * 3 + 1, uy)
    tl.store(scratch_ptr + rows * 3 + 2, uz)
    tl.debug_barrier()  # ... and this iteration's writes are visible to every thread of the program
    features = triton_grid.encode_block(scratch_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, rows,
                                        found, D, F, LEVELS, N_LEVELS, INTERP, PACKED)
    operand = dw_out.dtype.element_ty
    h = triton_mlp.mlp_block(features.to(operand), dw_in, dw_hidden, dw_out, LEVELS * F, D_WIDTH, D_OUT,
                             D_N_HIDDEN, D_ACT, D_OUT_ACT, PRECISION)
    if KIND == 0:  # NeRF: exp(h[0]); colour network on [h, SH(dir)], interleaved (rows permuted to match)
        density = tl.exp(triton_mlp.tile_column(h, 0, D_OUT))
        colour_in = tl.reshape(tl.join(h, sh_basis(dx, dy, dz)), (h.shape[0], 2 * D_OUT))
        rgb = triton_mlp.mlp_block(colour_in.to(operand), cw_in, cw_hidden, cw_out, 2 * D_OUT, C_WIDTH, C_OUT,
                                   C_N_HIDDEN, C_ACT, C_OUT_ACT, PRECISION)
        red = triton_mlp.tile_column(rgb, 0, C_OUT)
        green = triton_mlp.tile_column(rgb, 1, C_OUT)
        blue = triton_mlp.tile_column(rgb, 2, C_OUT)
    else:  # NVR: max(raw[0], 0) * scale; sigmoid(raw[1:4])
        density = tl.maximum(triton_mlp.tile_column(h, 0, D_OUT), 0.0) * density_scale
        red = tl.sigmoid(triton_mlp.tile_column(h, 1, D_OUT))
        green = tl.sigmoid(triton_mlp.tile_column(h, 2, D_OUT))
        blue = tl.sigmoid(triton_mlp.tile_column(h, 3, D_OUT))
    return density, red, green, blue


@triton.jit
def _render_volume_kernel(
        o_ptr, d_ptr, t_start_ptr, t_far_ptr, out_ptr, bg_ptr, counters_ptr, scratch_ptr, n_rays,
        occ_ptr, aabb_ptr, box_ptr, dt, min_transmittance, density_scale,
        table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, dw_in, dw_hidden, dw_out, cw_in, cw_hidden, cw_out,
        R: tl.constexpr, SUB: tl.constexpr, MAX_SCAN: tl.constexpr, SKIP_MARGIN: tl.constexpr, KIND: tl.constexpr,
        D: tl.constexpr, F: tl.constexpr, LEVELS: tl.constexpr, N_LEVELS: tl.constexpr, INTERP: tl.constexpr,
        PACKED: tl.constexpr, D_WIDTH: tl.constexpr, D_OUT: tl.constexpr, D_N_HIDDEN: tl.constexpr,
        D_ACT: tl.constexpr, D_OUT_ACT: tl.constexpr, C_WIDTH: tl.constexpr, C_OUT: tl.constexpr,
        C_N_HIDDEN: tl.constexpr, C_ACT: tl.constexpr, C_OUT_ACT: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK: tl.constexpr):
    lane = tl.arange(0, BLOCK)
    rows = tl.program_id(0) * BLOCK + lane  # this program's scratch rows
    lo_x, lo_y, lo_z, size_x, size_y, size_z = load_box(aabb_ptr)
    box_x, box_y, box_z, extent_x, extent_y, extent_z = load_box(box_ptr)
    zero = tl.zeros([BLOCK], tl.float32)
    ray, t0, far, ox, oy, oz, dx, dy, dz, j, trans, red, green, blue, alive = _replace_rays(
        lane >= 0, lane < 0, lane, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero,
        out_ptr, bg_ptr, o_ptr, d_ptr, t_start_ptr, t_far_ptr, counters_ptr, n_rays)
    n_alive = tl.sum(alive.to(tl.int32), axis=0)
    while n_alive > 0:
        # 1. every live lane to its ray's next occupied sample; rays that leave the box are replaced at once
        searching = alive
        found = lane < 0
        t_sample = zero
        n_searching = n_alive
        scan = 0
        while (n_searching > 0) & (scan < MAX_SCAN):
            t, inside, occupied, j_next = lattice_step(ox, oy, oz, dx, dy, dz, t0, j, far, searching, occ_ptr,
                                                       lo_x, lo_y, lo_z, size_x, size_y, size_z, dt, R, SKIP_MARGIN,
                                                       SUB)
            j = tl.where(searching, j_next, j)
            found = found | occupied
            t_sample = tl.where(occupied, t, t_sample)
            left = searching & (inside == 0)
            searching = searching & inside & (occupied == 0)
            # one block reduction per iteration counts both (BLOCK < 2^16): each costs a barrier
            counts = tl.sum(searching.to(tl.int32) + left.to(tl.int32) * 65536, axis=0)
            n_searching = counts & 65535
            if counts >= 65536:
                ray, t0, far, ox, oy, oz, dx, dy, dz, j, trans, red, green, blue, alive = _replace_rays(
                    left, alive, ray, t0, far, ox, oy, oz, dx, dy, dz, j, trans, red, green, blue,
                    out_ptr, bg_ptr, o_ptr, d_ptr, t_start_ptr, t_far_ptr, counters_ptr, n_rays)
                searching = searching | (left & alive)
                n_searching = tl.sum(searching.to(tl.int32), axis=0)
            scan += 1
        # 2. the field at the samples found (lanes still searching after MAX_SCAN iterations go on next round)
        ux = tl.minimum(tl.maximum((ox + t_sample * dx - box_x) / extent_x, 0.0), 1.0)
        uy = tl.minimum(tl.maximum((oy + t_sample * dy - box_y) / extent_y, 0.0), 1.0)
        uz = tl.minimum(tl.maximum((oz + t_sample * dz - box_z) / extent_z, 0.0), 1.0)
        density, r, g, b = _field(scratch_ptr, rows, found, ux, uy, uz, dx, dy, dz, density_scale, table_ptr,
                                  meta_scale_ptr, meta_int_ptr, stride_ptr, dw_in, dw_hidden, dw_out, cw_in,
                                  cw_hidden, cw_out, KIND, D, F, LEVELS, N_LEVELS, INTERP, PACKED, D_WIDTH, D_OUT,
                                  D_N_HIDDEN, D_ACT, D_OUT_ACT, C_WIDTH, C_OUT, C_N_HIDDEN, C_ACT, C_OUT_ACT, PRECISION)
        # 3. composite front to back; rays that became opaque are finished and replaced
        alpha = tl.where(found, 1.0 - tl.exp(-density * dt), 0.0)
        weight = trans * alpha
        red += weight * r
        green += weight * g
        blue += weight * b
        trans = trans * (1.0 - alpha)
        opaque = found & (trans <= min_transmittance)
        counts = tl.sum(found.to(tl.int32) + opaque.to(tl.int32) * 65536, axis=0)
        tl.atomic_add(counters_ptr + 1, counts & 65535, sem="relaxed")
        if counts >= 65536:
            ray, t0, far, ox, oy, oz, dx, dy, dz, j, trans, red, green, blue, alive = _replace_rays(
                opaque, alive, ray, t0, far, ox, oy, oz, dx, dy, dz, j, trans, red, green, blue,
                out_ptr, bg_ptr, o_ptr, d_ptr, t_start_ptr, t_far_ptr, counters_ptr, n_rays)
        n_alive = tl.sum(alive.to(tl.int32), axis=0)


def _interleaved_colour_weights(packed: tuple[torch.Tensor, ...], n_features: int) -> tuple[torch.Tensor, ...]:
    """The colour network's packed weights with first-layer rows in the kernel's interleaved input order:
    row 2i reads feature i, row 2i + 1 reads SH coefficient i."""
    w_in, hidden, w_out = packed
    order = torch.arange(2 * n_features, device=w_in.device).reshape(2, n_features).t().flatten()
    return w_in[order].contiguous(), hidden, w_out


def _launch_shape(device: torch.device) -> tuple[int, int, int]:
    """(lanes per program, warps, programs) for ``device``."""
    if device.type != "cuda":
        return INTERPRETER_BLOCK, 1, 2
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return BLOCK, WARPS, PROGRAMS_PER_SM * sms


@torch.no_grad()
def render_volume(origins: torch.Tensor, dirs: torch.Tensor, t_start: torch.Tensor, t_far: torch.Tensor,
                  occupancy: torch.Tensor, aabb: torch.Tensor, resolution: int, dt: float, field: VolumeField,
                  background: torch.Tensor, *, max_scan: int, min_transmittance: float,
                  counters: torch.Tensor | None = None, sub: int = 1) -> torch.Tensor:
    """Fused twin of :func:`ngfx.render.ops.fused_volume.render_volume` (same arguments and result)."""
    n, device = origins.shape[0], origins.device
    grid_cfg, density_cfg = field.encoding.cfg, field.density_net.cfg
    dtype = triton_mlp.operand_dtype(device)
    grid_constants = triton_grid.kernel_constants(grid_cfg, min_width=triton_mlp.MIN_DOT_WIDTH)
    kin = grid_constants["LEVELS"] * grid_cfg.n_features_per_level
    density_weights = triton_mlp.pack_weights(list(field.density_net.weights), density_cfg, kin, dtype)
    constants = triton_mlp.mlp_constants(density_cfg, dtype, "D_")
    colour_weights = density_weights  # unused by an NVR field (a constexpr branch)
    colour_constants = triton_mlp.mlp_constants(density_cfg, dtype, "C_")
    if field.colour_net is not None:
        colour_cfg = field.colour_net.cfg
        if constants["D_OUT"] != density_cfg.n_output_dims or colour_cfg.n_input_dims != 2 * constants["D_OUT"]:
            raise ValueError("render_volume: the fused kernel needs a density network with a power-of-two number "
                             "(>= 16) of outputs and a colour network reading those and 16 SH coefficients")
        colour_weights = _interleaved_colour_weights(
            triton_mlp.pack_weights(list(field.colour_net.weights), colour_cfg, 2 * constants["D_OUT"], dtype),
            constants["D_OUT"])
        colour_constants = triton_mlp.mlp_constants(colour_cfg, dtype, "C_")
    table, packed = triton_grid.forward_table(field.encoding.params, grid_cfg, dtype)
    block, warps, programs = _launch_shape(device)
    programs = max(1, min(programs, triton.cdiv(n, block)))
    out = torch.empty(n, 3, device=device)
    counts = torch.zeros(2, dtype=torch.int32, device=device)  # rays handed out, samples evaluated
    scratch = torch.empty(programs * block, 3, device=device)
    with stages.stage(f"{field.kind}.fused_volume", "rest", n_inputs=n, bytes_read=n * 32.0, bytes_written=n * 12.0,
                      app=field.kind, fused=FUSED_STAGES):
        if n:
            _render_volume_kernel[(programs,)](
                origins.contiguous(), dirs.contiguous(), t_start.contiguous(), t_far.contiguous(), out,
                background.float().contiguous(), counts, scratch, n, grid_operand(occupancy, sub),
                aabb.float().contiguous(), field.box.float().contiguous(), float(dt), float(min_transmittance),
                float(field.density_scale), table, *triton_grid.level_metadata(grid_cfg, device), *density_weights,
                *colour_weights, R=resolution, SUB=sub, MAX_SCAN=min(int(max_scan), SCAN_PER_ROUND), SKIP_MARGIN=SKIP_MARGIN,
                KIND=KIND_CODES[field.kind], **grid_constants, PACKED=packed, **constants, **colour_constants,
                PRECISION="ieee" if dtype == torch.float32 else None, BLOCK=block, num_warps=warps)
    if counters is not None:
        counters[0] += n
        counters[1] += counts[1]
    return out
