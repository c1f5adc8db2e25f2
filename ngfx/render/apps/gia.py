"""GIA, gigapixel image approximation: a 2D grid encoding + 64-wide MLP maps image coordinates to RGB.

Training samples random continuous coordinates and looks the target up bilinearly (a real image is read
once with :func:`ngfx.io.read_image`; the procedural image is evaluated at the coordinates). Rendering
shows any window of the image at any resolution, a band of rows at a time, so 8K frames and gigapixel
evaluations fit in memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ngfx.io import read_image
from ngfx.progress import frame_bands, progress_bar
from ngfx.render import stages
from ngfx.render.apps.base import App
from ngfx.render.metrics import psnr_from_mse
from ngfx.render.ops.window import window_coords, write_rows
from ngfx.render.neural_field import NeuralField, adam, check_size, preset_size, use_triton
from ngfx.render.apps.presets import encoding_preset, mlp_preset
from scenes.procedural_image import ProceduralImage

DEFAULT_STEPS = {"tiny": 300, "quick": 1200, "full": 20000}
DEFAULT_SECONDS = {"quick": 90.0}  # the CPU demo stays within 90 s of training on a busy machine
BATCH_SIZE = {"tiny": 2 ** 12, "quick": 2 ** 14, "full": 2 ** 18}
PROCEDURAL_SIZE = {"tiny": (192, 128), "quick": (1024, 768), "full": (16384, 10240)}
CHUNK_PIXELS = {"tiny": 2 ** 14, "quick": 2 ** 16, "full": 2 ** 21}
ZOOM_CENTRE = (0.62, 0.45)  # views k >= 1 zoom 2^k-fold towards this point


def view_window(view, image_size: tuple[int, int] | None = None,
                frame_size: tuple[int, int] | None = None) -> tuple[float, float, float, float]:
    """A view index (0 = whole image, k = 2^k zoom) or a window (x0, y0, x1, y1) in [0, 1] -> window.

    With both sizes, an index view is cropped to the frame's aspect ratio (:func:`crop_to_aspect`); a
    window is drawn as given.
    """
    if isinstance(view, torch.Tensor) and view.numel() == 1:
        view = int(view)
    if isinstance(view, int):
        if view < 0:
            raise ValueError(f"GIA view index must be >= 0, got {view}")
        half = 0.5 / 2 ** view
        cx = min(max(ZOOM_CENTRE[0], half), 1 - half) if view else 0.5
        cy = min(max(ZOOM_CENTRE[1], half), 1 - half) if view else 0.5
        window = (cx - half, cy - half, cx + half, cy + half)
        return crop_to_aspect(window, image_size, frame_size) if image_size and frame_size else window
    window = tuple(float(v) for v in (view.tolist() if isinstance(view, torch.Tensor) else view))
    if len(window) != 4 or not (window[0] < window[2] and window[1] < window[3]):
        raise ValueError(f"GIA window must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, got {window}")
    return window


def crop_to_aspect(window, image_size: tuple[int, int], frame_size: tuple[int, int]):
    """Shrink ``window`` (x0, y0, x1, y1) about its centre so the image region it covers has the frame's
    aspect ratio: a portrait photograph in a 16:9 frame is cropped, not stretched."""
    x0, y0, x1, y1 = window
    region_aspect = (x1 - x0) * image_size[0] / ((y1 - y0) * image_size[1])
    frame_aspect = frame_size[0] / frame_size[1]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if region_aspect > frame_aspect:  # too wide: narrow it
        half = (x1 - x0) / 2 * frame_aspect / region_aspect
        return cx - half, y0, cx + half, y1
    half = (y1 - y0) / 2 * region_aspect / frame_aspect
    return x0, cy - half, x1, cy + half


MIN_IMAGE_SIDE = 16  # the full grids' coarsest resolution: a smaller image has nothing to fit


class GiaApp(App):
    name = "gia"

    def __init__(self, scene: str, encoding: str, size: str = "full", device=None,
                 batch_size: int | None = None, image_size: tuple[int, int] | None = None, lr: float = 1e-2):
        super().__init__()
        check_size(size)
        self.scene, self.encoding_name, self.size = scene, encoding, size
        self.device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = int(batch_size or BATCH_SIZE[size])
        self.lr = lr
        if scene == "image":
            w, h = image_size or PROCEDURAL_SIZE[size]
            self.procedural = ProceduralImage(int(w), int(h))
            self.target = None
            self.width, self.height = self.procedural.width, self.procedural.height
        else:
            img = torch.from_numpy(read_image(scene, min_side=MIN_IMAGE_SIDE))
            img = img[..., :3] if img.shape[-1] >= 3 else img[..., :1].expand(-1, -1, 3)  # greyscale -> RGB
            self.procedural = None
            self.height, self.width = img.shape[:2]
            # [1, 3, H, W] for grid_sample's bilinear lookup
            self.target = img.permute(2, 0, 1)[None].contiguous().to(self.device_)
        self.image_size = (self.width, self.height)
        log2_t = 24 if (size == "full" and max(self.width, self.height) > 2048) else 19
        enc = encoding_preset(encoding, 2, preset_size(size), finest_resolution=max(self.width, self.height),
                              log2_hashmap_size=log2_t)
        self.field = NeuralField(2, 3, enc, mlp_preset(n_hidden_layers=2), "gia").to(self.device_)

    def optimizer(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), self.lr)

    def config(self) -> dict:
        return {"scene": self.scene, "encoding": self.encoding_name, "size": self.size,
                "batch_size": self.batch_size, "image_size": list(self.image_size), "lr": self.lr}

    def target_at(self, uv: torch.Tensor) -> torch.Tensor:
        """Target colour at normalised coordinates uv [N, 2] -> [N, 3] (bilinear for a real image)."""
        if self.procedural is not None:
            return self.procedural.sample(uv)
        grid = (uv * 2.0 - 1.0)[None, None]  # align_corners=False: -1/+1 are the outer pixel edges
        return F.grid_sample(self.target, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[0, :, 0].t()

    def training_step(self, step: int) -> torch.Tensor:
        uv = torch.rand(self.batch_size, 2, device=self.device_)
        with torch.no_grad():
            target = self.target_at(uv)
        return F.mse_loss(self.field(uv).float(), target)

    def _render_bands(self, width: int, height: int, window, fused: bool):
        """Yield (row0, rgb [n_rows * width, 3]) bands of a render of ``window``."""
        triton_ok = use_triton(fused, self.device_)
        coords_fn = window_coords
        if triton_ok:
            from ngfx.render.ops.triton_window import window_coords as coords_fn
        for row0, n_rows in frame_bands(width, height, CHUNK_PIXELS[self.size], self.device_, "render gia",
                                        marched=False):
            n = n_rows * width
            with stages.stage("gia.pixel_coords", "rest", n_inputs=n, bytes_written=n * 8.0, app="gia",
                              fused=triton_ok):
                uv = coords_fn(window, width, height, row0, n_rows, device=self.device_)
            yield row0, self.field.query(uv)

    @torch.no_grad()
    def render(self, width: int, height: int, view=0, fused: bool = True) -> torch.Tensor:
        """[height, width, 3] in [0, 1]: ``view`` 0 is the whole image, k a 2^k zoom (both cropped to the frame's
        aspect ratio), or a window (x0, y0, x1, y1) in [0, 1], drawn as given."""
        window = view_window(view, (self.width, self.height), (width, height))
        triton_ok = use_triton(fused, self.device_)
        write_fn = write_rows
        if triton_ok:
            from ngfx.render.ops.triton_window import write_rows as write_fn
        frame = torch.empty(height, width, 3, device=self.device_, dtype=torch.float32)
        self.last_render_chunks = 0
        for row0, rgb in self._render_bands(width, height, window, fused):
            with stages.stage("gia.write", "rest", n_inputs=rgb.shape[0], bytes_read=rgb.numel() * 4.0,
                              bytes_written=rgb.numel() * 4.0, app="gia", fused=triton_ok):
                write_fn(frame, rgb, row0)
            self.last_render_chunks += 1
        return frame

    @torch.no_grad()
    def evaluate(self) -> dict:
        """PSNR over the full image at its native resolution, band by band (never the whole image at once),
        with a progress bar: a gigapixel image is hundreds of bands."""
        squared_error = torch.zeros((), dtype=torch.float64, device=self.device_)  # summed on the device: no sync
        bar = progress_bar(total=self.height, desc=f"evaluate gia ({self.width}x{self.height})", unit="row")
        for row0, rgb in self._render_bands(self.width, self.height, (0.0, 0.0, 1.0, 1.0), fused=True):
            n_rows = rgb.shape[0] // self.width
            if self.procedural is not None:
                target = self.procedural.tile(0, row0, self.width, n_rows, device=self.device_).reshape(-1, 3)
            else:
                target = self.target[0, :, row0:row0 + n_rows].permute(1, 2, 0).reshape(-1, 3)
            squared_error += ((rgb.clamp(0, 1) - target) ** 2).sum(dtype=torch.float64)
            bar.update(n_rows)
        bar.close()
        mse = float(squared_error) / (self.width * self.height * 3)
        return {"psnr_db": psnr_from_mse(mse), "width": self.width, "height": self.height}


def build_app(scene: str, encoding: str, size: str = "full", device=None, **options) -> GiaApp:
    return GiaApp(scene, encoding, size, device, **options)
