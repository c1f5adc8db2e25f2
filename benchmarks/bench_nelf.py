"""Frames per second of the paper-size MobileR2L network, fp16, batch 1 frame: the fused forward against
torch.compile + CUDA graph in the same run (the issue's H200 target: >= 2,000 frames/s at 800x800 and 1008x756).

    python benchmarks/bench_nelf.py --out DIR          # on the GPU: 800x800 (x8) and 1008x756 (x12)
    python benchmarks/bench_nelf.py --out DIR --smoke  # anywhere: a tiny network, a few iterations

Each case times the network forward on a fixed input (rays already encoded; encoding is timed apart) with
BatchNorm folded, channels-last fp16, in these modes: eager; eager replayed from a CUDA graph; torch.compile
(default mode: fused elementwise epilogues) replayed from a CUDA graph; and ``fused`` (ngfx.nelf.triton_nelf: the
per-pixel residual MLPs in one Triton kernel each, transposed convs in cuDNN) replayed from a CUDA graph.
Times are CUDA-event medians over ``--iters`` replays after warm-up.

On the GPU the fused kernel's launch shape is chosen first: each candidate runs in its own subprocess (a
shape that faults cannot take the run down), is checked against the fp32 network and timed; the fastest
correct one is used for both cases. Writes ``DIR/bench_nelf.json`` (the input of ``ngfx mobile-report
--measured-h200``) and prints a table.
"""

from __future__ import annotations

import argparse
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

