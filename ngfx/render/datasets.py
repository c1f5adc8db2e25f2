"""Multi-view image datasets for NeRF: Blender/NeRF-synthetic folders and instant-ngp ``transforms.json``.

* Blender (``transforms_{train,val}.json`` in a folder): ``camera_angle_x``, frames with ``file_path``
  (extension optional) and a camera-to-world ``transform_matrix`` (OpenGL: the camera looks down -Z).
  The scene box is instant-ngp's default for these scenes, [-1.5, 1.5]^3.
* instant-ngp (``transforms.json``, or a folder holding one): ``fl_x`` (or ``camera_angle_x``), ``fl_y``,
  ``cx``, ``cy``, ``w``, ``h``, distortion ``k1 k2 p1 p2``, ``aabb_scale``, ``scale``/``offset`` (world to
  instant-ngp's unit cube, defaults 0.33 / 0.5), JPEG or PNG frames. A ``transforms_val.json`` beside it is
  the ``val`` split (and every frame of ``transforms.json`` trains); without one, every 8th frame is held out as
  the ``val`` split.

Images of another size than declared are resized when their aspect ratio matches, else rejected. Every
problem raises :class:`NgfxInputError` naming the file and the field.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ngfx.errors import NgfxInputError
from ngfx.io import read_image, read_json, require, require_number
from ngfx.cameras import Intrinsics

SPLITS = ("train", "val", "test")
BLENDER_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
HOLDOUT_EVERY = 8  # instant-ngp datasets without a val file: frames 0, 8, 16, ... are the val split
ASPECT_TOLERANCE = 0.01
ROTATION_TOLERANCE = 1e-2  # |R^T R - I| of a camera rotation; exporters write 6+ digits
MAX_IMAGE_SIDE = 32768  # pixels: a declared size beyond it is a typo (and would not fit in memory)
MAX_TRANSLATION = 1e6  # world units: further cameras are a unit mix-up or garbage
PINHOLE_CAMERA_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")  # COLMAP's names
MAX_RADIAL_DISTORTION = 10.0  # |k1|, |k2| (OpenCV's model on normalised coordinates; real lenses |k| < 1)
MAX_TANGENTIAL_DISTORTION = 1.0  # |p1|, |p2|


@dataclass
class MultiViewData:
    """One split of a multi-view dataset.

    images: [N, H, W, C] uint8 (C = 3, or 4 with alpha); poses: [N, 4, 4] float32 camera-to-world;
    aabb: [2, 3] scene box in world units; near/far: a depth range that covers the box from every camera.
    """

    images: torch.Tensor
    poses: torch.Tensor
    intrinsics: Intrinsics
    aabb: torch.Tensor
    near: float
    far: float
    source: str
    file_paths: list[str]

    @property
    def has_alpha(self) -> bool:
        return self.images.shape[-1] == 4

    def __len__(self) -> int:
        return self.images.shape[0]


def _pose(frame: dict, source: str, field: str) -> np.ndarray:
    """A camera-to-world matrix: a rotation (orthonormal, det +1) and a translation within ``MAX_TRANSLATION``."""
    matrix = require(frame, "transform_matrix", source, list)
    try:
        pose = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise NgfxInputError(source, field, "transform_matrix must be a 4x4 list of numbers") from None
    if pose.shape == (3, 4):
        pose = np.vstack([pose, [0.0, 0.0, 0.0, 1.0]])
    if pose.shape != (4, 4):
        raise NgfxInputError(source, field, f"transform_matrix must be 4x4 (or 3x4), got shape {list(pose.shape)}")
    if not np.isfinite(pose).all():
        raise NgfxInputError(source, field, "transform_matrix holds NaN or inf")
    rotation = pose[:3, :3]
    error = np.abs(rotation.T @ rotation - np.eye(3)).max()
    if error > ROTATION_TOLERANCE or np.linalg.det(rotation) < 0:
        raise NgfxInputError(source, field, f"the 3x3 rotation is not orthonormal with determinant +1 (|R^T R - I| = "
                                            f"{error:.3g}, det {np.linalg.det(rotation):.3g})")
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0]):  # a projective last row: not a camera-to-world transform
        raise NgfxInputError(source, field, f"the last row must be [0, 0, 0, 1], got {pose[3].tolist()}")
    if np.abs(pose[:3, 3]).max() > MAX_TRANSLATION:
        raise NgfxInputError(source, field, f"camera position {pose[:3, 3].tolist()} is beyond {MAX_TRANSLATION:g} "
                                            "world units")
    return pose


def _one_pose_per_image(paths: list[Path], poses, fields: list[str], source: str) -> None:
    """Refuse an image listed under two different poses (a copy-paste slip in a transforms file): its pixels
    cannot be right from both, and training would silently fit their average."""
    seen: dict[Path, tuple[np.ndarray, str]] = {}
    for path, pose, field in zip(paths, poses, fields):
        first_pose, first_field = seen.setdefault(path, (np.asarray(pose), field))
        if not np.allclose(first_pose, np.asarray(pose), atol=1e-6):
            raise NgfxInputError(source, field, f"{path.name} is also the image of {first_field}, under another pose")


def _image_path(root: Path, file_path: str, source: str, field: str) -> Path:
    """The frame's image under the dataset's folder; a path leaving it (``../``, absolute) only when allowed
    (``NGFX_ALLOW_OUTSIDE_PATHS=1``, ``ngfx train --allow-outside-paths``): a dataset file must not make
    the loader read files elsewhere unasked. Symlinks inside the folder are followed as usual."""
    path = Path(os.path.normpath(root / file_path))
    if os.environ.get("NGFX_ALLOW_OUTSIDE_PATHS") != "1" and not path.is_relative_to(os.path.normpath(root)):
        raise NgfxInputError(source, field, f"{file_path!r} leads outside the dataset folder {root}; pass "
                                            "--allow-outside-paths (or set NGFX_ALLOW_OUTSIDE_PATHS=1) to read it")
    if path.is_file():
        return path
    for ext in (".png", ".jpg", ".jpeg", ".PNG", ".JPG"):
        candidate = path.with_name(path.name + ext)
        if candidate.is_file():
            return candidate
    raise NgfxInputError(source, field, f"image file not found: {path}")


def _fit_image(img: np.ndarray, width: int, height: int, path: Path, source: str, field: str) -> torch.Tensor:
    """[h, w, C] float -> [height, width, C'] uint8 (C' = 3 or 4); resized when only the scale differs."""
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    elif img.shape[-1] == 2:  # grey + alpha
        img = np.concatenate([np.repeat(img[..., :1], 3, axis=-1), img[..., 1:]], axis=-1)
    t = torch.from_numpy(np.ascontiguousarray(img[..., :4]))
    h, w = t.shape[:2]
    if (w, h) != (width, height):
        if abs(w / h - width / height) > ASPECT_TOLERANCE * width / height:
            raise NgfxInputError(source, field, f"image {path.name} is {w}x{h}, declared {width}x{height} "
                                                "(another aspect ratio: cannot resize)")
        t = F.interpolate(t.permute(2, 0, 1)[None], size=(height, width), mode="bilinear", antialias=True,
                          align_corners=False)[0].permute(1, 2, 0)
    return (t.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def _load_images(paths: list[Path], width: int | None, height: int | None, source: str,
                 fields: list[str]) -> torch.Tensor:
    def read(path: Path, field: str) -> np.ndarray:  # a bad image names the frame that lists it, too
        try:
            return read_image(path)
        except NgfxInputError as e:
            raise NgfxInputError(source, field, f"{e.source}: {e.problem}") from None

    with ThreadPoolExecutor(max_workers=8) as pool:
        raw = list(pool.map(read, paths, fields))
    if width is None or height is None:
        height, width = raw[0].shape[:2]
    images = [_fit_image(img, width, height, p, source, f) for img, p, f in zip(raw, paths, fields)]
    n_channels = {img.shape[-1] for img in images}
    if len(n_channels) > 1:  # mixed RGB / RGBA: give every image an alpha channel
        images = [img if img.shape[-1] == 4 else torch.cat([img, torch.full_like(img[..., :1], 255)], -1)
                  for img in images]
    return torch.stack(images)


def _near_far(poses: torch.Tensor, aabb: torch.Tensor) -> tuple[float, float]:
    centre, half_diagonal = aabb.mean(0), float((aabb[1] - aabb[0]).norm() / 2)
    distances = (poses[:, :3, 3] - centre).norm(dim=1)
    return max(0.05, float(distances.min()) - half_diagonal), float(distances.max()) + half_diagonal


def _frames(meta: dict, source: str) -> list:
    frames = require(meta, "frames", source, list)
    if not frames:
        raise NgfxInputError(source, "frames", "is empty")
    return frames


def _finish(images, poses, intrinsics, aabb, source, paths, scale) -> MultiViewData:
    if scale != 1.0:
        width, height = max(1, round(intrinsics.width * scale)), max(1, round(intrinsics.height * scale))
        images = F.interpolate(images.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear",
                               antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
        images = images.permute(0, 2, 3, 1).contiguous()
        intrinsics = intrinsics.scaled(width, height)
    poses_t = torch.from_numpy(np.stack(poses)).float()
    aabb_t = torch.tensor(aabb, dtype=torch.float32)
    near, far = _near_far(poses_t, aabb_t)
    return MultiViewData(images, poses_t, intrinsics, aabb_t, near, far, source, [str(p) for p in paths])


def load_blender(folder: str | Path, split: str = "train", scale: float = 1.0) -> MultiViewData:
    """A Blender/NeRF-synthetic split (``transforms_{split}.json``)."""
    folder = Path(folder)
    json_path = folder / f"transforms_{split}.json"
    source = str(json_path)
    meta = read_json(json_path)
    angle = _fov_x(meta, source)
    frames = _frames(meta, source)
    paths, poses, fields = [], [], []
    for i, frame in enumerate(frames):
        field = f"frames[{i}].file_path"
        paths.append(_image_path(folder, require(frame, "file_path", source, str), source, field))
        poses.append(_pose(frame, source, f"frames[{i}].transform_matrix"))
        fields.append(field)
    _one_pose_per_image(paths, poses, fields, source)
    images = _load_images(paths, None, None, source, fields)
    intrinsics = Intrinsics.from_fov_x(images.shape[2], images.shape[1], angle)
    return _finish(images, poses, intrinsics, BLENDER_AABB, source, paths, scale)


def _fov_x(meta: dict, source: str) -> float:
    """``camera_angle_x``, the horizontal field of view in radians: strictly between 0 and pi."""
    angle = require_number(meta, "camera_angle_x", source)
    if not 0 < angle < math.pi:
        raise NgfxInputError(source, "camera_angle_x", f"must be in (0, pi) radians, got {angle}")
    return angle


def _ngp_intrinsics(meta: dict, source: str, first_image: Path) -> Intrinsics:
    if "w" in meta and "h" in meta:
        width, height = (require_number(meta, key, source, low=1, high=MAX_IMAGE_SIDE, integer=True) for key in ("w", "h"))
    else:
        height, width = read_image(first_image).shape[:2]
    if width <= 0 or height <= 0:
        raise NgfxInputError(source, "w", f"image size must be positive, got {width}x{height}")
    if "fl_x" in meta:
        fx = require_number(meta, "fl_x", source)
    elif "camera_angle_x" in meta:
        fx = 0.5 * width / math.tan(0.5 * _fov_x(meta, source))
    else:
        raise NgfxInputError(source, "fl_x", "missing (neither 'fl_x' nor 'camera_angle_x' given)")
    fy = require_number(meta, "fl_y", source, default=fx)
    for key, focal in (("fl_x", fx), ("fl_y", fy)):  # a field of view between ~0.1 and ~179.9 degrees
        if not width / 2000 <= focal <= 1000 * width:
            raise NgfxInputError(source, key, f"focal length {focal:g} pixels is absurd for an image {width} wide")
    model = "OPENCV_FISHEYE" if meta.get("is_fisheye") is True else meta.get("camera_model", "OPENCV")
    if model not in PINHOLE_CAMERA_MODELS:
        raise NgfxInputError(source, "is_fisheye" if meta.get("is_fisheye") is True else "camera_model",
                             f"ngfx models pinhole cameras with k1, k2, p1, p2 distortion "
                             f"({', '.join(PINHOLE_CAMERA_MODELS)}), got {model!r}")
    for key in ("k3", "k4"):  # higher radial terms would be silently dropped
        if require_number(meta, key, source, 0.0) != 0.0:
            raise NgfxInputError(source, key, "radial distortion beyond k1, k2 is not modelled; undistort the images")
    radial = (require_number(meta, key, source, 0.0, -MAX_RADIAL_DISTORTION, MAX_RADIAL_DISTORTION)
              for key in ("k1", "k2"))
    tangential = (require_number(meta, key, source, 0.0, -MAX_TANGENTIAL_DISTORTION, MAX_TANGENTIAL_DISTORTION)
                  for key in ("p1", "p2"))
    # the principal point may leave the image (shifted lenses, crops) but not by more than its size
    cx = require_number(meta, "cx", source, width / 2, low=-width, high=2 * width)
    cy = require_number(meta, "cy", source, height / 2, low=-height, high=2 * height)
    return Intrinsics(width, height, fx, fy, cx, cy, *radial, *tangential)


def load_instant_ngp(path: str | Path, split: str = "train", scale: float = 1.0) -> MultiViewData:
    """An instant-ngp ``transforms.json`` (a file or a folder holding one)."""
    path = Path(path)
    json_path = path / "transforms.json" if path.is_dir() else path
    source = str(json_path)
    meta = read_json(json_path)
    frames = _frames(meta, source)
    val_file = json_path.parent / "transforms_val.json"
    has_val_file = val_file.is_file() and val_file != json_path
    if split != "train" and has_val_file:
        source, meta_val = str(val_file), read_json(val_file)
        picked = list(enumerate(_frames(meta_val, source)))
    elif has_val_file:  # the val views are elsewhere: every frame trains
        picked = list(enumerate(frames))
    else:
        picked = [(i, f) for i, f in enumerate(frames) if (i % HOLDOUT_EVERY == 0) == (split != "train")]
        if not picked:
            picked = list(enumerate(frames))
    root = json_path.parent
    paths, poses, fields = [], [], []
    for i, frame in picked:
        field = f"frames[{i}].file_path"
        paths.append(_image_path(root, require(frame, "file_path", source, str), source, field))
        poses.append(_pose(frame, source, f"frames[{i}].transform_matrix"))
        fields.append(field)
    _one_pose_per_image(paths, poses, fields, source)
    intrinsics = _ngp_intrinsics(meta, str(json_path), paths[0])
    images = _load_images(paths, intrinsics.width, intrinsics.height, source, fields)
    aabb_scale = require_number(meta, "aabb_scale", str(json_path), 1.0, low=1 / 128, high=128)  # instant-ngp's range
    world_scale = require_number(meta, "scale", str(json_path), 0.33, low=1 / MAX_TRANSLATION, high=MAX_TRANSLATION)
    offset_values = meta.get("offset", [0.5, 0.5, 0.5])
    if not isinstance(offset_values, list) or len(offset_values) != 3:
        raise NgfxInputError(str(json_path), "offset", f"expected three numbers, got {offset_values!r}")
    offset = np.array([require_number({"offset": v}, "offset", str(json_path), low=-MAX_TRANSLATION,
                                      high=MAX_TRANSLATION) for v in offset_values])
    # instant-ngp's unit cube holds the box 0.5 +- aabb_scale / 2; world = (unit - offset) / scale
    unit_box = np.array([[0.5 - aabb_scale / 2] * 3, [0.5 + aabb_scale / 2] * 3])
    aabb = ((unit_box - offset) / world_scale).tolist()
    return _finish(images, poses, intrinsics, aabb, source, paths, scale)


def load_multiview(path: str | Path, split: str = "train", scale: float = 1.0) -> MultiViewData:
    """Load ``split`` of the dataset at ``path``, recognising the format from its files."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 < scale <= 1:
        raise ValueError(f"image scale must be in (0, 1], got {scale}")
    path = Path(path)
    if path.is_dir() and (path / "transforms_train.json").is_file():
        return load_blender(path, split, scale)
    if (path.is_dir() and (path / "transforms.json").is_file()) or (path.is_file() and path.suffix == ".json"):
        return load_instant_ngp(path, split, scale)
    if not path.exists():
        raise NgfxInputError(str(path), None, "scene not found (expected a folder or a transforms.json)")
    raise NgfxInputError(str(path), None, "not a NeRF dataset: no transforms_train.json or transforms.json")


