"""NSDF's fused sphere tracer in one persistent Triton kernel; twin of
:func:`ngfx.render.ops.fused_sphere_trace.trace_and_shade` (same name, same contract, same per-ray steps).

Each program owns ``BLOCK`` ray slots and loops until the frame's rays run out: free slots take the next rays
from a device counter (one atomic per program per refill, slots numbered by a prefix sum), a ray that misses the
trace box frees its slot at once, and live rays take coarse steps on the baked distance grid until they are near
the surface. Then every slot asks the network once (hash-grid encoding and MLP, ``triton_grid.encode_block`` and
``triton_mlp.mlp_block``): a tracing ray for its sphere step, a ray that has hit for one of its four normal
probes (a slot state per probe), so the network always runs on full blocks. After the fourth probe the slot
writes the pixel's colour and is free again. No host sync, no per-step launch, no per-sample HBM round trip
beyond the slot's three query coordinates (``encode_block`` reads its points from memory; each program has its
own few bytes of scratch for them, which stay in L1). A pinhole camera's rays are not read at all: the kernel
makes each from its pixel index where it needs it (``IN_KERNEL_RAYS``, :func:`trace_band`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ngfx.cameras import Intrinsics
from ngfx.encodings import triton_grid, triton_mlp
from ngfx.render.ops.fused_sphere_trace import COARSE_SUBSTEPS, TraceScene, grid_cell
from ngfx.render.ops.sphere_trace import ALBEDO, AMBIENT, LIGHT_DIR
from ngfx.render.orbit_view import band_rays
from ngfx.render.ops.triton_raymarch import band_pixel_direction, box_entry_exit, load_ray, unit
from ngfx.render.ops.triton_sphere_trace import field_coordinate, store_shade

# 32 rows x 4 warps: triton_mlp's fastest shape that stays on the mma.sync path (its wgmma shapes fail on the H200).
# The gathers are latency bound, so more programs an SM beat spills: capped at 128 registers (188 uncapped) 4K
# armadillo went 25.7 -> 22.8 ms on the H200; with rays made in the kernel and a 384^3 coarse grid, 96 registers
# and 20 programs an SM took 15.86 ms against 16.54 ms at 128 and 16 (same run, BENCHMARKS.md).
BLOCK = 32
WARPS = 4
PROGRAMS_PER_SM = 20
MAX_REGISTERS = 96
# The kernel makes a pinhole camera's rays itself (trace_band) rather than reading band_rays' [N, 3] origins and
# directions: no ray-generation pass and no ray traffic through HBM (4K armadillo on the H200: 17.68 ms against
# 19.56 ms reading them, BENCHMARKS.md)
KERNEL_RAYS = True
NO_CAMERA = [0, 0] + [0.0] * 16  # camera arguments (width, row0, fx, fy, cx, cy, c2w 3x4) of a kernel reading rays
FREE, TRACE, PROBE0 = 0, 1, 2  # slot states; PROBE0 + k: waiting for normal probe k (k < 4)


@triton.jit
def _ray(ray, mask, o_ptr, d_ptr, width, row0, fx, fy, cx, cy, r00, r01, r02, tx, r10, r11, r12, ty, r20, r21, r22,
         tz, IN_KERNEL_RAYS: tl.constexpr):
    """Origin and unit direction of rays ``ray``: read from the rows of origins and directions [R, 3], or with
    ``IN_KERNEL_RAYS`` made here, as :func:`ngfx.render.orbit_view.band_rays` makes them, through the centre of
    pixel (ray % width, row0 + ray // width) of the pinhole camera (c2w's rows r0* tx, r1* ty, r2* tz; fx, fy,
    cx, cy): the origin is the camera's, one scalar for all."""
    if IN_KERNEL_RAYS:
        wx, wy, wz = band_pixel_direction(ray, width, row0, fx, fy, cx, cy, 0.0, 0.0, 0.0, 0.0, r00, r01, r02, r10,
                                          r11, r12, r20, r21, r22, False, 0)
        ox, oy, oz = tx, ty, tz
        dx, dy, dz = unit(wx, wy, wz)
    else:
        ox, oy, oz, dx, dy, dz = load_ray(o_ptr, d_ptr, ray, mask)
    return ox, oy, oz, dx, dy, dz


@triton.jit
def _cell_base(p, lo, cell, G):
    return tl.minimum(tl.floor(tl.minimum(tl.maximum((p - lo) / cell, 0.0), G - 1.0)), G - 2.0)


