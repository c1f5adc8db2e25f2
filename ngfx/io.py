"""One way to write outputs atomically, read JSON and images, and save checkpoints.

Every writer goes through :func:`atomic_write`: a temp file in the destination folder, fsync, then
``os.replace``, so an interrupted run never leaves a half-written checkpoint, image or trace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ngfx.errors import NgfxInputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temp folder beside ``path`` to fill; on success it replaces the folder ``path`` whole (two renames),
    so a failure part way leaves the previous folder as it was and no half-written one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NgfxInputError(str(path), None, "exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; a finished folder follows the user's umask
    old = tmp.with_suffix(".old")
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if old.exists() and not path.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises :class:`NgfxInputError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise NgfxInputError(str(path), None, "file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise NgfxInputError(str(path), None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise NgfxInputError(str(path), None, f"not UTF-8 text ({e.reason})") from None


def require(obj: dict, key: str, source: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """``obj[key]`` or a clear error naming ``source`` and ``key``."""
    if not isinstance(obj, dict):
        raise NgfxInputError(source, key, f"expected an object holding '{key}', got {type(obj).__name__}")
    if key not in obj:
        raise NgfxInputError(source, key, "missing")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise NgfxInputError(source, key, f"expected {names}, got {type(value).__name__}")
    return value


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 in [0, 1], shape [H, W, C] (C = 1, 3 or 4)."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise NgfxInputError(str(path), None, "image file not found")
    try:
        img = iio.imread(path)
    except Exception as e:  # imageio raises many types for corrupt files
        raise NgfxInputError(str(path), None, f"cannot decode image ({type(e).__name__}: {e})") from None
    if img.ndim == 2:
        img = img[..., None]
    scale = 65535.0 if img.dtype == np.uint16 else 255.0 if img.dtype == np.uint8 else 1.0
    return img.astype(np.float32) / scale


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write a float image in [0, 1] (or uint8) atomically; format from the extension."""
    import imageio.v3 as iio

    path = Path(path)
    if img.dtype != np.uint8:
        img = (np.clip(np.nan_to_num(img), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    data = iio.imwrite("<bytes>", img, extension=path.suffix or ".png")
    with atomic_write(path) as f:
        f.write(data)


def save_checkpoint(path: str | os.PathLike, tensors: dict, meta: dict) -> None:
    """Save tensors (safetensors) with a JSON ``meta`` dict in the header, atomically."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata={"ngfx": json.dumps(meta)})
    with atomic_write(path) as f:
        f.write(data)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Load ``(tensors, meta)``; a truncated or foreign file raises :class:`NgfxInputError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise NgfxInputError(str(path), None, "checkpoint not found")
    raw = path.read_bytes()
    try:
        tensors = load(raw)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, Exception) as e:
        raise NgfxInputError(str(path), None, f"corrupt or truncated checkpoint ({e})") from None
    if "ngfx" not in header:
        raise NgfxInputError(str(path), "metadata.ngfx", "not an ngfx checkpoint (no 'ngfx' metadata)")
    try:
        meta = json.loads(header["ngfx"])
    except json.JSONDecodeError:
        raise NgfxInputError(str(path), "metadata.ngfx", "metadata is not valid JSON") from None
    return tensors, meta
