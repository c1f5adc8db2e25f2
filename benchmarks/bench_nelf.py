"""Frames per second of the paper-size MobileR2L network, fp16, batch 1 frame: the fused forward against
torch.compile + CUDA graph in the same run (the issue's H200 target: >= 2,000 frames/s at 800x800 and 1008x756).

    python benchmarks/bench_nelf.py --out DIR          # on the GPU: 800x800 (x8) and 1008x756 (x12)
    python benchmarks/bench_nelf.py --out DIR --smoke  # anywhere: a tiny network, eager, a few iterations

Each case times the network forward on a fixed input (rays already encoded; encoding is timed apart) with
BatchNorm folded, channels-last fp16, in these modes: eager; eager replayed from a CUDA graph; torch.compile
(default mode: fused elementwise epilogues) replayed from a CUDA graph; and ``fused`` (ngfx.nelf.triton_nelf:
the body kernel and one kernel per super-resolution stage) replayed from a CUDA graph. Times are CUDA-event
medians over ``--iters`` replays after warm-up.

On the GPU everything runs in subprocesses started together, so their compilations overlap: one per case for
the PyTorch modes, and one per candidate launch shape of the fused forward (a shape that faults cannot take the
run down), which checks its output against the fp32 network and times both cases. The timings take turns under
a file lock. Each case's fastest correct launch gives its ``fused`` row. Writes
``DIR/bench_nelf.json`` (the input of ``ngfx mobile-report --measured-h200``) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ngfx.io import write_json  # noqa: E402
from ngfx.nelf.layer_costs import layer_costs, totals  # noqa: E402
from ngfx.nelf.network import NeLF, encode_rays, fold_batchnorm, low_resolution, preset_for  # noqa: E402

CASES = [("mobile_r2l_x8", (800, 800)), ("mobile_r2l_x12", (1008, 756))]
# launch shapes (keys of ngfx.nelf.triton_nelf.DEFAULT_LAUNCH). A 64-row body tile keeps its layer input, fp32 residual
# and half-layer accumulator in registers with 8 warps (219 registers with the tanh GELU, one tile per SM); two
# stages of 64 KB half-layer weights fit in shared memory. At 800x800 the x8 body's 10,000 rows are 157 such tiles
# on 132 SMs: the default gives each program a 16-row tile more through the same weight loads ("extra_rows": 16,
# 125 programs of 64 + 16, one round; mma.sync for the extra tile, 255 registers and no spills for sm_90; three
# pipeline stages keep two weight buffers, two stages only one); the tail launch of 16-row tiles ("tail_block_m")
# is what remains for sizes where 64 + 16 still takes more than a round. 1008x756 (83 tiles) is one round and
# takes neither. GELU "tanh" (packed fp16, hardware tanh) cuts the body's loop from ~1,200 to ~700 instructions
# per half-layer in the sm_90 SASS. Dropped after the runs in BENCHMARKS.md: 64-row tiles with 4 warps or an fp16
# residual, 128-row tiles (8 warps spill; 16 warps gave a 10x larger body error), one pipeline stage, 32-row
# tiles two per SM, a 32-row tail, the exact GELU with a tail; super-resolution tiles of 32 or 128 pixels, one
# program per tile looping over the output phases.
CANDIDATE_LAUNCHES = [  # each as what it changes in DEFAULT_LAUNCH
    {},
    {"gelu": "erf", "tail_block_m": 0, "extra_rows": 0, "num_stages": 2},  # the default before 2026-11-30: the baseline
    {"extra_rows": 0, "num_stages": 2},  # 64-row tiles and a 16-row tail (the default of 1110f38)
    {"num_stages": 2},  # the extra tile with one weight buffer
    {"extra_rows": 0, "num_stages": 2, "tail_num_warps": 8},
]


def _timer(fn, iters: int, cuda: bool) -> list[float]:
    """Per-call milliseconds of ``fn`` (CUDA events on GPU, perf_counter on CPU)."""
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _median_ms(fn, iters: int, cuda: bool) -> float:
    _timer(fn, 5, cuda)  # warm-up
    return statistics.median(_timer(fn, iters, cuda))


def _graphed(fn, static_input: torch.Tensor):
    """Capture ``fn(static_input)`` in a CUDA graph -> a function replaying it."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(static_input)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(static_input)
    return graph.replay


