"""Traces built from the NGPC paper's published inputs, for the apps x encodings it evaluated.

The paper fed Nsight per-kernel breakdowns of an RTX 3090 into its model; those breakdowns are not
public, so these traces rebuild one frame per app and encoding from what is published, plus the
assumptions below (each one also listed in the sweep report):

Published (REFERENCE.md section 1):
- encoding + MLP share of GPU time: 72.37 % hash grid (40.24 % encoding, 32.12 % MLP),
  60.0 % multi-res dense grid, 59.96 % low-res dense grid: the *averages* over the four apps;
- NeRF with a hash grid at 1920x1080 takes about 231 ms per frame on the RTX 3090;
- fusing the rest kernels: 9.94x (used by the model's config, not here).

Assumed:
- A1 per-app shares: the published averages are spread over the apps (NeRF and NVR march many
  samples per pixel, so their neural share is higher; GIA and NSDF lower) keeping each encoding's
  average exactly at the published value: see ``APP_NEURAL_SHARE``.
- A2 the encoding : MLP split of each app's neural share is the published hash-grid ratio
  40.24 : 32.12 for every app and encoding.
- A3 1080p RTX 3090 frame times of NSDF, GIA and NVR (``APP_FRAME_S``): not published; chosen as
  instant-ngp-like interactive rates. Speedups do not depend on them (inputs scale with them, A4),
  but the 8K FPS claims do directly: NSDF's 11 ms was picked so that 8K clears 120 FPS with ~10 %
  margin, so those FPS checks are consistency checks, not independent evidence. Dense grids are
  given the same frame time as the hash grid.
- A4 the GPU's encoding+MLP throughput per app (``GPU_NEURAL_INPUTS_PER_S``, the same for the three
  encodings), which fixes how many inputs a frame holds: n_inputs = neural share x frame time x
  throughput. Not published; fitted once (scipy Nelder-Mead, least squares on the four published
  hash-grid averages) and frozen. Four free numbers against four targets: the hash-grid match is a
  calibration, not an independent validation. The NeRF/NVR/NSDF/GIA curves' shapes, the dense-grid
  results, the FPS figures and the "up to 58x" (model: 61.6x, NeRF at 64 NFPs) follow from it.
- A5 network shapes as instant-ngp's (64 wide; NeRF: a density MLP and a colour MLP), and encoding
  sizes: hash grid 16 levels x 2 features, T = 2^18, so that one level (2^18 x 2 fp16 = 1 MiB)
  fits the level unit's 1 MB grid SRAM as the paper's design implies (instant-ngp's 2^19, and GIA's
  2^24, would be streamed in pieces); multi-res dense grid 8 levels x 2 features up to 64^3 (2^18 entries);
  low-res dense grid 1 level x 4 features at 32^3 (2^15 entries).
- A6 the FPS claims are checked at 64 NFPs (the largest configuration) with the RTX 3090 profile.
"""

from __future__ import annotations

from ngfx.ngpc_sim.config import ENCODING_KINDS
from ngfx.ngpc_sim.trace import Kernel, Trace

APPS = ("nerf", "nsdf", "gia", "nvr")
PAPER_WIDTH, PAPER_HEIGHT = 1920, 1080
PUBLISHED_NEURAL_SHARE = {"hash_grid": 0.7237, "multires_dense_grid": 0.600, "lowres_dense_grid": 0.5996}
PUBLISHED_HASH_SPLIT = (0.4024, 0.3212)  # encoding, MLP shares of GPU time (hash grid)
# A1: per-app deviation from the published average (sums to zero, so the average is kept).
APP_SHARE_OFFSET = {"nerf": 0.14, "nsdf": -0.08, "gia": -0.16, "nvr": 0.10}
APP_NEURAL_SHARE = {(app, enc): PUBLISHED_NEURAL_SHARE[enc] + APP_SHARE_OFFSET[app] for app in APPS for enc in ENCODING_KINDS}
# A3 (NeRF: published).
APP_FRAME_S = {"nerf": 0.231, "nsdf": 0.011, "gia": 0.008, "nvr": 0.020}
# A4: encoding + MLP inputs per second on the RTX 3090 (instant-ngp kernels, unfused), per app.
GPU_NEURAL_INPUTS_PER_S = {"nerf": 210e6, "nsdf": 1200e6, "gia": 440e6, "nvr": 475e6}
# A5
APP_MLP_LAYERS = {
    "nerf": [[64, 32], [16, 64], [64, 32], [64, 64], [3, 64]],  # density 32-64-16, colour 32-64-64-3
    "nsdf": [[64, 32], [64, 64], [1, 64]],
    "gia": [[64, 32], [64, 64], [3, 64]],
    "nvr": [[64, 32], [64, 64], [4, 64]],
}
APP_DIMS = {"nerf": 3, "nsdf": 3, "gia": 2, "nvr": 3}
ENCODING_SHAPE = {  # n_levels, n_features_per_level, log2 of the largest level's entries
    "hash_grid": (16, 2, 18),
    "multires_dense_grid": (8, 2, 18),
    "lowres_dense_grid": (1, 4, 15),
}


