"""Export a NeLF student to ONNX for phones, and check the exported graph against PyTorch with onnxruntime.

The ONNX graph takes the encoded rays of one frame, ``rays`` [1, C_in, h, w] (float32), and returns
``rgb`` [1, 3, H, W]; ray encoding (:func:`ngfx.nelf.network.encode_rays`) stays on the host because it
depends on the camera (a depth oracle takes each pixel's ray itself, origin and direction). BatchNorm is
folded into the convs before export. The model's metadata (``metadata_props``) says how to build ``rays``:
channel order, sampling and encoding, so a phone app needs nothing but the file.
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
from ngfx.cameras import Intrinsics
from ngfx.nelf.network import encode_frames, fold_batchnorm, low_resolution

TRACE_SIZE = 8  # export_model traces a depth oracle on a frame at most this many pixels a side


def input_layout(cfg, resolution: tuple[int, int]) -> dict[str, str]:
    """The ONNX ``metadata_props``: what the ``rays`` input holds, channel by channel."""
    w, h = low_resolution(cfg, *resolution)
    if cfg.arch == "oracle":
        return {
            "ngfx.input": "rays",
            "ngfx.input_shape": f"[1, 6, {h}, {w}] (N, C, H, W), float32",
            "ngfx.input_layout": ("one ray per output pixel through its centre; channels 0..2 the ray's origin "
                                  "(x, y, z) and channels 3..5 its unit direction (x, y, z), in world space (the "
                                  "scene box's frame); ngfx.nelf.network.encode_frames"),
            "ngfx.scene_box": (f"{json.dumps([list(c) for c in cfg.aabb])} (min, max corners, world units): rays are "
                               "cut to it, and rays that miss it get the background colour"),
            "ngfx.output": f"rgb [1, 3, {resolution[1]}, {resolution[0]}] in [0, 1], (N, C, H, W)",
            "ngfx.nelf_config": json.dumps(cfg.to_dict()),
        }
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


def export_model(model: torch.nn.Module, out_path: str | Path, resolution: tuple[int, int]) -> Path:
    """Write a student (NeLF, light slab or depth oracle) for a ``resolution`` (W, H) frame to ``out_path``
    atomically."""
    w, h = low_resolution(model.cfg, *resolution)
    model = model.float().cpu()
    if model.cfg.arch != "oracle":  # the oracle has no BatchNorm (nor convs); the others fold every one of theirs
        model = fold_batchnorm(model)
    example, pinned = torch.rand(1, model.cfg.in_channels, h, w), None
    if model.cfg.arch == "oracle":
        # an oracle reads its grids at 64 bin points and 12 samples a ray: traced at this frame's size, the trace
        # holds every intermediate tensor (12 GB for the paper size at 200x200) and the file every lookup's zeros
        # and ones as constants; traced small with the sizes as symbols, the graph fits any frame (export_onnx)
        example = example[..., :TRACE_SIZE, :TRACE_SIZE]
        pinned = ((1, model.cfg.in_channels, h, w), (1, 3, resolution[1], resolution[0]))
    # hashed grid lookups (a light slab's, an oracle's) need ONNX's bitwise operators (opset 18)
    opset = 17 if model.cfg.arch == "mobile_r2l" else 18
    return export_onnx(model, example, out_path, ("rays", "rgb"), input_layout(model.cfg, resolution), opset, pinned)


def export_onnx(module: torch.nn.Module, example: torch.Tensor, out_path: str | Path,
                names: tuple[str, str] = ("input", "output"), metadata: dict[str, str] | None = None,
                opset: int = 17, pinned: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> Path:
    """Any one-input network at ``example``'s fixed shape -> an ONNX file written atomically.

    With ``pinned`` (an image network's input and output shapes, [N, C, H, W]) the frame's height and width are
    traced as symbols, then fixed to ``pinned``'s: traced at known sizes, the exporter writes every tensor it can
    derive from them into the file as a constant (a grid lookup's zeros and ones, one per ray and sample: gigabytes
    for a paper-size depth oracle at 400x400), where as ops they cost nothing to store."""
    # a hashed grid level XORs its vertex's hashed coordinates in place (ngfx.encodings.reference), an op the
    # TorchScript exporter has no symbolic for; ONNX has BitwiseXor from opset 18
    torch.onnx.register_custom_op_symbolic("aten::__ixor_", _bitwise_xor, 18)
    buffer = io.BytesIO()
    image_sizes = {2: "height", 3: "width"}
    dynamic = None if pinned is None else {names[0]: image_sizes, names[1]: image_sizes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's; it is the one that folds BN
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: they hold
        torch.onnx.export(module.eval(), (example,), buffer, input_names=[names[0]], output_names=[names[1]],
                          opset_version=opset, dynamo=False, dynamic_axes=dynamic)
    graph = onnx.load_from_string(buffer.getvalue())
    if pinned is not None:  # the file takes one frame size
        for value, shape in zip((graph.graph.input[0], graph.graph.output[0]), pinned):
            for dim, size in zip(value.type.tensor_type.shape.dim, shape):
                dim.dim_value = size
        del graph.graph.value_info[:]  # the exporter's shapes, in symbols
        graph = onnx.shape_inference.infer_shapes(graph)
    if metadata:
        onnx.helper.set_model_props(graph, metadata)
    out_path = Path(out_path)
    with atomic_write(out_path) as f:
        f.write(graph.SerializeToString())
    return out_path


def _bitwise_xor(g, a, b):
    return g.op("BitwiseXor", a, b)


def onnx_max_error(model: torch.nn.Module, onnx_path: str | Path, rays: torch.Tensor) -> float:
    """Largest |onnxruntime - PyTorch| over the RGB of ``rays`` [1, C_in, h, w] (CPU, float32)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(["rgb"], {"rays": rays.float().cpu().numpy()})
    with torch.no_grad():
        ref = model.float().eval().cpu()(rays.float().cpu()).numpy()
    return float(np.abs(ours - ref).max())


def export_run(run_dir: str | Path, out_path: str | Path, resolution: tuple[int, int] | None = None) -> dict:
    """``ngfx nelf export``: export a NeLF run's student and check it on the rays of a frame of the run's own
    orbit, as a render feeds it (a depth oracle's bins and box test mean nothing on random numbers) -> summary."""
    from ngfx.nelf.runs import _camera_path, load_nelf_run

    model, run = load_nelf_run(run_dir, "cpu")
    resolution = tuple(resolution or run["resolution"])
    path = export_model(model, out_path, resolution)
    k = Intrinsics(**run["intrinsics"]).scaled(*resolution)
    rays = encode_frames(model.cfg, _camera_path(run, None, 1), k, run["near"], run["far"], torch.tensor(run["aabb"]))
    return {"path": str(path), "resolution": list(resolution), "bytes": path.stat().st_size,
            "max_abs_error_vs_pytorch": onnx_max_error(model, path, rays)}
