"""One way to write outputs atomically, read JSON and images, and save checkpoints.

Every writer goes through :func:`atomic_write`: a temp file in the destination folder, fsync, then
``os.replace``, so an interrupted run never leaves a half-written checkpoint, image or trace.
"""

from __future__ import annotations

import contextlib
import json
import math
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
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs follow the user's umask
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_naming(e, path)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temp folder beside ``path`` to fill; on success it replaces the folder ``path`` whole (two renames),
    so a failure part way leaves the previous folder as it was and no half-written one. A folder holding
    anything this output does not (the user's files) keeps it: the new entries are then moved in one by one.
    A run folder is refused before any work: outputs never replace a run's records."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NgfxInputError(str(path), None, "exists and is not a folder")
    _refuse_run_folder(path, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700; a finished folder follows the user's umask
    old = tmp.with_suffix(".old")
    try:
        yield tmp
        if path.exists() and not {entry.name for entry in path.iterdir()} <= {entry.name for entry in tmp.iterdir()}:
            for entry in tmp.iterdir():  # foreign files stay: replace only what this output writes
                os.replace(entry, path / entry.name)
            tmp.rmdir()
            return
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as e:
        if old.exists() and not path.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_naming(e, path)
    shutil.rmtree(old, ignore_errors=True)


def _raise_naming(error: BaseException, path: Path) -> None:
    """Re-raise ``error``; an OSError that names no file (a failed write: disk full) names ``path``."""
    if isinstance(error, OSError) and error.filename is None:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    raise error


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
        raise NgfxInputError(str(path), None, "is a folder, expected a JSON file" if path.is_dir() else "file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise NgfxInputError(str(path), None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise NgfxInputError(str(path), None, f"not UTF-8 text ({e.reason})") from None
    except RecursionError:
        raise NgfxInputError(str(path), None, "JSON nested too deeply") from None


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


def require_number(obj: dict, key: str, source: str, default: float | None = None, low: float | None = None,
                   high: float | None = None, integer: bool = False) -> float:
    """``obj[key]`` as a finite number in [low, high] (an int when ``integer``), else a clear error naming
    ``source`` and ``key``; ``default`` when the key is absent. Booleans, NaN and inf are refused."""
    if isinstance(obj, dict) and key not in obj and default is not None:
        return default
    return check_number(require(obj, key, source, (int, float)), source, key, low, high, integer)


CURVE_HINT = "; delete the file to resume without the curve"  # a damaged curve.json costs the resume nothing else


def require_rows(obj: dict, key: str, source: str, layout: str, default: list | None = None,
                 hint: str = "") -> list[list]:
    """``obj[key]`` as a list of rows of finite numbers, their columns as ``layout`` names them ("step, loss"); a
    ``step`` column holds whole numbers >= 1. ``default`` when the key is absent. The first bad row is refused
    naming it (``key[i]``), followed by ``hint`` (what the user can do about it)."""
    if isinstance(obj, dict) and key not in obj and default is not None:
        return default
    rows = require(obj, key, source, list)
    columns = [c.strip() for c in layout.split(",")]
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == len(columns) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (c != "step" or (v == int(v) and v >= 1)) for c, v in zip(columns, row))):
            steps = ", a step a whole number >= 1" if "step" in columns else ""
            raise NgfxInputError(source, f"{key}[{i}]", f"expected [{layout}] (finite numbers{steps}), got {row!r}{hint}")
    return rows


def check_number(value, source: str, field: str | None, low: float | None = None, high: float | None = None,
                 integer: bool = False, infinite_ok: bool = False) -> float:
    """``value`` as a number in [low, high] (an int when ``integer``), else :class:`NgfxInputError` naming
    ``source`` and ``field``. Booleans, text and NaN are refused, and infinity unless ``infinite_ok`` (+inf only)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NgfxInputError(source, field, f"expected a number, got {value!r}")
    if not math.isfinite(value) and not (infinite_ok and value == math.inf):
        raise NgfxInputError(source, field, f"expected a finite number, got {value!r}")
    if integer and value != int(value):
        raise NgfxInputError(source, field, f"expected a whole number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise NgfxInputError(source, field, f"must be in {bounds}, got {value!r}")
    return int(value) if integer else float(value)


# the first bytes of the formats imageio reads here, to tell "not an image" from "a damaged one"
IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF8", b"RIFF",
                    b"v/1\x01", b"#?RADIANCE", b"#?RGBE", b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")
MIN_IMAGE_SIDE = 2  # below this an image cannot be interpolated or compared; apps may ask for more


def read_image(path: str | os.PathLike, min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """Read an image as float32 in [0, 1], shape [H, W, C] (C = 1, 3 or 4).

    Empty files, files that are not images, several frames, sides below ``min_side`` pixels and float
    images outside [0, 1] (HDR: tone-map first) raise :class:`NgfxInputError` naming the file."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise NgfxInputError(str(path), None, "is a folder, expected an image" if path.is_dir() else "image file not found")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise NgfxInputError(str(path), None, "empty file, not an image")
    try:
        img = iio.imread(path)
    except Exception as e:  # imageio raises many types for corrupt files
        if not head.startswith(IMAGE_SIGNATURES):
            raise NgfxInputError(str(path), None, "not an image (no PNG, JPEG, TIFF, BMP, GIF, WebP or EXR "
                                                  "header)") from None
        raise NgfxInputError(str(path), None, f"damaged image, cannot decode ({type(e).__name__}: {e})") from None
    if img.ndim == 3 and img.shape[-1] == 4 and iio.immeta(path).get("mode") == "CMYK":  # print JPEGs: not RGBA
        img = iio.imread(path, mode="RGB")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] > 4:
        raise NgfxInputError(str(path), None, f"expected one image of 1-4 channels, got an array of shape {img.shape}")
    height, width = img.shape[:2]
    if min(height, width) < min_side:
        raise NgfxInputError(str(path), None, f"image too small: {width}x{height} pixels (at least "
                                              f"{min_side}x{min_side})")
    if img.dtype == np.uint16 or img.dtype == np.uint8:
        return img.astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)
    kind, img = "float" if img.dtype.kind == "f" else img.dtype, img.astype(np.float32)
    if not np.isfinite(img).all() or img.min() < 0.0 or img.max() > 1.0:
        raise NgfxInputError(str(path), None, f"{kind} image with values in [{np.nanmin(img):.4g}, {np.nanmax(img):.4g}]"
                                              " (or NaN/inf); expected 8 or 16-bit integers, or floats in [0, 1]: "
                                              "tone-map or rescale it first")
    return img


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
    if not isinstance(meta, dict):
        raise NgfxInputError(str(path), "metadata.ngfx", f"expected a JSON object, got {type(meta).__name__}")
    return tensors, meta


