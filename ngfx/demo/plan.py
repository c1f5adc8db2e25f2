"""The demo's stages and the sizes they run at. Each stage is one call into the library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ngfx.demo.stages import Stage

APPS = ("gia", "nsdf", "nvr", "nerf")
PROCEDURAL_SCENES = {"gia": "image", "nsdf": "csg", "nvr": "cloud", "nerf": "synthetic"}
REAL_SCENES = {"gia": "images/albert.jpg", "nsdf": "meshes/armadillo.obj", "nerf": "lego"}  # under --data


@dataclass(frozen=True)
class DemoSize:
    app_size: str  # the apps' size preset: tiny | quick | full
    render_resolution: tuple[int, int]
    trace_resolution: tuple[int, int]
    nelf_size: str
    train_steps: int | None = None  # None: each app's default for app_size
    sweep_scales: tuple[int, ...] = (8, 16, 32, 64)
    sweep_resolutions: tuple[tuple[int, int], ...] = ((1920, 1080), (3840, 2160), (7680, 4320))


DEMO_SIZES = {
    "smoke": DemoSize("tiny", (96, 96), (64, 64), "tiny", train_steps=60, sweep_scales=(8, 64),
                      sweep_resolutions=((1920, 1080),)),
    "quick": DemoSize("quick", (256, 256), (128, 128), "quick"),
    "full": DemoSize("full", (1920, 1080), (1920, 1080), "full"),
}


def scene_for(app: str, size: str, data_dir: str | None) -> str:
    if size == "full" and data_dir and app in REAL_SCENES and (Path(data_dir) / REAL_SCENES[app]).exists():
        return str(Path(data_dir) / REAL_SCENES[app])
    return PROCEDURAL_SCENES[app]


def build_stages(out: Path, size: str, device: str, data_dir: str | None) -> list[Stage]:
    from ngfx.nelf import distill as nelf_distill
    from ngfx.nelf.mobile_report import write_mobile_report
    from ngfx.nelf.runs import render_nelf_run
    from ngfx.ngpc_sim.api import sim_sweep
    from ngfx.ngpc_sim.capture import trace_run
    from ngfx.render import runs

    sizes = DEMO_SIZES[size]
    stages: list[Stage] = []
    run_dir = {app: out / "runs" / app for app in (*APPS, "nelf")}
    for app in APPS:
        scene = scene_for(app, size, data_dir)
        stages.append(Stage(
            f"train-{app}",
            lambda app=app, scene=scene: runs.train(app, scene, "hashgrid", run_dir[app], size=sizes.app_size,
                                                    steps=sizes.train_steps, device=device, resume=True),
            describe=_describe_metrics))
        stages.append(Stage(
            f"render-{app}",
            lambda app=app: {"frames": [str(p) for p in runs.render_run(
                run_dir[app], out / "renders" / app, sizes.render_resolution,
                # the fused rest kernels are GPU kernels; on a CPU the PyTorch ones are the fast path
                fused=device == "cuda", device=device)]},
            needs=(f"train-{app}",)))
        stages.append(Stage(
            f"trace-{app}",
            lambda app=app: _trace_app(trace_run, run_dir[app], out / "traces", app, sizes.trace_resolution, device),
            needs=(f"train-{app}",)))
    stages.append(Stage(
        "distill-nelf",
        lambda: nelf_distill.distill(run_dir["nerf"], run_dir["nelf"], size=sizes.nelf_size, device=device)["metrics"],
        needs=("train-nerf",), describe=_describe_metrics))
    stages.append(Stage(
        "render-nelf",
        lambda: {"frames": [str(p) for p in render_nelf_run(run_dir["nelf"], out / "renders" / "nelf",
                                                             n_frames=1, device=device)]},
        needs=("distill-nelf",)))
    stages.append(Stage(
        "ngpc-sweep",
        # traces from this machine (a CPU, or a GPU other than the RTX 3090) are projected onto the RTX 3090 by
        # the per-kernel roofline before the replay, never replayed as if they were its frames
        lambda: {"report": str(sim_sweep(out / "sim", out / "traces", scales=sizes.sweep_scales,
                                          resolutions=sizes.sweep_resolutions, project=True))},
        needs=tuple(f"trace-{app}" for app in APPS)))
    stages.append(Stage(
        "mobile-report",
        lambda: {"report": str(write_mobile_report(run_dir["nelf"], "iphone13", _nelf_resolution(run_dir["nelf"]),
                                                   out / "mobile" / "demo_nelf"))},
        needs=("distill-nelf",)))
    stages.append(Stage(
        "mobile-report-paper",
        lambda: {"report": str(write_mobile_report("paper", "iphone13", (1008, 756), out / "mobile" / "paper"))}))
    return stages


def _trace_app(trace_run, run_dir: Path, traces: Path, app: str, resolution: tuple[int, int], device: str) -> dict:
    """The unfused trace (the paper's baseline) and, on a GPU, the fused one, so the sweep measures this app's
    own fused-rest speedup (on a CPU both would run the same PyTorch kernels)."""
    trace = trace_run(str(run_dir), *resolution, str(traces / f"{app}.json"), device=device)
    if device == "cuda":
        trace_run(str(run_dir), *resolution, str(traces / f"{app}_fused.json"), device=device, fused=True)
    return {"kernels": len(trace.kernels), "device": trace.device, "timer": trace.timer}


def _nelf_resolution(run_dir: Path) -> tuple[int, int]:
    """The NeLF run's own output size (a valid multiple of its super-resolution factor)."""
    from ngfx.io import read_json

    k = read_json(run_dir / "run.json")["intrinsics"]
    return int(k["width"]), int(k["height"])


def _describe_metrics(info: dict) -> str:
    parts = []
    for key, label, unit in (("psnr_db", "PSNR", " dB"), ("student_psnr_db", "student PSNR", " dB"),
                             ("teacher_psnr_db", "teacher PSNR", " dB"),
                             ("sign_agreement_uniform_pct", "sign agreement", " %"), ("seconds", "trained", " s")):
        if isinstance(info, dict) and isinstance(info.get(key), (int, float)):
            parts.append(f"{label} {info[key]:.2f}{unit}")
    return ", ".join(parts)
