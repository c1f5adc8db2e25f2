"""The MobileR2L neural light field (and the R2L per-ray residual MLP as a config of the same module).

A frame is rendered at low resolution ``h x w``: each low-res pixel's ray is sampled at K points, every
coordinate positionally encoded, giving an image-shaped input [B, K*3*(1+2F), h, w]. A 1x1-conv stem and
residual blocks of 1x1 convs (= a per-ray MLP) run at low resolution; transposed-conv super-resolution
stages then upsample to the output size, and a 1x1 conv + sigmoid gives RGB. With no super-resolution
stages and no normalisation this is R2L's deep residual MLP, evaluated once per output pixel.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ngfx.errors import NgfxInputError
from ngfx.cameras import Intrinsics, pixel_rays


@dataclass(frozen=True)
class NeLFConfig:
    """Every size of the network. Defaults: MobileR2L for 800x800 synthetic scenes (x8 super-resolution)."""

    n_points: int = 8  # K samples per ray
    n_freqs: int = 6  # positional-encoding frequencies per coordinate (sin, cos each, plus the raw value)
    width: int = 256  # channels of the low-resolution body
    n_blocks: int = 28  # residual blocks of two 1x1 convs in the body
    # super-resolution stages: (out_channels, kernel, stride); upsampling factor = product of strides
    sr_stages: tuple[tuple[int, int, int], ...] = ((64, 4, 2), (64, 4, 2), (16, 4, 2))
    sr_blocks: int = 2  # residual blocks after each super-resolution stage
    norm: str = "batch"  # "batch" or "none"

    @property
    def arch(self) -> str:
        """The student architecture (a field of :class:`ngfx.nelf.lightslab.LightSlabConfig`, "lightslab")."""
        return "mobile_r2l"

    @property
    def in_channels(self) -> int:
        return self.n_points * 3 * (1 + 2 * self.n_freqs)

    @property
    def upscale(self) -> int:
        return math.prod(s for _, _, s in self.sr_stages)

    def to_dict(self) -> dict:
        return config_dict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "NeLFConfig":
        cfg = cls(**config_fields(cls, d, source))
        check_counts(cfg, source, {"n_points": 1, "width": 1, "n_blocks": 0, "sr_blocks": 0, "n_freqs": 0})
        if cfg.norm not in ("batch", "none"):
            raise NgfxInputError(source, "norm", f"must be 'batch' or 'none', got {cfg.norm!r}")
        return cfg


def check_counts(cfg, source: str, least: dict[str, int]) -> None:
    """Each field named in ``least`` an integer (not a bool) at least its value, else an error naming the field."""
    for key, low in least.items():
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise NgfxInputError(source, key, f"must be an integer >= {low}, got {value!r}")


def config_fields(cls, d: dict, source: str) -> dict:
    """A student config dict checked against dataclass ``cls``'s fields, ``sr_stages`` as int triples."""
    if not isinstance(d, dict):
        raise NgfxInputError(source, None, f"expected a config object, got {type(d).__name__}")
    known = set(cls.__dataclass_fields__)
    for key in d:
        if key not in known:
            raise NgfxInputError(source, key, f"unknown {cls.__name__} field (known: {sorted(known)})")
    d = dict(d)
    if "sr_stages" in d:
        try:
            d["sr_stages"] = tuple((int(c), int(k), int(s)) for c, k, s in d["sr_stages"])
        except (TypeError, ValueError):
            raise NgfxInputError(source, "sr_stages", "expected a list of [channels, kernel, stride]") from None
        for c, k, s in d["sr_stages"]:
            if c < 1 or s < 1 or k < s or (k - s) % 2:
                raise NgfxInputError(source, "sr_stages", f"stage ({c}, {k}, {s}): need kernel >= stride, "
                                     "kernel - stride even, positive sizes")
    return d


_SR_X8 = ((64, 4, 2), (64, 4, 2), (16, 4, 2))
_SR_X12 = ((64, 4, 2), (64, 4, 2), (16, 3, 3))