@dataclass
class CameraSet:
    """Poses to render (``ngfx render --cameras``): poses [N, 4, 4] camera-to-world, one ``intrinsics``, and
    the frames' images [N, H, W, C] uint8 when the file names them (to score the renders against)."""

    poses: torch.Tensor
    intrinsics: Intrinsics
    images: torch.Tensor | None
    source: str


def load_cameras(path: str | Path) -> CameraSet:
    """A camera file: a Blender / instant-ngp transforms file (``frames`` with ``transform_matrix`` and, for
    scoring, ``file_path``), or a nerfstudio camera path (``camera_path`` entries with a flattened 4x4
    ``camera_to_world`` and a vertical ``fov`` in degrees; ``render_width`` / ``render_height``)."""
    json_path = Path(path)
    source = str(json_path)
    meta = read_json(json_path)
    if not isinstance(meta, dict):
        raise NgfxInputError(source, None, "expected a JSON object (a transforms file or a camera path)")
    if "camera_path" in meta:
        return _nerfstudio_cameras(meta, source)
    frames = _frames(meta, source)
    poses = torch.from_numpy(np.stack([_pose(f, source, f"frames[{i}].transform_matrix")
                                       for i, f in enumerate(frames)])).float()
    named = [i for i, f in enumerate(frames) if isinstance(f, dict) and "file_path" in f]
    if named and len(named) != len(frames):
        raise NgfxInputError(source, f"frames[{next(i for i in range(len(frames)) if i not in named)}].file_path",
                             "missing: either every frame names its image or none does")
    paths = [_image_path(json_path.parent, require(f, "file_path", source, str), source, f"frames[{i}].file_path")
             for i, f in enumerate(frames)] if named else []
    _one_pose_per_image(paths, poses, [f"frames[{i}].file_path" for i in range(len(paths))], source)
    if not paths and not ("w" in meta and "h" in meta):
        raise NgfxInputError(source, "w", "no image size: give 'w' and 'h' (or frames with images)")
    intrinsics = _ngp_intrinsics(meta, source, paths[0] if paths else None)
    images = None
    if paths:
        images = _load_images(paths, intrinsics.width, intrinsics.height, source,
                              [f"frames[{i}].file_path" for i in range(len(frames))])
    return CameraSet(poses, intrinsics, images, source)


