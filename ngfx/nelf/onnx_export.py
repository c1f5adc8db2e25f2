"""Export a NeLF student to ONNX for phones, and check the exported graph against PyTorch with onnxruntime.

The ONNX graph takes the encoded rays of one frame, ``rays`` [1, C_in, h, w] (float32), and returns
``rgb`` [1, 3, H, W]; ray encoding (:func:`ngfx.nelf.network.encode_rays`) stays on the host because it
depends on the camera. BatchNorm is folded into the convs before export. The model's metadata
(``metadata_props``) says how to build ``rays``: channel order, sampling and encoding, so a phone app
needs nothing but the file.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from ngfx.io import atomic_write
from ngfx.nelf.network import NeLF, fold_batchnorm, low_resolution


def input_layout(cfg, resolution: tuple[int, int]) -> dict[str, str]:
    """The ONNX ``metadata_props``: what the ``rays`` input holds, channel by channel."""
    w, h = low_resolution(cfg, *resolution)
    if cfg.arch == "lightslab":
        return {
            "ngfx.input": "rays",
            "ngfx.input_shape": f"[1, {cfg.in_channels}, {h}, {w}] (N, C, H, W), float32",
            "ngfx.input_layout": (f"one ray per low-resolution pixel through the centre of its {cfg.upscale}x"
                                  f"{cfg.upscale} block of output pixels; channel = slab * 5 + j: j = 0..3 the ray's "
                                  "(u, v, s, t) on the slab's two planes in [0, 1], j = 4 the slab's blend weight "
                                  "(ngfx.nelf.lightslab.slab_coordinates)"),
            "ngfx.n_slabs": str(cfg.n_slabs),
            "ngfx.output": f"rgb [1, 3, {resolution[1]}, {resolution[0]}] in (0, 1), (N, C, H, W)",
            "ngfx.nelf_config": json.dumps(cfg.to_dict()),
        }
    return {
        "ngfx.input": "rays",
        "ngfx.input_shape": f"[1, {cfg.in_channels}, {h}, {w}] (N, C, H, W), float32",
        "ngfx.input_layout": (f"one ray per low-resolution pixel through the centre of its {cfg.upscale}x{cfg.upscale}"
                              " block of output pixels; channel = (point k * 3 + axis a) * (1 + 2F) + j, where j = 0 is"
                              " the point's coordinate in [-1, 1] (mapped by the scene's aabb), j = 1..F is"
                              " sin(2^(j-1) pi x) and j = F+1..2F is cos(2^(j-F-1) pi x)"),
        "ngfx.n_points": str(cfg.n_points),
        "ngfx.n_freqs": str(cfg.n_freqs),
        "ngfx.sampling": "K points evenly spaced from near to far along each ray (t = linspace(near, far, K))",
        "ngfx.output": f"rgb [1, 3, {resolution[1]}, {resolution[0]}] in (0, 1), (N, C, H, W)",
        "ngfx.nelf_config": json.dumps(cfg.to_dict()),
    }


def export_model(model: NeLF, out_path: str | Path, resolution: tuple[int, int]) -> Path:
    """Write a student (NeLF or light slab) for a ``resolution`` (W, H) frame to ``out_path`` atomically."""
    w, h = low_resolution(model.cfg, *resolution)
    model = fold_batchnorm(model.float().cpu())  # every BatchNorm, also those after transposed convs
    example = torch.rand(1, model.cfg.in_channels, h, w)
    # a light slab's hashed grid lookups need ONNX's bitwise operators (opset 18)
    opset = 18 if model.cfg.arch == "lightslab" else 17
    return export_onnx(model, example, out_path, ("rays", "rgb"), input_layout(model.cfg, resolution), opset)


def export_onnx(module: torch.nn.Module, example: torch.Tensor, out_path: str | Path,
                names: tuple[str, str] = ("input", "output"), metadata: dict[str, str] | None = None,
                opset: int = 17) -> Path:
    """Any one-input network at ``example``'s fixed shape -> an ONNX file written atomically."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices; it is the one that folds BN
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: shapes are fixed
        torch.onnx.export(module.eval(), (example,), buffer, input_names=[names[0]], output_names=[names[1]],
                          opset_version=opset, dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue())
    if metadata:
        onnx.helper.set_model_props(graph, metadata)
    out_path = Path(out_path)
    with atomic_write(out_path) as f:
        f.write(graph.SerializeToString())
    return out_path


def onnx_max_error(model: NeLF, onnx_path: str | Path, rays: torch.Tensor) -> float:
    """Largest |onnxruntime - PyTorch| over the RGB of ``rays`` [1, C_in, h, w] (CPU, float32)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(["rgb"], {"rays": rays.float().cpu().numpy()})
    with torch.no_grad():
        ref = model.float().eval().cpu()(rays.float().cpu()).numpy()
    return float(np.abs(ours - ref).max())


def export_run(run_dir: str | Path, out_path: str | Path, resolution: tuple[int, int] | None = None) -> dict:
    """``ngfx nelf export``: export a NeLF run's student and check it on random rays -> summary dict."""
    from ngfx.nelf.runs import load_nelf_run

    model, run = load_nelf_run(run_dir, "cpu")
    resolution = tuple(resolution or run["resolution"])
    path = export_model(model, out_path, resolution)
    w, h = low_resolution(model.cfg, *resolution)
    rays = torch.randn(1, model.cfg.in_channels, h, w, generator=torch.Generator().manual_seed(0))
    return {"path": str(path), "resolution": list(resolution), "bytes": path.stat().st_size,
            "max_abs_error_vs_pytorch": onnx_max_error(model, path, rays)}
