"""A trace projected onto another GPU by a per-kernel roofline: a model, not a measurement.

Each kernel's roofline time on a GPU is max(FLOPs / peak FLOP/s, bytes / memory bandwidth), from the
kernel's analytic FLOPs and bytes (:mod:`ngfx.ngpc_sim.costs`) and the GPU profile's peaks.

- From a GPU trace whose GPU has a profile: each kernel's measured time is multiplied by the ratio of its
  roofline times on the target and on the traced GPU, so the kernel keeps its measured efficiency
  (a launch-bound kernel, with no FLOPs or bytes, keeps its measured time).
- A paper-input trace (timer ``model``) is a modelled frame of the RTX 3090, projected as a trace of that GPU.
- From a CPU trace (or an unknown GPU): CPU times say nothing about a GPU, so each kernel takes its
  roofline time on the target plus one launch (:data:`LAUNCH_S`): a lower bound of what the GPU would need,
  which flatters the baseline and so understates the NGPC's speedup over it.
"""

from __future__ import annotations

import dataclasses

from ngfx.errors import NgfxInputError
from ngfx.ngpc_sim.config import GPUProfile
from ngfx.ngpc_sim.trace import CPU_TIMERS, Kernel, Trace

LAUNCH_S = 4e-6  # assumed: one kernel launch on a current NVIDIA GPU, a few microseconds


def roofline_s(k: Kernel, gpu: GPUProfile) -> float:
    """The kernel's time at the GPU's peak compute or bandwidth, whichever bounds it."""
    return max(k.flops / gpu.peak_flops, (k.bytes_read + k.bytes_written) / gpu.memory_bytes_per_s)


def source_profile(trace: Trace, profiles: dict[str, GPUProfile]) -> GPUProfile | None:
    """The profile of the GPU that recorded ``trace`` (matched by name), or None for a CPU or unknown device.

    A paper-input trace (timer ``model``) is a modelled frame of its GPU: it is projected from that GPU's
    profile like a measured one. Its rest kernel's bytes are placeholders, so the roofline lower bound would
    replace a third of NeRF's frame by microseconds (an Amdahl bound in the thousands): a model trace of a GPU
    without a profile, and a trace already projected, are refused instead."""
    if trace.timer in CPU_TIMERS:
        return None
    if trace.timer == "roofline":
        raise NgfxInputError("--project", None, f"the trace of {trace.device} was already projected (otherData.timer "
                                                "'roofline'); project the recorded trace instead")
    profile = next((p for p in profiles.values() if p.name.lower() in trace.device.lower()), None)
    if profile is None and trace.timer == "model":
        raise NgfxInputError("--project", None, f"a modelled trace (otherData.timer 'model') of {trace.device!r} can be "
                                                "projected only from its GPU's profile; known: "
                                                + ", ".join(p.name for p in profiles.values()))
    return profile


def project_trace(trace: Trace, target: GPUProfile, source: GPUProfile | None) -> Trace:
    """``trace`` as the roofline model expects it to run on ``target`` (see the module docstring)."""
    kernels = []
    for k in trace.kernels:
        on_target = roofline_s(k, target)
        if source is None:
            duration = on_target + LAUNCH_S
        else:
            on_source = roofline_s(k, source)
            duration = k.duration_s * (on_target / on_source) if on_source > 0 else k.duration_s
        kernels.append(dataclasses.replace(k, duration_s=duration, mlp_layers=list(k.mlp_layers)))
    how = f"{'modelled' if trace.timer == 'model' else 'measured'} efficiency kept" if source else "roofline lower bound"
    return dataclasses.replace(trace, kernels=kernels, timer="roofline",
                               device=f"{target.name} (projected from {trace.device}: {how})")