# launch shapes (ngfx.nelf.triton_nelf.DEFAULT_LAUNCH's keys). A 64 x 256 fp32 residual + accumulator need 8 warps to
# stay in registers; "residual": "scratch" frees them for 128-row tiles (half the weight traffic per pixel) or
# 4 warps. 32-row tiles select the mma.sync path, 64+ rows with 4+ warps wgmma.
_BEST_FIRST_RUN = {"block_m": 64, "block_k": 32, "num_warps": 8, "num_stages": 4}
CANDIDATE_LAUNCHES = [
    _BEST_FIRST_RUN,
    {"block_m": 128, "block_k": 32, "num_warps": 8, "num_stages": 4, "residual": "scratch"},
    {"block_m": 128, "block_k": 64, "num_warps": 8, "num_stages": 3, "residual": "scratch"},
    {"block_m": 64, "block_k": 32, "num_warps": 4, "num_stages": 4, "residual": "scratch"},
    {"block_m": 64, "block_k": 64, "num_warps": 4, "num_stages": 3, "residual": "scratch"},
    {"block_m": 64, "block_k": 64, "num_warps": 4, "num_stages": 4, "residual": "scratch"},
    {"block_m": 32, "block_k": 32, "num_warps": 4, "num_stages": 4, "residual": "scratch"},
    {**_BEST_FIRST_RUN, "compile_tail": True},
    {**_BEST_FIRST_RUN, "fuse_sr": False},
    {"block_m": 128, "block_k": 32, "num_warps": 8, "num_stages": 4, "residual": "scratch", "compile_tail": True},
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
    """Max |fp16 - fp32 network| of the RGB, for the fused forward and for PyTorch in fp16."""
    from ngfx.nelf.triton_nelf import _rows

    with torch.no_grad():
        ref = model.float()(rays.float())
        half = fold_batchnorm(model).half().to(memory_format=torch.channels_last)
        torch_half = half(rays.half().contiguous(memory_format=torch.channels_last))
        out = fused(rays)
        stem = model.stem(rays.float())
        body_ref = _rows(stem + model.body(stem))
        body = fused.body(_rows(rays.half().contiguous(memory_format=torch.channels_last))).float()
    return {"rgb_max_abs_error_fused": float((out.float() - ref).abs().max()),
            "rgb_max_abs_error_torch_fp16": float((torch_half.float() - ref).abs().max()),
            "body_max_rel_error_fused": float((body - body_ref).abs().max() / body_ref.abs().max()),
            "rgb_finite": bool(torch.isfinite(out).all())}


def _kernel_table(fn, frames: int = 5) -> list:
    """[kernel name, microseconds per frame] of ``fn``'s GPU kernels, largest first (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(frames):
            fn()
        torch.cuda.synchronize()
    rows = [(e.key, getattr(e, "device_time_total", 0) / frames) for e in prof.key_averages()]
    rows = [r for r in rows if r[1] > 0]
    return [[name[:70], round(us, 1)] for name, us in sorted(rows, key=lambda r: -r[1])[:10]]


def probe(launch: dict, iters: int, lock: str) -> dict:
    """One launch shape on the 800x800 case: errors and the median frame time (run in a subprocess)."""
    import fcntl

    from ngfx.nelf.triton_nelf import FusedNeLF

    device = torch.device("cuda")
    _, model, rays, _ = _network("mobile_r2l_x8", (800, 800), device)
    fused = FusedNeLF(model, torch.float16, launch)
    result = {"launch": launch, **_errors(fused, model, rays)}  # compiles the kernels
    kernel = fused.body.compiled
    result.update(body_regs=getattr(kernel, "n_regs", None), body_spills=getattr(kernel, "n_spills", None),
                  body_wgmma="wgmma" in (kernel.asm.get("ptx", "") if kernel is not None else ""))
    static = rays.half().contiguous(memory_format=torch.channels_last)
    with open(lock, "a") as held, torch.no_grad():
        fcntl.flock(held, fcntl.LOCK_EX)  # one probe times at a time
        fn = _graphed(fused, static)
        _timer(fn, 5, True)
        result["ms_per_frame"] = statistics.median(_timer(fn, iters, True))
        body = _graphed(lambda r: fused.body(r.permute(0, 2, 3, 1).reshape(-1, r.shape[1])), static)
        _timer(body, 5, True)
        result["body_ms"] = statistics.median(_timer(body, iters, True))
        try:
            result["kernels_us_per_frame"] = _kernel_table(lambda: fused(static))
        except Exception as e:  # the table is a diagnostic; a profiler problem must not lose the probe
            result["kernels_us_per_frame"] = repr(e)
    return result


def choose_launch(iters: int, log: list, timeout_s: float = 150.0) -> dict | None:
    """Probe every candidate, each in its own subprocess, all at once (compiles overlap; the timings take turns
    under a file lock) -> the fastest correct launch (None if none passed)."""
    lock = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_nelf_{os.getpid()}.lock"

    def start(launch: dict) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--out", "-", "--probe", json.dumps(launch), "--iters",
                                 str(iters), "--lock", str(lock)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    procs = [(launch, start(launch)) for launch in CANDIDATE_LAUNCHES]
    best, began = None, time.perf_counter()
    for launch, proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, timeout_s - (time.perf_counter() - began)))
            lines = [ln for ln in stdout.splitlines() if ln.startswith("PROBE ")]
            result = json.loads(lines[-1][6:]) if lines else {"launch": launch, "failed": (
                stderr.strip().splitlines() or ["no output"])[-1][-300:]}
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            result = {"launch": launch, "failed": "timeout"}
        ok = ("failed" not in result and result["rgb_finite"] and result["body_max_rel_error_fused"] < 2e-2
              and result["rgb_max_abs_error_fused"] < 2e-2)
        result["correct"] = ok
        log.append(result)
        print("  probe", json.dumps({k: v for k, v in result.items() if k != "kernels_us_per_frame"}), flush=True)
        if ok and (best is None or result["ms_per_frame"] < best["ms_per_frame"]):
            best = result
    return None if best is None else best["launch"]


def bench_case(preset: str, resolution: tuple[int, int], device: torch.device, iters: int, modes: list[str],
               launch: dict | None) -> list[dict]:
    cfg, model, rays_f32, (origins, dirs, aabb) = _network(preset, resolution, device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    net = fold_batchnorm(model).to(device, dtype).to(memory_format=torch.channels_last)
    rays = rays_f32.to(dtype).contiguous(memory_format=torch.channels_last)
    cost = totals(layer_costs(cfg, *resolution))
    encode_ms = statistics.median(_timer(lambda: encode_rays(origins, dirs, 2.0, 6.0, aabb, cfg.n_points,
                                                             cfg.n_freqs), iters, cuda))
    rows = []
    with torch.no_grad():
        for mode in modes:
            extra = {}
            if mode == "eager":
                fn = lambda: net(rays)  # noqa: E731
            elif mode == "cuda_graph":
                fn = _graphed(net, rays)
            elif mode == "compile+cuda_graph":  # compiled kernels (fused epilogues), replayed from a CUDA graph
                fn = _graphed(torch.compile(net), rays)
            else:  # fused (+ CUDA graph on the GPU)
                from ngfx.nelf.triton_nelf import FusedNeLF

                fused = FusedNeLF(model, dtype, launch)
                extra = {"launch": fused.launch, **_errors(fused, model, rays_f32)} if cuda else {}
                fn = _graphed(fused, rays) if cuda else (lambda: fused(rays))
                if cuda:
                    extra["kernels_us_per_frame"] = _kernel_table(lambda: fused(rays))
            _timer(fn, 5, cuda)  # warm-up
            ms = statistics.median(_timer(fn, iters, cuda))
            rows.append({"config": preset, "network": cfg.to_dict(), "resolution": f"{resolution[0]}x{resolution[1]}",
                         "mode": mode, "dtype": str(dtype).replace("torch.", ""), "batch_frames": 1,
                         "ms_per_frame": ms, "fps": 1e3 / ms, "gflops_per_frame": cost["flops"] / 1e9,
                         "achieved_tflops": cost["flops"] / ms / 1e9, "params": cost["params"],
                         "storage_mb_fp16": cost["storage_mb_fp16"], "ray_encoding_ms": encode_ms, **extra})
            print(f"  {preset} {resolution[0]}x{resolution[1]} {mode}: {ms:.3f} ms", json.dumps(extra), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny network and sizes (CPU)")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: one launch shape
    parser.add_argument("--lock", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--launch", default=None, help="fused launch as a JSON object (keys of "
                                                       "ngfx.nelf.triton_nelf.DEFAULT_LAUNCH; default: probe the candidates)")
    args = parser.parse_args(argv)
    if args.probe:
        print("PROBE " + json.dumps(probe(json.loads(args.probe), args.iters, args.lock)), flush=True)
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    probes: list[dict] = []
    launch = None
    if args.smoke:
        cases, iters, modes = [("tiny", (64, 64))], 5, ["eager"]
    else:
        cases, iters = [("mobile_r2l_x8", (800, 800)), ("mobile_r2l_x12", (1008, 756))], args.iters
        modes = ["eager"]
        if device.type == "cuda":
            if args.launch:
                launch = json.loads(args.launch)
            else:
                launch = choose_launch(50, probes)
            modes = ["eager", "cuda_graph", "compile+cuda_graph"] + (["fused+cuda_graph"] if launch else [])
    torch.backends.cudnn.benchmark = True
    results = []
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    for preset, resolution in cases:
        results += bench_case(preset, resolution, device, iters, modes, launch)
        write_json(Path(args.out) / "bench_nelf.json", {"device": name, "torch": torch.__version__,
                                                        "results": results, "fused_launch_probes": probes})
    print(f"\nNeLF forward, batch 1 frame, on {name} (median of {iters}; rays pre-encoded)")
    print(f"{'network':16} {'resolution':>10} {'mode':>20} {'ms/frame':>9} {'frames/s':>9} {'GFLOP':>7} {'TFLOP/s':>8} "
          f"{'encode ms':>9}")
    for r in results:
        print(f"{r['config']:16} {r['resolution']:>10} {r['mode']:>20} {r['ms_per_frame']:9.3f} {r['fps']:9.1f} "
              f"{r['gflops_per_frame']:7.1f} {r['achieved_tflops']:8.1f} {r['ray_encoding_ms']:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
