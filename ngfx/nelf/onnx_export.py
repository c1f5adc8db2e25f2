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

TRACE_SIZE = 8  # export_model traces a light slab or depth oracle on a frame at most this many pixels a side


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
    grid_student = model.cfg.arch != "mobile_r2l"
    example, pinned = torch.rand(1, model.cfg.in_channels, h, w), None
    if grid_student:
        # grid lookups (an oracle's at 64 bin points and 12 samples a ray, a light slab's 36 grids a ray) traced at
        # this frame's size: the trace holds every intermediate tensor (paper sizes: an oracle 12 GB at 200x200, a
        # light slab over 8 GB at 800x800) and the file every lookup's zeros and ones as constants; traced small
        # with the sizes as symbols, the graph fits any frame (export_onnx)
        example = example[..., :TRACE_SIZE, :TRACE_SIZE]
        pinned = ((1, model.cfg.in_channels, h, w), (1, 3, resolution[1], resolution[0]))
    # hashed grid lookups (a light slab's, an oracle's) need ONNX's bitwise operators (opset 18)
    opset = 18 if grid_student else 17
    return export_onnx(model, example, out_path, ("rays", "rgb"), input_layout(model.cfg, resolution), opset, pinned)


def export_onnx(module: torch.nn.Module, example: torch.Tensor, out_path: str | Path,
                names: tuple[str, str] = ("input", "output"), metadata: dict[str, str] | None = None,
                opset: int = 17, pinned: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> Path:
    """Any one-input network at ``example``'s fixed shape -> an ONNX file written atomically.

    With ``pinned`` (an image network's input and output shapes, [N, C, H, W]) the frame's height and width are
    traced as symbols, then fixed to ``pinned``'s (and so is every Reshape target computed from them, so that the
    shapes of the layers after it are known): traced at known sizes, the exporter writes every tensor it can
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
        graph = _pin_reshape_targets(onnx.shape_inference.infer_shapes(graph))
    if metadata:
        onnx.helper.set_model_props(graph, metadata)
    out_path = Path(out_path)
    with atomic_write(out_path) as f:
        f.write(graph.SerializeToString())
    return out_path


def _bitwise_xor(g, a, b):
    return g.op("BitwiseXor", a, b)


# the ops by which a traced reshape(b, h, w, -1) computes its target from its tensors' shapes
_SHAPE_OPS = {"Shape", "Constant", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice"}


def _pin_reshape_targets(model: onnx.ModelProto) -> onnx.ModelProto:
    """A graph pinned to one frame size, its shapes inferred -> every Reshape target it computes from tensor shapes
    (a light slab's features, from a row a ray back to [1, H, W, C]) made a constant, the ops that computed it
    dropped, and the shapes inferred again, now past the Reshape (its convs' shapes were unknown).

    ONNX's shape inference cannot follow a computed target; its data propagation can, but carries every per-ray
    value it meets (2.5 GB for a quick light slab at 400x400; a paper-size one passed 20 GB)."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    static = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*graph.input, *graph.value_info)
              if all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
    initializers = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    values: dict[str, np.ndarray | None] = {}

    def value(name: str) -> np.ndarray | None:  # a shape-derived tensor's value, or None where it depends on data
        if name not in values:
            node = producer.get(name)
            if name in initializers:
                values[name] = onnx.numpy_helper.to_array(initializers[name])
            elif node is None or node.op_type not in _SHAPE_OPS:
                values[name] = None
            elif node.op_type == "Shape":  # a stand-in of the input's shape, no memory
                shape = static.get(node.input[0])
                values[name] = None if shape is None else ReferenceEvaluator(node).run(
                    None, {node.input[0]: np.broadcast_to(np.float32(0), shape)})[0]
            else:
                inputs = {i: value(i) for i in node.input if i}
                values[name] = None if any(v is None for v in inputs.values()) else \
                    ReferenceEvaluator(node).run(None, inputs)[list(node.output).index(name)]
        return values[name]

    for node in graph.node:
        target = node.input[1] if node.op_type == "Reshape" else None
        if target and target in producer and producer[target].op_type != "Constant" and value(target) is not None:
            graph.initializer.append(onnx.numpy_helper.from_array(value(target).astype(np.int64), f"{target}_pinned"))
            node.input[1] = f"{target}_pinned"
    while True:  # drop the ops that computed them
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


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