def _nerfstudio_cameras(meta: dict, source: str) -> CameraSet:
    camera_type = meta.get("camera_type", "perspective")
    if camera_type != "perspective":  # fisheye, equirectangular, ...: ngfx renders pinhole views only
        raise NgfxInputError(source, "camera_type", f"ngfx renders perspective cameras only, got {camera_type!r}")
    width = int(require_number(meta, "render_width", source, low=1, integer=True))
    height = int(require_number(meta, "render_height", source, low=1, integer=True))
    entries = require(meta, "camera_path", source, list)
    if not entries:
        raise NgfxInputError(source, "camera_path", "is empty")
    poses, fovs = [], []
    for i, entry in enumerate(entries):
        field = f"camera_path[{i}]"
        if not isinstance(entry, dict):
            raise NgfxInputError(source, field, "expected an object with camera_to_world and fov")
        flat = require(entry, "camera_to_world", source, list)
        if len(flat) != 16:
            raise NgfxInputError(source, f"{field}.camera_to_world", f"expected 16 numbers (a 4x4), got {len(flat)}")
        poses.append(_pose({"transform_matrix": [flat[r * 4:r * 4 + 4] for r in range(4)]}, source,
                           f"{field}.camera_to_world"))
        fovs.append(require_number(entry, "fov", source, low=1e-3, high=179.0))
    if max(fovs) - min(fovs) > 1e-6:
        raise NgfxInputError(source, "camera_path[].fov", "varies along the path; ngfx renders one field of view")
    focal = 0.5 * height / math.tan(math.radians(fovs[0]) / 2.0)  # nerfstudio's fov is vertical
    intrinsics = Intrinsics(width, height, focal, focal, width / 2, height / 2)
    return CameraSet(torch.from_numpy(np.stack(poses)).float(), intrinsics, None, source)
