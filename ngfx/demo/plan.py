"""The demo's stages and the sizes they run at. Each stage is one call into the library."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from ngfx.demo.stages import Stage
from ngfx.render.metrics import quality_summary

from ngfx.render.runs import APP_MODULES, PROCEDURAL_SCENES

APPS = ("gia", "nsdf", "nvr", "nerf")
REAL_SCENES = {"gia": "images/albert.jpg", "nsdf": "meshes/armadillo.obj", "nerf": "lego"}  # under --data


@dataclass(frozen=True)
class DemoSize:
    app_size: str  # the apps' size preset: tiny | quick | full
    render_resolution: tuple[int, int]
    trace_resolution: tuple[int, int]
    nelf_size: str
    shows: str  # what a user sees at this size (the report and the README say it)
    train_steps: int | None = None  # None: each app's default for app_size
    train_seconds: dict[str, float] | None = None  # caps on the apps' training loops, by app (else its default)
    nelf_seconds: float | None = None  # a cap on the NeLF distillation's training
    nelf_pseudo_views: int | None = None  # teacher-rendered views to distil from (None: the NeLF size's default)
    sweep_scales: tuple[int, ...] = (8, 16, 32, 64)
    sweep_resolutions: tuple[tuple[int, int], ...] = ((1920, 1080), (3840, 2160), (7680, 4320))


# measured on the H200 (BENCHMARKS.md, issue 13): with NVR at 30 s and a 45 s NeLF from 2,000 pseudo views the
# demo neared 8 minutes; with these caps `demo --full --data` took 4 min 39 s on a cold machine, NeRF 35.16 dB
FULL_TRAIN_SECONDS = {"gia": 15.0, "nsdf": 15.0, "nvr": 20.0, "nerf": 60.0}
FULL_NELF_SECONDS = 30.0
FULL_NELF_PSEUDO_VIEWS = 300
APP_NAMES = {"gia": "GIA", "nsdf": "NSDF", "nvr": "NVR", "nerf": "NeRF"}

DEMO_SIZES = {
    "smoke": DemoSize("tiny", (64, 64), (32, 32), "tiny", train_steps=60, sweep_scales=(8, 64),
                      sweep_resolutions=((1920, 1080),),
                      shows="that every stage runs end to end (CI): tiny models, 60 training steps each; the "
                            "images are blurry and the numbers say nothing about quality"),
    # on 2 CPU cores the renders, traces and evaluations take about as long as the training: sizes chosen so the
    # whole demo stays near 5 minutes there
    "quick": DemoSize("quick", (192, 192), (96, 96), "quick", train_seconds=dict.fromkeys(APPS, 35.0),
                      nelf_seconds=25.0,
                      shows="recognisable results on a CPU: small models trained for up to 35 s each, renders at "
                            "192x192; quality is far below the GPU sizes (see BENCHMARKS.md)"),
    # NeRF keeps the minute its quality is measured at (BENCHMARKS.md, issue 13); the others are capped so
    # that the whole demo stays within 8 minutes on an H200
    "full": DemoSize("full", (1920, 1080), (1920, 1080), "full", train_seconds=FULL_TRAIN_SECONDS,
                     nelf_seconds=FULL_NELF_SECONDS, nelf_pseudo_views=FULL_NELF_PSEUDO_VIEWS,
                     shows="the real sizes on a GPU: full models trained for "
                           + ", ".join(f"{APP_NAMES[app]} {s:g} s" for app, s in FULL_TRAIN_SECONDS.items())
                           + f" and a NeLF distilled for {FULL_NELF_SECONDS:g} s from {FULL_NELF_PSEUDO_VIEWS} "
                             "teacher views, 1080p renders, traces of 1080p "
                             "frames (and the real scenes under --data)"),
}


def scene_for(app: str, size: str, data_dir: str | None) -> str:
    if size == "full" and data_dir and app in REAL_SCENES and (Path(data_dir) / REAL_SCENES[app]).exists():
        return str(Path(data_dir) / REAL_SCENES[app])
    return PROCEDURAL_SCENES[app]


def build_stages(out: Path, size: str, device: str, data_dir: str | None) -> list[Stage]:
    """The demo's stages; each imports what it runs when it runs, and lists it in ``requires`` so
    :meth:`StageRunner.check` can import it all up front."""
    sizes = DEMO_SIZES[size]
    stages: list[Stage] = []
    run_dir = {app: out / "runs" / app for app in (*APPS, "nelf")}
    for app in APPS:
        scene = scene_for(app, size, data_dir)
        stages.append(Stage(
            f"train-{app}", lambda app=app, scene=scene: _train(app, scene, run_dir[app], sizes, device),
            describe=quality_summary, requires=(RUNS, APP_MODULES[app]) + (MESH_MODULES if app == "nsdf" else ())))
        stages.append(Stage(
            f"render-{app}",
            lambda app=app: {"frames": [str(p) for p in _module(RUNS).render_run(
                run_dir[app], out / "renders" / app, sizes.render_resolution,
                # the fused rest kernels are GPU kernels; on a CPU the PyTorch ones are the fast path
                fused=device == "cuda", device=device)]},
            needs=(f"train-{app}",), requires=(RUNS, "imageio")))
        stages.append(Stage(
            f"trace-{app}",
            lambda app=app: _trace_app(_module(CAPTURE).trace_run, run_dir[app], out / "traces", app,
                                       sizes.trace_resolution, device),
            needs=(f"train-{app}",), requires=(CAPTURE,)))
    stages.append(Stage(
        "distill-nelf",
        lambda: _module(DISTILL).distill(run_dir["nerf"], run_dir["nelf"], size=sizes.nelf_size,
                                         device=device, seconds=sizes.nelf_seconds,
                                         n_pseudo=sizes.nelf_pseudo_views)["metrics"],
        needs=("train-nerf",), describe=quality_summary, requires=(DISTILL,)))
    stages.append(Stage(
        "render-nelf",
        lambda: {"frames": [str(p) for p in _module(NELF_RUNS).render_nelf_run(
            run_dir["nelf"], out / "renders" / "nelf", n_frames=1, device=device)]},
        needs=("distill-nelf",), requires=(NELF_RUNS,)))
    stages.append(Stage(
        "ngpc-sweep",
        # traces from this machine (a CPU, or a GPU other than the RTX 3090) are projected onto the RTX 3090 by
        # the per-kernel roofline before the replay, never replayed as if they were its frames
        lambda: {"report": str(_module(SIM_API).sim_sweep(
            out / "sim", out / "traces", scales=sizes.sweep_scales, resolutions=sizes.sweep_resolutions,
            project=True))},
        needs=tuple(f"trace-{app}" for app in APPS), requires=(SIM_API,)))  # it imports simpy and matplotlib
    stages.append(Stage(
        "mobile-report",
        lambda: {"report": str(_module(MOBILE).write_mobile_report(
            run_dir["nelf"], "iphone13", _nelf_resolution(run_dir["nelf"]), out / "mobile" / "demo_nelf"))},
        needs=("distill-nelf",), requires=(MOBILE, "matplotlib", "markdown")))
    stages.append(Stage(
        "mobile-report-paper",
        lambda: {"report": str(_module(MOBILE).write_mobile_report("paper", "iphone13", (1008, 756),
                                                                   out / "mobile" / "paper"))},
        requires=(MOBILE, "matplotlib", "markdown")))
    return stages


# the modules the stages run, each named once: the stage imports it and ``requires`` lists it for the check
RUNS, CAPTURE, MOBILE = "ngfx.render.runs", "ngfx.ngpc_sim.capture", "ngfx.nelf.mobile_report"
DISTILL, NELF_RUNS, SIM_API = "ngfx.nelf.distill", "ngfx.nelf.runs", "ngfx.ngpc_sim.api"
MESH_MODULES = ("trimesh", "rtree")  # NSDF's mesh distances on a CPU


def _module(name: str):
    return importlib.import_module(name)


def _train(app: str, scene: str, run_dir: Path, sizes: DemoSize, device: str) -> dict:
    """Train (or resume) one app at the demo's size; with a time cap, the app's default steps still bound it."""
    steps, seconds = sizes.train_steps, (sizes.train_seconds or {}).get(app)
    if steps is None and seconds is not None:
        steps = _module(APP_MODULES[app]).DEFAULT_STEPS[sizes.app_size]
    return _module(RUNS).train(app, scene, "hashgrid", run_dir, size=sizes.app_size, steps=steps,
                               seconds=seconds, device=device, resume=True)


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