def paper_trace(app: str, encoding: str) -> Trace:
    """One 1920x1080 frame of ``app`` with ``encoding`` on the RTX 3090, from published shares (timer 'model')."""
    if app not in APPS or encoding not in ENCODING_KINDS:
        raise ValueError(f"paper_trace: app must be one of {APPS} and encoding one of {ENCODING_KINDS}, got {app!r}, {encoding!r}")
    frame_s = APP_FRAME_S[app]
    neural = APP_NEURAL_SHARE[(app, encoding)]
    enc_share = neural * PUBLISHED_HASH_SPLIT[0] / sum(PUBLISHED_HASH_SPLIT)
    n_inputs = int(neural * frame_s * GPU_NEURAL_INPUTS_PER_S[app])
    n_levels, n_features, log2_size = ENCODING_SHAPE[encoding]
    layers = APP_MLP_LAYERS[app]
    fields = dict(app=app, encoding=encoding, n_levels=n_levels, n_features_per_level=n_features,
                  log2_hashmap_size=log2_size, n_dims=APP_DIMS[app])
    n_pixels = PAPER_WIDTH * PAPER_HEIGHT
    kernels = [
        Kernel(f"{app}.rest", "rest", n_pixels, 0.0, n_pixels * 32.0, n_pixels * 16.0, (1 - neural) * frame_s, app=app),
        Kernel(f"{app}.encoding", "encoding", n_inputs, 0.0, n_inputs * n_levels * 2 ** APP_DIMS[app] * n_features * 2.0,
               n_inputs * n_levels * n_features * 2.0, enc_share * frame_s, **fields),
        Kernel(f"{app}.mlp", "mlp", n_inputs, 2.0 * n_inputs * sum(o * i for o, i in layers), n_inputs * 64.0,
               n_inputs * layers[-1][0] * 2.0, (neural - enc_share) * frame_s, mlp_layers=[list(l) for l in layers], **fields),
    ]
    return Trace(device="NVIDIA RTX 3090 (paper inputs)", timer="model", width=PAPER_WIDTH, height=PAPER_HEIGHT, kernels=kernels)


def paper_traces() -> list[Trace]:
    """The 12 paper-input traces: 4 apps x 3 encodings."""
    return [paper_trace(app, enc) for app in APPS for enc in ENCODING_KINDS]


PUBLISHED_HASH_SPEEDUP = {8: 12.0, 16: 20.0, 32: 33.0, 64: 39.0}
PUBLISHED_FPS_CLAIMS = {"nerf": ((3840, 2160), 30.0), "nsdf": ((7680, 4320), 120.0),
                        "gia": ((7680, 4320), 120.0), "nvr": ((7680, 4320), 120.0)}


def paper_validation(cfg=None) -> dict:
    """The model against the paper's hash-grid averages (within 15 %) and FPS claims, at 64 NFPs for FPS.

    Returns ``{"speedup": [{scale, published, model, error, ok}], "fps": [{app, resolution, claim, model, ok}]}``.
    """
    from ngfx.ngpc_sim.config import load_config
    from ngfx.ngpc_sim.model import simulate
    from ngfx.ngpc_sim.trace import scale_trace

    cfg = cfg or load_config()
    speedups = []
    for scale, published in PUBLISHED_HASH_SPEEDUP.items():
        model = sum(simulate(paper_trace(a, "hash_grid"), cfg.replace(n_nfps=scale)).speedup for a in APPS) / len(APPS)
        err = model / published - 1.0
        speedups.append({"scale": scale, "published": published, "model": model, "error": err, "ok": abs(err) <= 0.15})
    fps = []
    for app, ((w, h), claim) in PUBLISHED_FPS_CLAIMS.items():
        model = simulate(scale_trace(paper_trace(app, "hash_grid"), w, h), cfg.replace(n_nfps=64)).fps
        fps.append({"app": app, "resolution": f"{w}x{h}", "claim": claim, "model": model, "ok": model >= claim})
    return {"speedup": speedups, "fps": fps}
