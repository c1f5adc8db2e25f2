"""Image quality metrics: PSNR and SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5), in torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] of the same shape (capped at 100 dB for identical images)."""
    return psnr_from_mse(float(((image.float() - reference.float()) ** 2).mean()))


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of values in [0, 1] (e.g. summed over tiles of a huge image)."""
    return 100.0 if mse <= 1e-10 else -10.0 * math.log10(mse)


def _gaussian_window(size: int, sigma: float, device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(image: torch.Tensor, reference: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM of [H, W, C] images in [0, 1] (per channel, averaged), 'valid' windows only."""
    if image.shape != reference.shape or image.ndim != 3:
        raise ValueError(f"ssim needs two [H, W, C] images of one shape, got {list(image.shape)} and {list(reference.shape)}")
    c = image.shape[-1]
    x = image.float().permute(2, 0, 1)[:, None]  # [C, 1, H, W]
    y = reference.float().permute(2, 0, 1)[:, None]
    window = min(window, image.shape[0], image.shape[1])
    g = _gaussian_window(window, sigma, image.device)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian filter
        t = F.conv2d(t, g.view(1, 1, 1, -1))
        return F.conv2d(t, g.view(1, 1, -1, 1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(s.view(c, -1).mean())


# What the apps' metrics.json keys mean: key -> (label, unit, meaning). The train summary, the demo's lines
# and its report all read them from here.
METRIC_MEANINGS = {
    "psnr_db": ("PSNR", "dB", "peak signal-to-noise ratio against the reference images (higher is better; "
                              "~20 dB is a blurry likeness, 30+ dB close to the reference)"),
    "ssim": ("SSIM", "", "structural similarity against the reference images, 0..1 (1 = identical)"),
    "sign_agreement_uniform_pct": ("sign agreement, uniform", "%",
                                   "points uniform in the scene's cube whose inside/outside the SDF gets right"),
    "sign_agreement_near_surface_pct": ("sign agreement, near surface", "%",
                                        "the same for points within a few hundredths of the surface (the hard part)"),
    "sdf_mae_near_surface_pct_diag": ("SDF error near surface", "% of diagonal",
                                      "mean absolute error of the predicted distance, as a percentage of the scene's diagonal"),
    "student_psnr_db": ("student PSNR", "dB", "the NeLF student's PSNR on held-out views"),
    "teacher_psnr_db": ("teacher PSNR", "dB", "the NeRF teacher's PSNR on the same views"),
    "seconds": ("trained", "s", "training time (the loop only, not loading or evaluation)"),
}


def known_metrics(metrics: dict) -> list[tuple[str, str, str, float]]:
    """(key, label, unit, value) of each key in :data:`METRIC_MEANINGS` that ``metrics`` holds as a number."""
    rows = []
    for key, (label, unit, _) in METRIC_MEANINGS.items():
        value = metrics.get(key) if isinstance(metrics, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((key, label, unit, value))
    return rows


def quality_summary(metrics: dict) -> str:
    """'PSNR 27.02 dB, SSIM 0.912, ...' of the keys in :data:`METRIC_MEANINGS` that ``metrics`` holds."""
    return ", ".join(f"{label} {value:.3f}" if key == "ssim" else f"{label} {value:.2f} {unit}".rstrip()
                     for key, label, unit, value in known_metrics(metrics))
