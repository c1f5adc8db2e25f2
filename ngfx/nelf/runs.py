"""NeLF run folders: load a distilled student and render frames or videos from it (``ngfx render`` calls this).

A run folder holds ``run.json`` (``"app": "nelf"``, the network config, the camera, near/far, aabb and
metrics) and ``checkpoint.safetensors``. On CUDA the student runs in fp16 under ``torch.compile``
(mode "reduce-overhead", i.e. CUDA graphs); on CPU in fp32.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from ngfx.errors import NgfxInputError
from ngfx.io import load_checkpoint, read_json, require, require_number, write_json
from ngfx.nelf.network import NeLF, build_student, encode_frames, fold_batchnorm, low_resolution, student_config
from ngfx.progress import progress_bar
from ngfx.cameras import Intrinsics, orbit_poses
from ngfx.render.neural_field import use_triton
from ngfx.render.runs import write_frames


def load_nelf_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[NeLF, dict]:
    """-> (student in eval mode on ``device``, run.json contents)."""
    run_dir = Path(run_dir)
    source = str(run_dir / "run.json")
    run = read_json(run_dir / "run.json")
    if require(run, "app", source) != "nelf":
        raise NgfxInputError(source, "app", f"not a NeLF run (app = {run['app']!r})")
    model = build_student(student_config(require(run, "nelf_config", source, dict), source))
    _check_geometry(run, source, model.cfg)
    tensors, _ = load_checkpoint(run_dir / "checkpoint.safetensors")
    state = {n[6:]: v for n, v in tensors.items() if n.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise NgfxInputError(str(run_dir / "checkpoint.safetensors"), "model",
                             f"does not match the network in run.json ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), run


def _check_geometry(run: dict, source: str, cfg) -> None:
    """The run's camera, near/far, aabb, orbit and frame size must be finite, make sense and fit the student
    ``cfg`` (a NaN focal length rendered NaN frames without a word)."""
    k = require(run, "intrinsics", source, dict)
    where = f"{source}: intrinsics"
    low_resolution(cfg, *(require_number(k, key, where, low=1, integer=True) for key in ("width", "height")),
                   source, "intrinsics")
    for key in ("fx", "fy"):
        if not require_number(k, key, where) > 0:
            raise NgfxInputError(where, key, f"expected a focal length > 0 pixels, got {k[key]!r}")
    for key in ("cx", "cy", "k1", "k2", "p1", "p2"):
        require_number(k, key, where, default=0.0)
    near = require_number(run, "near", source, low=0.0)
    if not require_number(run, "far", source) > near:
        raise NgfxInputError(source, "far", f"must be greater than near ({near}), got {run['far']!r}")
    aabb = require(run, "aabb", source, list)
    if len(aabb) != 2 or not all(isinstance(c, list) and len(c) == 3 for c in aabb):
        raise NgfxInputError(source, "aabb", f"expected [[x, y, z], [x, y, z]] (min, max), got {aabb!r}")
    for corner, name in zip(aabb, ("min", "max")):
        for axis, key in enumerate("xyz"):
            require_number({key: corner[axis]}, key, f"{source}: aabb {name}")
    if not all(lo < hi for lo, hi in zip(*aabb)):
        raise NgfxInputError(source, "aabb", f"min must be below max on every axis, got {aabb!r}")
    if not require_number(run, "orbit_radius", source) > 0:
        raise NgfxInputError(source, "orbit_radius", f"expected a distance > 0, got {run['orbit_radius']!r}")
    require_number(run, "orbit_elevation_deg", source, low=-90.0, high=90.0)
    resolution = require(run, "resolution", source, list)
    if len(resolution) != 2:
        raise NgfxInputError(source, "resolution", f"expected [width, height] in pixels, got {resolution!r}")
    low_resolution(cfg, *(require_number({key: value}, key, f"{source}: resolution", low=1, integer=True)
                          for value, key in zip(resolution, ("width", "height"))), source, "resolution")


def inference_model(model: NeLF, device: torch.device) -> tuple[object, torch.dtype, str]:
    """The fastest forward for ``device``, the dtype its input takes and its name. With triton (on CUDA, or on
    CPU under TRITON_INTERPRET=1) the fused kernels (:class:`ngfx.nelf.triton_nelf.FusedNeLF`: fp16 on CUDA,
    fp32 interpreted) when the network's widths suit them; else fp16 + torch.compile (CUDA graphs) on CUDA and
    plain fp32 on CPU. A light-slab or depth-oracle student stays fp32 and uncompiled: its grid lookups are their own
    (Triton) kernels, tested in fp32."""
    if model.cfg.arch == "oracle":  # grid lookups and the field's kernels: fp32, uncompiled, as trained
        return model.float(), torch.float32, "pytorch"
    lightslab = model.cfg.arch == "lightslab"
    dtype = torch.float16 if device.type == "cuda" and not lightslab else torch.float32
    if not lightslab and use_triton(True, device):
        from ngfx.nelf.triton_nelf import FusedNeLF  # imports triton

        try:
            return FusedNeLF(model, dtype), dtype, "fused triton"  # it folds the BatchNorms into its own weights
        except ValueError:  # a width the kernels do not take (they need powers of two >= 16)
            pass
    model = fold_batchnorm(model)
    if dtype == torch.float32:
        return model.float(), dtype, "pytorch"
    model = model.half().to(memory_format=torch.channels_last)
    return torch.compile(model, mode="reduce-overhead"), dtype, "torch.compile"


def _camera_path(run: dict, camera_path: str | Path | None, n_frames: int) -> torch.Tensor:
    if camera_path in (None, "orbit"):
        center = torch.tensor(run["aabb"]).mean(0)
        return orbit_poses(n_frames, run["orbit_radius"], run["orbit_elevation_deg"], tuple(center.tolist()))
    data = read_json(camera_path)
    frames = data.get("frames", data) if isinstance(data, dict) else data
    try:
        poses = torch.tensor([f["transform_matrix"] if isinstance(f, dict) else f for f in frames], dtype=torch.float32)
    except (KeyError, TypeError, ValueError):
        raise NgfxInputError(str(camera_path), "frames", "expected a list of 4x4 poses or of {transform_matrix}") from None
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise NgfxInputError(str(camera_path), "frames", f"poses must be 4x4, got shape {list(poses.shape)}")
    return poses


def render_nelf_run(run_dir: str | Path, out_dir: str | Path, resolution: tuple[int, int] | None = None,
                    camera_path: str | Path | None = None, n_frames: int = 60, video: bool = False,
                    device: str | None = None) -> list[Path]:
    """Render ``n_frames`` orbit views (or the poses of ``camera_path``) at ``resolution`` (W, H) -> written files.

    Frames go to ``out_dir/frame_0000.png`` ...; with ``video`` also ``out_dir/video.mp4``; ``out_dir/metrics.json``
    holds the frame count, size and the median time per frame (ray encoding + network + copy to the host).
    """
    if Path(out_dir).resolve() == Path(run_dir).resolve():
        raise NgfxInputError("--out", "out", f"{out_dir} is the run folder itself; renders never overwrite a run's "
                             "training records, pick another folder")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, run = load_nelf_run(run_dir, device)
    k = Intrinsics(**run["intrinsics"])
    if resolution is not None:
        low_resolution(model.cfg, *resolution)  # clear error for an impossible size
        k = k.scaled(*resolution)
    geometry = {"near": run["near"], "far": run["far"], "aabb": torch.tensor(run["aabb"])}
    forward, dtype, forward_name = inference_model(model, device)
    out_dir = Path(out_dir)
    frame_ms: list[float] = []

    def frames():
        for pose in progress_bar(_camera_path(run, camera_path, n_frames), desc="nelf frames", unit="frame"):
            began = time.perf_counter()
            rays = encode_frames(model.cfg, pose[None].to(device), k, **geometry).to(dtype)
            if device.type == "cuda":
                rays = rays.contiguous(memory_format=torch.channels_last)
            rgb = forward(rays)[0].permute(1, 2, 0).float().cpu().numpy()  # the copy waits for the GPU
            frame_ms.append((time.perf_counter() - began) * 1e3)
            yield rgb

    with torch.no_grad():
        paths = write_frames(frames(), out_dir, video)
    # the first frame pays for compilation and CUDA-graph capture; the median of the rest is the steady state
    steady = frame_ms[1:] or frame_ms
    write_json(out_dir / "metrics.json", {
        "app": "nelf", "run": str(Path(run_dir).resolve()), "frames": len(frame_ms), "resolution": [k.width, k.height],
        "device": str(device), "dtype": str(dtype).replace("torch.", ""), "forward": forward_name,
        "ms_per_frame_median": statistics.median(steady) if steady else None})
    return paths