def _network(preset: str, resolution: tuple[int, int], device: torch.device, seed: int = 0):
    """A paper-size network with non-trivial BatchNorm statistics (folded) and encoded rays of one frame."""
    torch.manual_seed(seed)
    cfg = preset_for(preset, resolution)
    model = NeLF(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    model = fold_batchnorm(model).to(device)
    w, h = low_resolution(cfg, *resolution)
    origins = torch.randn(h * w, 3, device=device) * 0.1 + torch.tensor([0.0, -4.0, 0.5], device=device)
    dirs = torch.nn.functional.normalize(torch.randn(h * w, 3, device=device) * 0.2 + torch.tensor(
        [0.0, 1.0, 0.0], device=device), dim=1)
    aabb = torch.tensor([[-1.5] * 3, [1.5] * 3], device=device)
    rays = encode_rays(origins, dirs, 2.0, 6.0, aabb, cfg.n_points, cfg.n_freqs).t().reshape(1, -1, h, w)
    return cfg, model, rays, (origins, dirs, aabb)


def _errors(fused, model: NeLF, rays: torch.Tensor) -> dict:
    """|fp16 - fp32 network| of the RGB, for the fused forward and for PyTorch in fp16; the body's relative error.
    ``model`` and ``rays`` are :func:`_network`'s (fp32, folded)."""
    from ngfx.nelf.triton_nelf import pixel_rows

    with torch.no_grad():
        ref = model(rays)
        half = copy.deepcopy(model).half().to(memory_format=torch.channels_last)
        torch_half = half(rays.half().contiguous(memory_format=torch.channels_last))
        out = fused(rays).float()
        stem = model.stem(rays)
        body_ref = pixel_rows(stem + model.body(stem))
        body = fused.body(pixel_rows(rays.half().contiguous(memory_format=torch.channels_last))).float()
    return {"rgb_max_abs_error_fused": float((out - ref).abs().max()),
            "rgb_mean_abs_error_fused": float((out - ref).abs().mean()),
            "rgb_max_abs_error_torch_fp16": float((torch_half.float() - ref).abs().max()),
            "body_max_rel_error_fused": float((body - body_ref).abs().max() / body_ref.abs().max()),
            "rgb_finite": bool(torch.isfinite(out).all())}


def _kernel_table(fn, frames: int = 5) -> list:
    """[kernel name, microseconds] of each GPU kernel of one ``fn`` call, in launch order, averaged over
    ``frames`` calls (torch.profiler)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(frames):
            fn()
        torch.cuda.synchronize()
    kernels = [(e.name, e.time_range.elapsed_us()) for e in prof.events() if e.device_type == DeviceType.CUDA]
    per_frame = len(kernels) // frames
    return [[kernels[i][0][:60], round(sum(kernels[i + f * per_frame][1] for f in range(frames)) / frames, 1)]
            for i in range(per_frame)]


@contextlib.contextmanager
def _gpu_turn(lock: str):
    """Exclusive use of the GPU for timing, among this run's subprocesses."""
    import fcntl

    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def probe(launch: dict, iters: int, lock: str) -> dict:
    """One fused launch shape on every case: errors, kernel split, frame and body times (run in a subprocess;
    only the timing loops take a turn on the GPU)."""
    from ngfx.nelf.triton_nelf import FusedNeLF, pixel_rows

    device = torch.device("cuda")
    result = {"launch": launch, "cases": {}}
    timed = []
    with torch.no_grad():
        for preset, resolution in CASES:
            _, model, rays, _ = _network(preset, resolution, device)
            fused = FusedNeLF(model, torch.float16, launch)
            static = rays.half().contiguous(memory_format=torch.channels_last)
            case = _errors(fused, model, rays)  # compiles the kernels
            kernel = fused.body.compiled  # the main body launch's (with an extra tile where it took one)
            case.update(body_regs=getattr(kernel, "n_regs", None), body_spills=getattr(kernel, "n_spills", None),
                        body_shared_bytes=getattr(getattr(kernel, "metadata", None), "shared", None),
                        body_wgmma="wgmma" in (kernel.asm.get("ptx", "") if kernel is not None else ""))
            try:
                case["kernels_us_per_frame"] = _kernel_table(lambda: fused(static))
            except Exception as e:  # the table is a diagnostic; a profiler problem must not lose the probe
                case["kernels_us_per_frame"] = repr(e)
            result["cases"][f"{resolution[0]}x{resolution[1]}"] = case
            timed.append((case, _graphed(fused, static), _graphed(lambda r: fused.body(pixel_rows(r)), static)))
        with _gpu_turn(lock):
            for case, frame, body in timed:
                case["ms_per_frame"] = _median_ms(frame, iters, True)
                case["body_ms"] = _median_ms(body, iters, True)
    return result


def _row(preset: str, resolution: tuple[int, int], mode: str, ms: float, dtype: str, encode_ms: float | None,
         **extra) -> dict:
    cfg = preset_for(preset, resolution)
    cost = totals(layer_costs(cfg, *resolution))
    return {"config": preset, "network": cfg.to_dict(), "resolution": f"{resolution[0]}x{resolution[1]}",
            "mode": mode, "dtype": dtype, "batch_frames": 1, "ms_per_frame": ms, "fps": 1e3 / ms,
            "gflops_per_frame": cost["flops"] / 1e9, "achieved_tflops": cost["flops"] / ms / 1e9,
            "params": cost["params"], "storage_mb_fp16": cost["storage_mb_fp16"], "ray_encoding_ms": encode_ms,
            **extra}


def baseline(preset: str, resolution: tuple[int, int], device: torch.device, iters: int, modes: list[str],
             lock: str | None) -> list[dict]:
    """The PyTorch modes of one case (run in a subprocess on the GPU; compilation outside the GPU turn)."""
    cfg, model, rays_f32, (origins, dirs, aabb) = _network(preset, resolution, device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    net = model.to(dtype).to(memory_format=torch.channels_last)  # folded by _network, on the device
    rays = rays_f32.to(dtype).contiguous(memory_format=torch.channels_last)
    fns = {}
    with torch.no_grad():
        for mode in modes:
            if mode == "eager":
                fns[mode] = lambda: net(rays)  # noqa: E731
            elif mode == "cuda_graph":
                fns[mode] = _graphed(net, rays)
            else:  # compiled kernels (fused epilogues), replayed from a CUDA graph
                fns[mode] = _graphed(torch.compile(net), rays)
        with _gpu_turn(lock) if lock else contextlib.nullcontext():
            encode_ms = _median_ms(lambda: encode_rays(origins, dirs, 2.0, 6.0, aabb, cfg.n_points, cfg.n_freqs),
                                   iters, cuda)
            rows = [_row(preset, resolution, mode, _median_ms(fn, iters, cuda), str(dtype).replace("torch.", ""),
                         encode_ms) for mode, fn in fns.items()]
    return rows


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _collect(proc: subprocess.Popen, deadline: float, what: dict) -> dict:
    """The last RESULT line of a subprocess, or what it was with the reason it gave none."""
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {**what, "failed": "timeout"}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if lines:
        return json.loads(lines[-1][7:])
    return {**what, "failed": (stderr.strip().splitlines() or ["no output"])[-1][-300:]}


def _correct(probe_result: dict) -> bool:
    return "failed" not in probe_result and all(
        c["rgb_finite"] and c["body_max_rel_error_fused"] < 2e-2 and c["rgb_max_abs_error_fused"] < 2e-2
        for c in probe_result["cases"].values())


def run_gpu(iters: int, launches: list[dict], timeout_s: float) -> tuple[list[dict], list[dict]]:
    """Every subprocess at once -> (result rows, probe log)."""
    from ngfx.nelf.triton_nelf import full_launch

    launches = [full_launch(launch) for launch in launches]
    lock = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_nelf_{os.getpid()}.lock")
    common = ["--out", "-", "--iters", str(iters), "--lock", lock]
    began = time.perf_counter()
    base = [(case, _start(["--baseline", json.dumps(case), *common])) for case in CASES]
    probes = [(launch, _start(["--probe", json.dumps(launch), *common])) for launch in launches]
    deadline = began + timeout_s
    rows, log = [], []
    for case, proc in base:
        got = _collect(proc, deadline, {"case": case})
        if "failed" in got:
            print("  baseline", json.dumps(got), flush=True)
        else:
            rows += got["rows"]
    for launch, proc in probes:
        got = _collect(proc, deadline, {"launch": launch})
        got["correct"] = _correct(got)
        log.append(got)
        brief = {k: v for k, v in got.items() if k != "cases"}
        brief["cases"] = {n: {k: v for k, v in c.items() if k != "kernels_us_per_frame"}
                          for n, c in got.get("cases", {}).items()}
        print("  probe", json.dumps(brief), flush=True)
    good = [p for p in log if p["correct"]]
    for preset, resolution in CASES if good else []:  # each case's fastest correct launch
        name = f"{resolution[0]}x{resolution[1]}"
        best = min(good, key=lambda p: p["cases"][name]["ms_per_frame"])
        case = best["cases"][name]
        rows.append(_row(preset, resolution, "fused+cuda_graph", case["ms_per_frame"], "float16", None,
                         launch=best["launch"], **{k: v for k, v in case.items() if k != "ms_per_frame"}))
    print(f"  (all subprocesses: {time.perf_counter() - began:.0f} s)", flush=True)
    return rows, log


def _launch_arg(text: str) -> dict:
    """--launch: a JSON object of launch keys, checked as FusedNeLF checks them (a bad one: exit 2, not a probe
    that fails later)."""
    from ngfx.nelf.triton_nelf import full_launch

    try:
        launch = json.loads(text)
        if not isinstance(launch, dict):
            raise ValueError("expected a JSON object")
        full_launch(launch)
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise argparse.ArgumentTypeError(str(e)) from None
    return launch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny network and sizes (CPU), eager only")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--launch", type=_launch_arg, default=None, help="fused launch as a JSON object (keys of "
                        "ngfx.nelf.triton_nelf.DEFAULT_LAUNCH; default: probe the candidates)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds for all subprocesses")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: one launch shape
    parser.add_argument("--baseline", default=None, help=argparse.SUPPRESS)  # internal: one case's PyTorch modes
    parser.add_argument("--lock", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.iters = 5
    torch.backends.cudnn.benchmark = not args.probe  # the probes' eager forwards only check errors
    if args.probe:
        print("RESULT " + json.dumps(probe(json.loads(args.probe), args.iters, args.lock)), flush=True)
        return 0
    if args.baseline:
        preset, resolution = json.loads(args.baseline)
        rows = baseline(preset, tuple(resolution), torch.device("cuda"), args.iters,
                        ["eager", "cuda_graph", "compile+cuda_graph"], args.lock)
        print("RESULT " + json.dumps({"rows": rows}), flush=True)
        return 0
    cuda = torch.cuda.is_available() and not args.smoke
    probes: list[dict] = []
    if cuda:
        launches = [args.launch] if args.launch else CANDIDATE_LAUNCHES
        results, probes = run_gpu(args.iters, launches, args.timeout)
        name = torch.cuda.get_device_name()
    else:
        results, name = baseline("tiny", (64, 64), torch.device("cpu"), args.iters, ["eager"], None), "cpu"
    write_json(Path(args.out) / "bench_nelf.json", {"device": name, "torch": torch.__version__, "results": results,
                                                    "fused_launch_probes": probes})
    print(f"\nNeLF forward, batch 1 frame, on {name} (median of {args.iters}; rays pre-encoded)")
    print(f"{'network':16} {'resolution':>10} {'mode':>20} {'ms/frame':>9} {'frames/s':>9} {'GFLOP':>7} {'TFLOP/s':>8}")
    for r in results:
        print(f"{r['config']:16} {r['resolution']:>10} {r['mode']:>20} {r['ms_per_frame']:9.3f} {r['fps']:9.1f} "
              f"{r['gflops_per_frame']:7.1f} {r['achieved_tflops']:8.1f}")
    if probes:
        print("\nfused launches probed, per case: ms per frame / body alone, max RGB error / body relative error, "
              "regs/spills/shared bytes of the main body kernel")
        for p in probes:
            cases = " ".join(f"{n} {c['ms_per_frame']:.3f}/{c['body_ms']:.3f} err {c['rgb_max_abs_error_fused']:.1e}"
                             f"/{c['body_max_rel_error_fused']:.1e} {c['body_regs']}/{c['body_spills']}/"
                             f"{c['body_shared_bytes']}{' wgmma' if c['body_wgmma'] else ''}"
                             for n, c in p.get("cases", {}).items())
            print(json.dumps(p["launch"]), p.get("failed", "")[-150:], cases, "" if p["correct"] else "INCORRECT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