PRESETS: dict[str, NeLFConfig] = {
    # MobileR2L's layers as published: x8 for 800x800 synthetic scenes, x12 for 1008x756 forward-facing scenes.
    # Trained without the paper's BatchNorm: its statistics were 40 % of a batch-32 distillation step's GPU time on
    # the H200, and without them the student took 26 steps/s against 16 and scored 23.4 dB on Lego's probe views
    # after 1.7 minutes against 22.0 (BENCHMARKS.md, issue 15). Deployed, the two are the same network: inference
    # folds BatchNorm into the convs (fold_batchnorm), so the layers, parameters and costs do not change.
    "mobile_r2l_x8": NeLFConfig(sr_stages=_SR_X8, norm="none"),
    "mobile_r2l_x12": NeLFConfig(sr_stages=_SR_X12, norm="none"),
    # R2L: 88 layers (44 residual blocks), 256 wide, 16 points per ray, no super-resolution, no norm
    "r2l": NeLFConfig(n_points=16, n_freqs=6, width=256, n_blocks=44, sr_stages=(), sr_blocks=0, norm="none"),
    # small students for CPU: "tiny" for tests, "quick" for the demo (x4 super-resolution)
    "tiny": NeLFConfig(n_points=8, n_freqs=4, width=48, n_blocks=2, sr_stages=((16, 4, 2),), sr_blocks=1),
    "quick": NeLFConfig(n_points=8, n_freqs=5, width=64, n_blocks=4, sr_stages=((32, 4, 2), (16, 4, 2)), sr_blocks=1),
}


def preset_for(name: str, resolution: tuple[int, int] | None = None) -> NeLFConfig:
    """A named config; "paper" picks the x8 or x12 MobileR2L network that divides ``resolution`` (W, H)."""
    if name == "paper":
        if resolution is None or all(v % 8 == 0 for v in resolution):
            return PRESETS["mobile_r2l_x8"]
        return PRESETS["mobile_r2l_x12"]
    if name not in PRESETS:
        raise NgfxInputError("config", "name", f"unknown NeLF preset {name!r} (known: paper, {', '.join(PRESETS)})")
    return PRESETS[name]


def low_resolution(cfg: NeLFConfig, width: int, height: int, source: str = "--resolution",
                   field: str | None = None) -> tuple[int, int]:
    """The body's (w, h) for an output of ``width x height``; the output must be a multiple of the upscale.
    An impossible size names ``source`` (the flag, or a file with its ``field``)."""
    f = cfg.upscale
    if width <= 0 or height <= 0 or width % f or height % f:
        raise NgfxInputError(source, field, f"{width}x{height} is impossible for this network: both sides "
                             f"must be positive multiples of its super-resolution factor {f}")
    return width // f, height // f


def encode_rays(origins: torch.Tensor, dirs: torch.Tensor, near: float, far: float, aabb: torch.Tensor,
                n_points: int, n_freqs: int) -> torch.Tensor:
    """Sample K points per ray and positionally encode them.

    Args:
        origins, dirs: [..., 3]; aabb: [2, 3] (points are mapped to [-1, 1] by it).
    Returns:
        [..., K*3*(1+2F)]: per point (in order) the 3 raw coordinates, then sin and cos of each at every frequency.
    """
    t = torch.linspace(near, far, n_points, device=origins.device, dtype=origins.dtype)
    pts = origins[..., None, :] + dirs[..., None, :] * t[:, None]  # [..., K, 3]
    lo, hi = aabb[0].to(pts), aabb[1].to(pts)
    pts = (pts - lo) / (hi - lo) * 2 - 1
    freqs = (2.0 ** torch.arange(n_freqs, device=pts.device, dtype=pts.dtype)) * math.pi
    angles = pts[..., None] * freqs  # [..., K, 3, F]
    feats = torch.cat([pts[..., None], torch.sin(angles), torch.cos(angles)], dim=-1)  # [..., K, 3, 1+2F]
    return feats.flatten(-3)


def config_dict(cfg) -> dict:
    """A student config dataclass as JSON-ready values: its tuples (stages, slab normals, a colour) as lists."""
    return {k: [list(s) if isinstance(s, tuple) else s for s in v] if isinstance(v, tuple) else v
            for k, v in asdict(cfg).items()}