@triton.jit
def _coarse_bound(px, py, pz, grid_ptr, G, lo_x, lo_y, lo_z, cell_x, cell_y, cell_z, mask):
    """As :func:`ngfx.render.ops.fused_sphere_trace.coarse_bound`: max over the cell's corners of SDF(c) - |p - c|."""
    bx, by, bz = _cell_base(px, lo_x, cell_x, G), _cell_base(py, lo_y, cell_y, G), _cell_base(pz, lo_z, cell_z, G)
    bound = tl.full(px.shape, -float("inf"), tl.float32)
    for bits in tl.static_range(8):
        cx = bx + (bits & 1)
        cy = by + ((bits >> 1) & 1)
        cz = bz + ((bits >> 2) & 1)
        index = (cx.to(tl.int32) * G + cy.to(tl.int32)) * G + cz.to(tl.int32)
        value = tl.load(grid_ptr + index, mask=mask, other=0.0)
        rx, ry, rz = px - (lo_x + cx * cell_x), py - (lo_y + cy * cell_y), pz - (lo_z + cz * cell_z)
        bound = tl.maximum(bound, value - tl.sqrt(rx * rx + ry * ry + rz * rz))
    return bound


@triton.jit
def _trace_and_shade_kernel(
        o_ptr, d_ptr, frame_ptr, counter_ptr, scratch_ptr, n_rays,
        width, row0, fx, fy, cx, cy, r00, r01, r02, tx, r10, r11, r12, ty, r20, r21, r22, tz,
        lo_x, lo_y, lo_z, hi_x, hi_y, hi_z, grid_ptr, G, cell_x, cell_y, cell_z, near,
        table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, w_in_ptr, w_hidden_ptr, w_out_ptr,
        sphere_radius, hit_eps, step_scale, max_steps, probe, lx, ly, lz, ar, ag, ab, ambient,
        D: tl.constexpr, F: tl.constexpr, LEVELS: tl.constexpr, N_LEVELS: tl.constexpr, INTERP: tl.constexpr,
        PACKED: tl.constexpr, WIDTH: tl.constexpr, OUT: tl.constexpr, N_HIDDEN: tl.constexpr, ACT: tl.constexpr,
        OUT_ACT: tl.constexpr, PRECISION: tl.constexpr, COARSE_SUBSTEPS: tl.constexpr, IN_KERNEL_RAYS: tl.constexpr,
        BLOCK: tl.constexpr):
    camera = (width, row0, fx, fy, cx, cy, r00, r01, r02, tx, r10, r11, r12, ty, r20, r21, r22, tz)
    slot = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # this program's scratch rows
    all_slots = slot >= 0
    out_cols = tl.arange(0, OUT)
    state = tl.zeros((BLOCK,), tl.int32)  # FREE
    ray = tl.zeros((BLOCK,), tl.int32)
    steps = tl.zeros((BLOCK,), tl.int32)
    coarse_left = tl.zeros((BLOCK,), tl.int32)
    t = tl.zeros((BLOCK,), tl.float32)
    t_far = tl.zeros((BLOCK,), tl.float32)
    nx = tl.zeros((BLOCK,), tl.float32)
    ny, nz = nx, nx
    exhausted = tl.zeros((), tl.int32)
    busy = tl.full((), 1, tl.int32)
    while busy > 0:
        refill = tl.full((), 1, tl.int32)
        while refill > 0:
            free = (state == 0).to(tl.int32)
            wanted = tl.where(exhausted > 0, 0, tl.sum(free, axis=0))
            first = tl.atomic_add(counter_ptr, wanted, sem="relaxed")
            new_ray = first + tl.cumsum(free, axis=0) - free
            take = (free > 0) & (new_ray < n_rays) & (exhausted == 0)
            exhausted = tl.where(first + wanted >= n_rays, 1, exhausted)
            ray = tl.where(take, new_ray, ray)
            # rays are re-read (L1 has them) or re-made where needed rather than held: fewer registers
            ox, oy, oz, dx, dy, dz = _ray(ray, take | (state != 0), o_ptr, d_ptr, *camera, IN_KERNEL_RAYS)
            t_near, t_exit = box_entry_exit(ox, oy, oz, dx, dy, dz, lo_x, lo_y, lo_z, hi_x, hi_y, hi_z)
            t = tl.where(take, t_near, t)
            t_far = tl.where(take, t_exit, t_far)
            state = tl.where(take & (t_near < t_exit), 1, state)  # a ray that misses the box frees its slot now
            steps = tl.where(take, 0, steps)
            coarse_left = tl.where(take, COARSE_SUBSTEPS, coarse_left)
            marching = tl.full((), 1, tl.int32)
            while marching > 0:
                bound = _coarse_bound(ox + t * dx, oy + t * dy, oz + t * dz, grid_ptr, G, lo_x, lo_y, lo_z,
                                      cell_x, cell_y, cell_z, state == 1)
                advance = (state == 1) & (coarse_left > 0) & (bound > near)
                t = tl.where(advance, t + step_scale * bound, t)
                coarse_left -= advance.to(tl.int32)
                state = tl.where(advance & (t > t_far), 0, state)
                marching = tl.sum(advance.to(tl.int32), axis=0)
            refill = (tl.sum((state == 0).to(tl.int32), axis=0) > 0).to(tl.int32) * (1 - exhausted)
        busy = tl.sum((state != 0).to(tl.int32), axis=0)
        ox, oy, oz, dx, dy, dz = _ray(ray, state != 0, o_ptr, d_ptr, *camera, IN_KERNEL_RAYS)
        # the query point of each slot: its ray's point, or one of its hit point's tetrahedral probes
        k = state - 2
        is_probe = state >= 2
        kx = tl.where((k == 0) | (k == 3), 1.0, -1.0)
        ky = tl.where((k == 2) | (k == 3), 1.0, -1.0)
        kz = tl.where((k == 1) | (k == 3), 1.0, -1.0)
        qx = ox + t * dx + tl.where(is_probe, probe * kx, 0.0)
        qy = oy + t * dy + tl.where(is_probe, probe * ky, 0.0)
        qz = oz + t * dz + tl.where(is_probe, probe * kz, 0.0)
        tl.store(scratch_ptr + slot * 3, field_coordinate(qx))
        tl.store(scratch_ptr + slot * 3 + 1, field_coordinate(qy))
        tl.store(scratch_ptr + slot * 3 + 2, field_coordinate(qz))
        tl.debug_barrier()
        features = triton_grid.encode_block(scratch_ptr, table_ptr, meta_scale_ptr, meta_int_ptr, stride_ptr, slot,
                                            all_slots, D, F, LEVELS, N_LEVELS, INTERP, PACKED)
        tl.debug_barrier()  # every row read before the next round overwrites the scratch
        out = triton_mlp.mlp_block(features.to(w_out_ptr.dtype.element_ty), w_in_ptr, w_hidden_ptr, w_out_ptr,
                                   LEVELS * F, WIDTH, OUT, N_HIDDEN, ACT, OUT_ACT, PRECISION)
        raw = tl.sum(tl.where(out_cols[None, :] == 0, out, 0.0), axis=1)
        sdf = raw + tl.sqrt(qx * qx + qy * qy + qz * qz) - sphere_radius
        # a tracing slot: one sphere step, as sphere_trace.trace_step takes it
        tracing = state == 1
        hit = tracing & (tl.abs(sdf) < hit_eps * (1.0 + t))
        t = tl.where(tracing & (hit == 0), t + step_scale * sdf, t)
        steps += tracing.to(tl.int32)
        gives_up = tracing & (hit == 0) & ((t > t_far) | (steps >= max_steps))
        coarse_left = tl.where(tracing, COARSE_SUBSTEPS, coarse_left)
        # a probing slot: add its probe's term of the normal; after the fourth, shade and write the pixel
        nx = tl.where(hit, 0.0, nx + tl.where(is_probe, sdf * kx, 0.0))
        ny = tl.where(hit, 0.0, ny + tl.where(is_probe, sdf * ky, 0.0))
        nz = tl.where(hit, 0.0, nz + tl.where(is_probe, sdf * kz, 0.0))
        done = state == 5
        store_shade(frame_ptr, ray, nx, ny, nz, done, lx, ly, lz, ar, ag, ab, ambient)
        state = tl.where(hit, 2, tl.where(gives_up | done, 0, tl.where(is_probe, state + 1, state)))


