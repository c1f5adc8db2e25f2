"""Where a depth-oracle student loses quality: its frames with the oracle's bins against its frames with the
teacher's bins (the field alone), and how often the oracle's bins hold the teacher's main bin.

    python benchmarks/oracle_diagnostic.py NELF_RUN TEACHER_RUN [N_VIEWS]
"""

import sys

import torch

from ngfx.cameras import Intrinsics, pixel_rays
from ngfx.nelf.distill import _eval_references
from ngfx.nelf.oracle import teacher_bin_weights
from ngfx.nelf.runs import load_nelf_run
from ngfx.render.metrics import psnr
from ngfx.render.runs import load_run


def main(run_dir: str, teacher_dir: str, n_views: int = 16) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, run = load_nelf_run(run_dir, device)
    teacher = load_run(teacher_dir, device)
    teacher.eval()
    cfg, k = model.cfg, Intrinsics(**run["intrinsics"])
    poses, truth, teacher_frames = _eval_references(teacher, k, n_views)
    oracle_frames, forced_frames, recall, hits = [], [], 0.0, 0.0
    for pose in poses:
        origins, dirs = pixel_rays(pose.to(device), k)
        with torch.no_grad():
            weights = teacher_bin_weights(teacher, origins, dirs, model.aabb, cfg.n_bins)
            oracle_bins = model.bin_logits(origins, dirs)[:, :cfg.n_bins].topk(cfg.top_bins, dim=1).indices
            teacher_bins = weights[:, :cfg.n_bins].topk(cfg.top_bins, dim=1).indices
            oracle_frames.append(model.shade(origins, dirs, oracle_bins).cpu())
            forced_frames.append(model.shade(origins, dirs, teacher_bins).cpu())
            solid = weights[:, :cfg.n_bins].sum(1) > 0.5
            main_bin = weights[:, :cfg.n_bins].argmax(1)
            found = (oracle_bins == main_bin[:, None]).any(1)
            recall += float(found[solid].float().sum())
            hits += float(solid.float().sum())
    shape = (len(poses), k.height, k.width, 3)
    oracle = torch.stack(oracle_frames).reshape(shape)
    forced = torch.stack(forced_frames).reshape(shape)
    print(f"oracle diagnostic on {len(poses)} val views at {k.width}x{k.height}:")
    print(f"  student (oracle bins):  {psnr(oracle, truth):.2f} dB vs truth, {psnr(oracle, teacher_frames):.2f} dB vs teacher")
    print(f"  field (teacher's bins): {psnr(forced, truth):.2f} dB vs truth, {psnr(forced, teacher_frames):.2f} dB vs teacher")
    print(f"  teacher:                {psnr(teacher_frames, truth):.2f} dB vs truth")
    print(f"  oracle bins hold the teacher's main bin on {100 * recall / max(hits, 1):.2f} % of the rays that hit")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