def encode_frames(cfg: NeLFConfig, poses: torch.Tensor, k: Intrinsics, near: float, far: float,
                  aabb: torch.Tensor) -> torch.Tensor:
    """Network input for frames of intrinsics ``k`` (the output size) seen from ``poses`` [B, 4, 4].

    One ray per low-resolution pixel, through the centre of the block of output pixels it becomes.
    Returns [B, C_in, h, w] on ``poses``' device.
    """
    w, h = low_resolution(cfg, k.width, k.height)
    aabb = aabb.to(poses.device)
    # the whole batch in one pass (a loop over frames cost ~30 small kernels a frame, host-bound on a GPU):
    # the camera-space rays once, then each pose's rotation and eye, as pixel_rays applies them
    _, dirs_cam = pixel_rays(torch.eye(4, device=poses.device), k.scaled(w, h))
    dirs = torch.einsum("bij,nj->bni", poses[:, :3, :3].to(dirs_cam.dtype), dirs_cam)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = poses[:, None, :3, 3].to(dirs.dtype).expand_as(dirs)
    if cfg.arch == "lightslab":  # two-plane coordinates; the grids are in the net
        from ngfx.nelf.lightslab import slab_coordinates, slab_frames_on

        enc = slab_coordinates(origins, dirs, aabb, slab_frames_on(cfg, poses.device))
    elif cfg.arch == "oracle":  # the depth oracle takes the rays themselves (its scene box is in its config)
        enc = torch.cat([origins, dirs], dim=-1)
    else:
        enc = encode_rays(origins, dirs, near, far, aabb, cfg.n_points, cfg.n_freqs)
    return enc.transpose(1, 2).reshape(len(poses), -1, h, w)


class ResidualBlock(nn.Module):
    """x + act(norm(conv(act(norm(conv(x)))))) with 1x1 convs: a per-pixel two-layer MLP with a skip."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.norm1 = nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.norm2 = nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        return x + self.act(self.norm2(self.conv2(y)))


def compile_blocks(model: nn.Module) -> nn.Module:
    """Compile every :class:`ResidualBlock` of ``model`` in place with ``torch.compile`` -> ``model``: each block's
    norms, GELUs and skip fuse into a few kernels and one call (eager PyTorch launches ~10 small kernels a block,
    forward, and as many autograd nodes backward). Blocks of one shape share one compiled graph, so the paper
    network compiles ~3 graphs, not 57 layers' worth; parameters and checkpoints are unchanged."""
    for block in model.modules():
        if isinstance(block, ResidualBlock):
            block.compile()
    return model


def super_resolution_head(c: int, sr_stages: tuple, sr_blocks: int, norm: str) -> tuple[nn.Sequential, nn.Conv2d]:
    """MobileR2L's upsampling: per stage a transposed conv (+ norm) + GELU and ``sr_blocks`` residual blocks;
    then a 1x1 conv to RGB. Every student architecture ends in this head."""
    stages = []
    for out_c, kernel, stride in sr_stages:
        # padding (k - s) / 2 makes the output exactly stride x the input
        up = nn.ConvTranspose2d(c, out_c, kernel, stride=stride, padding=(kernel - stride) // 2)
        stages += [up, nn.BatchNorm2d(out_c) if norm == "batch" else nn.Identity(), nn.GELU()]
        stages += [ResidualBlock(out_c, norm) for _ in range(sr_blocks)]
        c = out_c
    return nn.Sequential(*stages), nn.Conv2d(c, 3, 1)


class NeLF(nn.Module):
    """Encoded rays [B, C_in, h, w] -> RGB [B, 3, h*upscale, w*upscale] in (0, 1)."""

    def __init__(self, cfg: NeLFConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, cfg.width, 1), nn.GELU())
        self.body = nn.Sequential(*[ResidualBlock(cfg.width, cfg.norm) for _ in range(cfg.n_blocks)])
        self.upsample, self.to_rgb = super_resolution_head(cfg.width, cfg.sr_stages, cfg.sr_blocks, cfg.norm)

    def forward(self, rays: torch.Tensor) -> torch.Tensor:
        x = self.stem(rays)
        x = x + self.body(x)  # global skip over the body
        return torch.sigmoid(self.to_rgb(self.upsample(x)))


