"""Frames per second of the paper-size MobileR2L network, fp16, batch 1 frame (the issue's H200 target: >= 1,000).

    python benchmarks/bench_nelf.py --out DIR          # on the GPU: 800x800 (x8) and 1008x756 (x12)
    python benchmarks/bench_nelf.py --out DIR --smoke  # anywhere: a tiny network, a few iterations

Each case times the network forward on a fixed input (rays already encoded; encoding is timed apart) with
BatchNorm folded, channels-last fp16, in three modes: eager, eager replayed from a CUDA graph, and
torch.compile (default mode: fused elementwise epilogues) replayed from a CUDA graph. Times are CUDA-event medians
over ``--iters`` replays after warm-up. Writes ``DIR/bench_nelf.json`` (the input of
``ngfx mobile-report --measured-h200``) and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ngfx.io import write_json  # noqa: E402
from ngfx.nelf.layer_costs import layer_costs, totals  # noqa: E402
from ngfx.nelf.network import NeLF, encode_rays, fold_batchnorm, low_resolution, preset_for  # noqa: E402


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


def bench_case(preset: str, resolution: tuple[int, int], device: torch.device, iters: int, modes: list[str]) -> list[dict]:
    cfg = preset_for(preset, resolution)
    w, h = low_resolution(cfg, *resolution)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    model = fold_batchnorm(NeLF(cfg)).to(device, dtype).to(memory_format=torch.channels_last)
    rays = torch.randn(1, cfg.in_channels, h, w, device=device, dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    cost = totals(layer_costs(cfg, *resolution))
    origins = torch.zeros(h * w, 3, device=device)
    dirs = torch.nn.functional.normalize(torch.randn(h * w, 3, device=device), dim=1)
    aabb = torch.tensor([[-1.5] * 3, [1.5] * 3], device=device)
    encode_ms = statistics.median(_timer(lambda: encode_rays(origins, dirs, 2.0, 6.0, aabb, cfg.n_points,
                                                             cfg.n_freqs), iters, cuda))
    rows = []
    with torch.no_grad():
        for mode in modes:
            if mode == "eager":
                fn = lambda: model(rays)  # noqa: E731
            elif mode == "cuda_graph":
                fn = _graphed(model, rays)
            else:  # compiled kernels (fused epilogues), replayed from a CUDA graph
                compiled = torch.compile(model)
                fn = _graphed(compiled, rays)
            _timer(fn, 5, cuda)  # warm-up
            ms = statistics.median(_timer(fn, iters, cuda))
            rows.append({"config": preset, "network": cfg.to_dict(), "resolution": f"{resolution[0]}x{resolution[1]}",
                         "mode": mode, "dtype": str(dtype).replace("torch.", ""), "batch_frames": 1,
                         "ms_per_frame": ms, "fps": 1e3 / ms, "gflops_per_frame": cost["flops"] / 1e9,
                         "achieved_tflops": cost["flops"] / ms / 1e9, "params": cost["params"],
                         "storage_mb_fp16": cost["storage_mb_fp16"], "ray_encoding_ms": encode_ms})
            print(f"  {preset} {resolution[0]}x{resolution[1]} {mode}: {ms:.3f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny network and sizes (CPU)")
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        cases, iters, modes = [("tiny", (64, 64))], 5, ["eager"]
    else:
        cases, iters = [("mobile_r2l_x8", (800, 800)), ("mobile_r2l_x12", (1008, 756))], args.iters
        modes = ["eager", "cuda_graph", "compile+cuda_graph"] if device.type == "cuda" else ["eager"]
    torch.backends.cudnn.benchmark = True
    results = []
    for preset, resolution in cases:
        results += bench_case(preset, resolution, device, iters, modes)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    write_json(Path(args.out) / "bench_nelf.json", {"device": name, "torch": torch.__version__, "results": results})
    print(f"\nNeLF forward, batch 1 frame, on {name} (median of {iters}; rays pre-encoded)")
    print(f"{'network':16} {'resolution':>10} {'mode':>20} {'ms/frame':>9} {'frames/s':>9} {'GFLOP':>7} {'TFLOP/s':>8} "
          f"{'encode ms':>9}")
    for r in results:
        print(f"{r['config']:16} {r['resolution']:>10} {r['mode']:>20} {r['ms_per_frame']:9.3f} {r['fps']:9.1f} "
              f"{r['gflops_per_frame']:7.1f} {r['achieved_tflops']:8.1f} {r['ray_encoding_ms']:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
