"""Train NeRF on Lego through ``runs.train`` (the code of ``ngfx train``) and profile its training step by stage.

1. Profile: the app is built as ``runs.train`` builds it and trained ``--warmup-seconds`` (kernels compiled, the
   occupancy grid past its warm-up); then ``--timed-steps`` steps are timed end to end (steps/s, host and device
   together) and ``--profile-steps`` steps are recorded with the named stages of the step (CUDA events on the
   device's timeline, so a stage's time includes the device waiting for the host to launch it).
2. Train: ``runs.train("nerf", scene, seconds=--seconds)`` into ``OUT/run``, the CLI's own training loop and its
   evaluation on the whole val split -> PSNR, SSIM, steps, steps/s, rays and samples per step.

Writes ``OUT/results.json`` and prints a table.

    python benchmarks/bench_train_nerf.py --out $OUT/train --scene .gpu_data/scenes/lego   # H200: about 2 minutes
    python benchmarks/bench_train_nerf.py --out /tmp/smoke --smoke                         # CPU check, a minute

``--legacy`` profiles code from before the step had named stages (issue 13's "before"): it wraps that code's
parts (march, field, composite, occupancy update, backward, optimiser) in the stage names the step uses now.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ngfx.io import write_json  # noqa: E402
from ngfx.render import neural_field, runs, stages  # noqa: E402

STEP_STAGE = "nerf.train.step"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def instrument_legacy(app, optimizer) -> None:
    """Wrap the parts of a step without named stages in the names the step uses now (``--legacy``)."""
    module = sys.modules[type(app).__module__]

    def wrap(owner, attr: str, name: str, category: str = "rest") -> None:
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            with stages.stage(name, category, app="nerf"):
                return inner(*args, **kwargs)

        setattr(owner, attr, timed)

    wrap(module.raymarch, "march_training", "nerf.train.march")
    wrap(module, "composite", "nerf.train.composite")
    wrap(app.field, "forward", "nerf.train.field", "mlp")
    wrap(app.occupancy, "update", "nerf.train.occupancy")
    wrap(optimizer, "step", "nerf.train.optimizer")
    wrap(torch.Tensor, "backward", "nerf.train.backward", "mlp")


def profile(scene: str, size: str, device: torch.device, args) -> dict:
    """Steps/s of the warmed-up loop and the per-stage milliseconds of ``--profile-steps`` recorded steps."""
    app = runs.app_module("nerf").build_app(scene, "hashgrid", size, device)
    optimizer = app.optimizer()
    step, _ = neural_field.training_loop(app, optimizer, None, args.warmup_seconds)
    synchronize(device)
    start = time.perf_counter()
    step_after, _ = neural_field.training_loop(app, optimizer, step + args.timed_steps, None, step=step)
    synchronize(device)
    steps_per_s = (step_after - step) / (time.perf_counter() - start)
    if args.legacy:
        instrument_legacy(app, optimizer)
    step = step_after
    with stages.record_stages(device) as records:
        for _ in range(args.profile_steps):
            with stages.stage(STEP_STAGE, "rest", app="nerf"):
                neural_field.optimisation_step(app, optimizer, step)
            step += 1
    per_step_ms = defaultdict(float)
    for record in records:
        per_step_ms[record.name] += record.duration_s * 1e3 / args.profile_steps
    named = sum(ms for name, ms in per_step_ms.items() if name != STEP_STAGE)
    per_step_ms["nerf.train.other (ray batch, loss, launches between stages)"] = per_step_ms[STEP_STAGE] - named
    batch = getattr(app, "batch_stats", dict)()
    return {"steps_per_s": steps_per_s, "stages_ms": dict(per_step_ms), "batch": batch,
            "kernel_check": kernel_check(app) if device.type == "cuda" and not args.legacy else None}


def kernel_check(app) -> dict:
    """The training step's Triton kernels against their PyTorch twins on one batch of rays (GPU): rays, march,
    compositing (forward and gradients)."""
    from ngfx.render.ops import raymarch, triton_raymarch, triton_volume, volume

    n, device = 4096, app.device_
    uniforms = torch.rand(n, 6, device=device)
    rays = raymarch.training_rays(app.train_poses, app.train_images, app.intrinsics, app.aabb, uniforms)
    fused_rays = triton_raymarch.training_rays(app.train_poses, app.train_images, app.intrinsics, app.aabb, uniforms)
    origins, dirs, t_near, t_far = rays[:4]
    t_near, jitter = t_near.clamp(min=app.near * 0.5), torch.rand(n, device=device)
    args = (origins, dirs, t_near, t_far, app.occupancy.mask, app.aabb, app.occupancy.resolution, app.dt,
            app.max_steps, jitter)
    reference = raymarch.march_training(*args)
    fused = triton_raymarch.march_training(*args)

    def lattice_points(samples):  # ray * 2^16 + lattice index of each sample
        j = ((samples.t - t_near[samples.ray_indices]) / app.dt - jitter[samples.ray_indices]).round().long()
        return samples.ray_indices * 2 ** 16 + j

    # a lattice point on a cell face may fall either side with the kernel's fused multiply-adds: count them
    in_both = torch.isin(lattice_points(reference), lattice_points(fused))
    sigmas = (app.density_world(origins[fused.ray_indices] + fused.t[:, None] * dirs[fused.ray_indices]).detach()
              .requires_grad_())
    rgbs = torch.rand(sigmas.numel(), 3, device=device, requires_grad=True)
    composited = []
    for composite_packed in (volume.composite_packed, triton_volume.composite_packed):
        colour, opacity = composite_packed(sigmas, rgbs, fused.deltas, fused.ray_ends, rays[5])
        composited.append((colour, *torch.autograd.grad(colour.sum() + opacity.sum(), (sigmas, rgbs))))
    return {"samples": reference.ray_indices.numel(), "fused_samples": fused.ray_indices.numel(),
            "samples_in_both": int(in_both.sum()),
            "ray_difference": max(float((a - b).abs().max()) for a, b in zip(rays, fused_rays)),
            "composite_difference": [float((a - b).detach().abs().max()) for a, b in zip(*composited)]}


def train(scene: str, size: str, device: torch.device, args) -> dict:
    """``runs.train`` for ``--seconds`` (the CLI's path), keeping the app it builds for its batch statistics."""
    built = []
    build = runs._build_app

    def keep(*a, **k):
        built.append(build(*a, **k))
        return built[-1]

    runs._build_app = keep
    try:
        metrics = runs.train("nerf", scene, "hashgrid", args.out / "run", size=size, seconds=args.seconds,
                             device=str(device), overwrite=True, progress=False)
    finally:
        runs._build_app = build
    batch = getattr(built[0], "batch_stats", dict)()
    return {**metrics, "steps_per_s": metrics["steps"] / metrics["seconds"], "batch": batch}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--scene", default=None, help="dataset path (default: ../shared/scenes/lego)")
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget of the runs.train part")
    parser.add_argument("--warmup-seconds", type=float, default=10.0)
    parser.add_argument("--timed-steps", type=int, default=300)
    parser.add_argument("--profile-steps", type=int, default=32, help="a multiple of 16 holds whole grid updates")
    parser.add_argument("--skip-train", action="store_true", help="profile only")
    parser.add_argument("--skip-profile", action="store_true", help="train only")
    parser.add_argument("--legacy", action="store_true", help="wrap a step without named stages (see above)")
    parser.add_argument("--no-early-stop", action="store_true",
                        help="train on every occupied sample (nerf.EARLY_STOP = None): no density pass")
    parser.add_argument("--smoke", action="store_true", help="tiny size on the synthetic scene, on the CPU")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    if args.no_early_stop:
        runs.app_module("nerf").EARLY_STOP = None
    if args.smoke:
        args.seconds, args.warmup_seconds, args.timed_steps, args.profile_steps = 5.0, 2.0, 10, 16
    scene = args.scene or str(ROOT.parent / "shared" / "scenes" / "lego")
    scene, size = ("synthetic", "tiny") if args.smoke else (scene, "full")
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "CPU", "scene": scene,
              "legacy": args.legacy, "early_stop": getattr(runs.app_module("nerf"), "EARLY_STOP", None)}
    if not args.skip_profile:
        result["profile"] = p = profile(scene, size, device, args)
        print(f"profile: {p['steps_per_s']:.1f} steps/s; per step (ms): "
              + ", ".join(f"{name} {ms:.3f}" for name, ms in sorted(p["stages_ms"].items(), key=lambda kv: -kv[1]))
              + f"; batch {p['batch']}; kernel check {p['kernel_check']}", flush=True)
    if not args.skip_train:
        result["train"] = t = train(scene, size, device, args)
        print(f"train: {t['seconds']:.1f} s, {t['steps']} steps, {t['steps_per_s']:.1f} steps/s, "
              f"PSNR {t['psnr_db']:.2f} dB, SSIM {t['ssim']:.4f} on {t['n_views']} val views; batch {t['batch']}",
              flush=True)
    write_json(args.out / "results.json", result)


if __name__ == "__main__":
    main()