def fold_batchnorm(model: NeLF) -> NeLF:
    """An inference copy of ``model`` with every BatchNorm folded into the conv before it (eval statistics)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for block in model.modules():
        if isinstance(block, ResidualBlock):
            for conv, norm in (("conv1", "norm1"), ("conv2", "norm2")):
                if isinstance(getattr(block, norm), nn.BatchNorm2d):
                    setattr(block, conv, fuse_conv_bn_eval(getattr(block, conv), getattr(block, norm)))
                    setattr(block, norm, nn.Identity())
    layers = list(model.upsample)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.ConvTranspose2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
            layers[i] = fuse_conv_bn_eval(layer, layers[i + 1], transpose=True)
            layers[i + 1] = nn.Identity()
    model.upsample = nn.Sequential(*layers)
    return model


# the grid students, each in a module of its own: (module, its config class, its network); each module has PRESETS
GRID_STUDENTS = {"lightslab": ("ngfx.nelf.lightslab", "LightSlabConfig", "LightSlab"),
                 "oracle": ("ngfx.nelf.oracle", "OracleConfig", "DepthOracle")}
ARCHS = ("mobile_r2l", *GRID_STUDENTS)


def _grid_student(arch: str) -> tuple[type, type, dict]:
    """(config class, network class, presets) of the grid student ``arch``, its module imported on first use."""
    module_name, config, network = GRID_STUDENTS[arch]
    module = importlib.import_module(module_name)
    return getattr(module, config), getattr(module, network), module.PRESETS


def student_config(d: dict, source: str = "config"):
    """A student's config dict (run.json's ``nelf_config``) -> NeLFConfig, or its grid student's config class
    (LightSlabConfig, OracleConfig) when its ``arch`` says so."""
    arch = d.get("arch") if isinstance(d, dict) else None
    if arch in GRID_STUDENTS:
        return _grid_student(arch)[0].from_dict(d, source)
    return NeLFConfig.from_dict(d, source)


def student_preset(arch: str, name: str, resolution: tuple[int, int] | None = None):
    """The ``name`` size (tiny, quick, paper) of the student architecture ``arch``."""
    if arch in GRID_STUDENTS:
        presets = _grid_student(arch)[2]
        if name not in presets:
            raise NgfxInputError("--arch", "arch", f"{arch} sizes: {', '.join(presets)}; got {name!r}")
        return presets[name]
    if arch != "mobile_r2l":
        raise NgfxInputError("--arch", "arch", f"must be one of {ARCHS}, got {arch!r}")
    return preset_for(name, resolution)


def with_overrides(cfg, overrides, source: str):
    """Student config ``cfg`` with the fields in ``overrides`` (a dict, e.g. ``--student-config``'s file) replaced,
    checked as a saved config is; an error names ``source`` and the field."""
    if not isinstance(overrides, dict):
        raise NgfxInputError(source, None, f"expected a JSON object of student config fields, got "
                             f"{type(overrides).__name__}")
    if overrides.get("arch", cfg.arch) != cfg.arch:
        raise NgfxInputError(source, "arch", f"the student is a {cfg.arch} (--arch picks it), got "
                             f"{overrides['arch']!r}")
    return student_config({**cfg.to_dict(), **overrides}, source)


def build_student(cfg) -> nn.Module:
    """The network of a student config: :class:`NeLF`, or its grid student's (:class:`ngfx.nelf.lightslab.LightSlab`,
    :class:`ngfx.nelf.oracle.DepthOracle`)."""
    if cfg.arch in GRID_STUDENTS:
        return _grid_student(cfg.arch)[1](cfg)
    return NeLF(cfg)


__all__ = ["NeLFConfig", "NeLF", "PRESETS", "ARCHS", "preset_for", "low_resolution", "encode_rays", "encode_frames",
           "fold_batchnorm", "student_config", "student_preset", "with_overrides", "build_student",
           "compile_blocks", "super_resolution_head"]