def program_count(n_rays: int, device: torch.device) -> int:
    """Persistent programs: enough to fill the GPU (two under the interpreter, so refills are exercised)."""
    blocks = max(triton.cdiv(n_rays, BLOCK), 1)
    if device.type != "cuda":
        return min(blocks, 2)
    return min(blocks, PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count)


def _kernel_inputs(scene: TraceScene, device: torch.device) -> dict:
    """The network's table and weights as the kernel reads them (fp16 on CUDA), the box and grid as scalars."""
    model = scene.field.model
    grid_cfg, mlp_cfg = model.encoding.cfg, model.network.cfg
    dtype = triton_mlp.operand_dtype(device)
    grid_constants = triton_grid.kernel_constants(grid_cfg, min_width=triton_mlp.MIN_DOT_WIDTH)
    table, packed = triton_grid.forward_table(model.encoding.params, grid_cfg, dtype)
    weights = triton_mlp.pack_weights(list(model.network.weights), mlp_cfg,
                                      grid_constants["LEVELS"] * grid_cfg.n_features_per_level, dtype)
    box = scene.box.detach().cpu().float()  # the kernel takes its corners as scalars: read on the host once
    resolution = scene.distance_grid.shape[0]
    return {"box": box.flatten().tolist(), "grid": scene.distance_grid.to(device).float().contiguous(),
            "resolution": resolution, "cell": grid_cell(box, resolution).tolist(), "table": table,
            "meta": triton_grid.level_metadata(grid_cfg, device), "weights": weights,
            "constants": {**grid_constants, "PACKED": packed, **triton_mlp.mlp_constants(mlp_cfg, dtype)}}