# --- output paths, stale temp files, folder locks -------------------------------------------------
RUN_RECORDS = ("run.json", "checkpoint.safetensors", "curve.json", "metrics.json", "preview.png")  # a run folder's


def _holds_run(folder: Path) -> bool:
    return (folder / "run.json").is_file()  # what marks a run folder (ngfx.render.runs, ngfx.nelf)


def _refuse_run_folder(folder: Path, where: str) -> None:
    """Outputs other than a run's own never go into a run folder: they would land among its records."""
    if _holds_run(folder):
        raise NgfxInputError(where, None, "is a run folder (holds run.json); write into another folder")


def current_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask


def check_output(path: str | os.PathLike, flag: str, folder: bool, run: bool = False) -> Path:
    """Refuse, before any work, an output ``path`` (a folder when ``folder``, else a file) that exists as
    the other kind, is a run folder (unless the output is that run: ``run``) or one of a run's records, lies
    under a file, or is in a folder this process cannot write. Creates nothing."""
    if not os.fspath(path).strip():
        raise NgfxInputError(flag, None, "empty path")
    path = Path(path)
    where = f"{flag} {path}"
    if path.exists() and path.is_dir() != folder:
        raise NgfxInputError(where, None, f"is a {'file' if folder else 'folder'}, expected a "
                                          f"{'folder' if folder else 'file'}")
    if folder and not run:
        _refuse_run_folder(path, where)
    real = path.resolve()  # through links too
    if not folder and real.name in RUN_RECORDS and _holds_run(real.parent):
        raise NgfxInputError(where, None, f"would replace a record of the run in {real.parent}; write elsewhere")
    existing = path if (folder and path.is_dir()) else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NgfxInputError(where, None, f"lies under {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NgfxInputError(where, None, f"cannot write in {existing} (permission denied)")
    return path


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files :func:`atomic_write` left in ``folder`` when a process was killed mid-write.
    Call only while holding the folder's lock (:func:`folder_lock`), so no live writer owns them."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold ``folder/.lock`` (holding this process's PID) while writing the folder; a second process gets a
    clear error. A lock whose process is gone (killed, crashed) is taken over, and the temp files a killed
    write left in the folder are removed. A folder this call created is removed again if the work fails
    before writing anything in it (a refused run leaves no trace)."""
    lock = Path(folder) / ".lock"
    created = not lock.parent.exists()
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (FileNotFoundError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _process_alive(pid):
                raise NgfxInputError(str(folder), None, f"{what} is in use by process {pid} (lock file {lock}); "
                                                        "wait for it or stop it (if that process is not ngfx, "
                                                        "delete the lock file)") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its process is gone
    else:
        raise NgfxInputError(str(folder), None, f"cannot take the lock {lock}")
    failed = True
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        remove_stale_temp_files(lock.parent)  # the lock says no live writer owns them
        yield lock
        failed = False
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        if failed and created and not any(lock.parent.iterdir()):
            lock.parent.rmdir()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
