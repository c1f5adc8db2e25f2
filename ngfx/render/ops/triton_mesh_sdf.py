"""Brute-force signed distance to a triangle mesh in one Triton kernel: for a block of points, loop over all
triangles keeping the nearest distance and summing solid angles (generalised winding number).

The GPU twin of :func:`ngfx.render.ops.mesh_sdf.signed_distance`; it turns the armadillo's sample cache
(about 2^20 points x 10^5 triangles) from minutes of PyTorch temporaries into seconds.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _atan2(y, x):
    """atan2 from a minimax polynomial of atan on [0, 1] (|error| < 1e-5 rad): the winding number only needs
    to tell 0 from 1, and Triton's core language has no atan2."""
    ax, ay = tl.abs(x), tl.abs(y)
    a = tl.minimum(ax, ay) / tl.maximum(tl.maximum(ax, ay), 1e-30)
    s = a * a
    r = ((-0.0464964749 * s + 0.15931422) * s - 0.327622764) * s * a + a
    r = tl.where(ay > ax, 1.5707963267948966 - r, r)
    r = tl.where(x < 0, 3.141592653589793 - r, r)
    return tl.where(y < 0, -r, r)


@triton.jit
def _dot(ax, ay, az, bx, by, bz):
    return ax * bx + ay * by + az * bz


@triton.jit
def _segment_dist2(px, py, pz, sx, sy, sz, ex, ey, ez):
    dx, dy, dz = ex - sx, ey - sy, ez - sz
    t = _dot(px - sx, py - sy, pz - sz, dx, dy, dz) / tl.maximum(_dot(dx, dy, dz, dx, dy, dz), 1e-20)
    t = tl.minimum(tl.maximum(t, 0.0), 1.0)
    qx, qy, qz = px - sx - t * dx, py - sy - t * dy, pz - sz - t * dz
    return _dot(qx, qy, qz, qx, qy, qz)


@triton.jit
def _mesh_sdf_kernel(points_ptr, tri_ptr, out_ptr, n_points, n_faces: tl.constexpr, BLOCK_P: tl.constexpr,
                     BLOCK_F: tl.constexpr):
    # n_faces is a compile-time constant (one compile per mesh): the interpreter cannot loop to a runtime scalar
    pi = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = pi < n_points
    px = tl.load(points_ptr + pi * 3, mask=pmask, other=0.0)[:, None]
    py = tl.load(points_ptr + pi * 3 + 1, mask=pmask, other=0.0)[:, None]
    pz = tl.load(points_ptr + pi * 3 + 2, mask=pmask, other=0.0)[:, None]
    best = tl.full((BLOCK_P,), float("inf"), tl.float32)
    solid = tl.zeros((BLOCK_P,), tl.float32)
    for f0 in range(0, n_faces, BLOCK_F):
        fi = f0 + tl.arange(0, BLOCK_F)
        fmask = fi < n_faces
        ax = tl.load(tri_ptr + fi * 9 + 0, mask=fmask, other=0.0)[None, :]
        ay = tl.load(tri_ptr + fi * 9 + 1, mask=fmask, other=0.0)[None, :]
        az = tl.load(tri_ptr + fi * 9 + 2, mask=fmask, other=0.0)[None, :]
        bx = tl.load(tri_ptr + fi * 9 + 3, mask=fmask, other=0.0)[None, :]
        by = tl.load(tri_ptr + fi * 9 + 4, mask=fmask, other=0.0)[None, :]
        bz = tl.load(tri_ptr + fi * 9 + 5, mask=fmask, other=0.0)[None, :]
        cx = tl.load(tri_ptr + fi * 9 + 6, mask=fmask, other=0.0)[None, :]
        cy = tl.load(tri_ptr + fi * 9 + 7, mask=fmask, other=0.0)[None, :]
        cz = tl.load(tri_ptr + fi * 9 + 8, mask=fmask, other=0.0)[None, :]
        # solid angle (Van Oosterom-Strackee)
        rax, ray_, raz = ax - px, ay - py, az - pz
        rbx, rby, rbz = bx - px, by - py, bz - pz
        rcx, rcy, rcz = cx - px, cy - py, cz - pz
        la = tl.sqrt(_dot(rax, ray_, raz, rax, ray_, raz))
        lb = tl.sqrt(_dot(rbx, rby, rbz, rbx, rby, rbz))
        lc = tl.sqrt(_dot(rcx, rcy, rcz, rcx, rcy, rcz))
        det = rax * (rby * rcz - rbz * rcy) + ray_ * (rbz * rcx - rbx * rcz) + raz * (rbx * rcy - rby * rcx)
        denom = la * lb * lc + _dot(rax, ray_, raz, rbx, rby, rbz) * lc + _dot(rbx, rby, rbz, rcx, rcy, rcz) * la \
            + _dot(rcx, rcy, rcz, rax, ray_, raz) * lb
        solid += tl.sum(tl.where(fmask[None, :], 2.0 * _atan2(det, denom), 0.0), axis=1)
        # distance: to the plane when the projection falls inside, else to the nearest edge
        e1x, e1y, e1z = bx - ax, by - ay, bz - az
        e2x, e2y, e2z = cx - ax, cy - ay, cz - az
        nx, ny, nz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
        nn = tl.maximum(_dot(nx, ny, nz, nx, ny, nz), 1e-30)
        plane = _dot(-rax, -ray_, -raz, nx, ny, nz)
        s0 = _dot(e1y * (-raz) - e1z * (-ray_), e1z * (-rax) - e1x * (-raz), e1x * (-ray_) - e1y * (-rax), nx, ny, nz)
        fx, fy, fz = cx - bx, cy - by, cz - bz
        s1 = _dot(fy * (-rbz) - fz * (-rby), fz * (-rbx) - fx * (-rbz), fx * (-rby) - fy * (-rbx), nx, ny, nz)
        gx, gy, gz = ax - cx, ay - cy, az - cz
        s2 = _dot(gy * (-rcz) - gz * (-rcy), gz * (-rcx) - gx * (-rcz), gx * (-rcy) - gy * (-rcx), nx, ny, nz)
        inside = (s0 >= 0) & (s1 >= 0) & (s2 >= 0)
        edge = tl.minimum(tl.minimum(_segment_dist2(px, py, pz, ax, ay, az, bx, by, bz),
                                     _segment_dist2(px, py, pz, bx, by, bz, cx, cy, cz)),
                          _segment_dist2(px, py, pz, cx, cy, cz, ax, ay, az))
        d2 = tl.where(inside, plane * plane / nn, edge)
        best = tl.minimum(best, tl.min(tl.where(fmask[None, :], d2, float("inf")), axis=1))
    winding = solid / (4.0 * 3.141592653589793)
    dist = tl.sqrt(best)
    tl.store(out_ptr + pi, tl.where(tl.abs(winding) > 0.5, -dist, dist), mask=pmask)


def signed_distance(vertices: torch.Tensor, faces: torch.Tensor, points: torch.Tensor,
                    block_points: int = 64, block_faces: int = 16) -> torch.Tensor:
    """Same contract as :func:`ngfx.render.ops.mesh_sdf.signed_distance` (negative inside) -> [N]."""
    device = points.device
    tri = vertices.to(device).float()[faces.to(device)].reshape(-1, 9).contiguous()
    pts = points.float().contiguous()
    out = torch.empty(len(pts), device=device, dtype=torch.float32)
    if len(pts):
        _mesh_sdf_kernel[(math.ceil(len(pts) / block_points),)](pts, tri, out, len(pts), len(tri),
                                                                BLOCK_P=block_points, BLOCK_F=block_faces)
    return out