def _launch(frame_flat: torch.Tensor, n_rays: int, origins: torch.Tensor, dirs: torch.Tensor, camera: list,
            scene: TraceScene, in_kernel_rays: bool) -> None:
    device = frame_flat.device
    if n_rays == 0:
        return
    if not scene.kernel_inputs:
        scene.kernel_inputs.update(_kernel_inputs(scene, device))
    inputs = scene.kernel_inputs
    programs = program_count(n_rays, device)
    counter = torch.zeros(1, dtype=torch.int32, device=device)
    scratch = torch.empty(programs * BLOCK * 3, dtype=torch.float32, device=device)
    _trace_and_shade_kernel[(programs,)](
        origins, dirs, frame_flat, counter, scratch, n_rays, *camera,
        *inputs["box"], inputs["grid"], inputs["resolution"], *inputs["cell"], float(scene.near),
        inputs["table"], *inputs["meta"], *inputs["weights"],
        float(scene.sphere_radius), float(scene.hit_eps), float(scene.step_scale), int(scene.max_steps),
        float(scene.normal_probe), *LIGHT_DIR, *ALBEDO, AMBIENT,
        **inputs["constants"], COARSE_SUBSTEPS=COARSE_SUBSTEPS, IN_KERNEL_RAYS=in_kernel_rays, BLOCK=BLOCK,
        num_warps=WARPS, **({"maxnreg": MAX_REGISTERS} if MAX_REGISTERS and device.type == "cuda" else {}))


@torch.no_grad()
def trace_and_shade(frame_flat: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, scene: TraceScene) -> None:
    """Same contract as :func:`ngfx.render.ops.fused_sphere_trace.trace_and_shade`."""
    _launch(frame_flat, origins.shape[0], origins.contiguous(), dirs.contiguous(), NO_CAMERA, scene,
            in_kernel_rays=False)


@torch.no_grad()
def trace_band(frame_band: torch.Tensor, c2w: torch.Tensor, k: Intrinsics, row0: int, n_rows: int,
               scene: TraceScene) -> None:
    """Same contract as :func:`ngfx.render.ops.fused_sphere_trace.trace_band`. A pinhole camera's rays are made
    in the kernel, where they are needed (no [N, 3] origins and directions written and read back); a camera
    with lens distortion (or any, with ``KERNEL_RAYS`` off) takes :func:`~ngfx.render.orbit_view.band_rays`' rays."""
    if k.distorted or not KERNEL_RAYS:
        trace_and_shade(frame_band, *band_rays(c2w, k, row0, n_rows), scene)
        return
    pose = [float(v) for v in c2w[:3, :4].flatten().tolist()]  # rows: rotation row, then translation
    _launch(frame_band, n_rows * k.width, frame_band, frame_band,  # no ray arrays: any tensor stands for them
            [k.width, row0, float(k.fx), float(k.fy), float(k.cx), float(k.cy), *pose], scene, in_kernel_rays=True)
