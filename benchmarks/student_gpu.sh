#!/usr/bin/env bash
# Issue 15 item 1 on one GPU, within one wall-time budget: train the Lego NeRF teacher, distil a NeLF student from
# it for the time left, then (time permitting) a steps/s probe by batch size; a summary table is printed last.
#   CUDA_VISIBLE_DEVICES=1 bash benchmarks/student_gpu.sh SCENES WORK   # from the repo root, PYTHONPATH=the repo
# SCENES/lego is the scene; every output lands in WORK (teacher/, student_*/ with curve.json, metrics.json,
# run.json, comparison.png; throughput.json). Knobs (environment): PLAN (the student's settings, below; default
# mobile_b32, the distillation's own default; oracle, the depth-oracle student, the best run so far),
# BUDGET_S (whole script, default 500 s), TEACHER_SECONDS (60), ARCH, BATCH, LR, PSEUDO_VIEWS and STUDENT_CONFIG
# (JSON of student config fields) over the plan's, FINETUNE_STEPS (0: the whole budget on pseudo views; the earlier
# runs' 10 % of fine-tuning on the 100 real images gained nothing at 22 dB), PROBE=0 to skip the steps/s probe,
# PROBE_RESERVE_S (seconds kept for the probe: 50, or 0 with PROBE=0), COMPILE=1 (the student's blocks through torch.compile),
# PROBE_ONLY=1 (only the steps/s probe),
# SMOKE=1 for a CPU check of this script at tiny sizes on a procedural scene (a few minutes).
set -uo pipefail
scenes=${1:?usage: student_gpu.sh SCENES WORK}
work=${2:?usage: student_gpu.sh SCENES WORK}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
mkdir -p "$work"
budget=${BUDGET_S:-500}
# the light slab's paper preset with finer plane grids: 14 levels, 16 to 4096 cells across a plane (the preset's
# 615 leave ~120 across the object, coarser than Lego's pixels at 400x400) in 2^19-entry tables (~214 M grid params)
fine_slab='{"n_levels": 14, "per_level_scale": 1.532, "log2_hashmap_size": 19}'
# MobileR2L with a x4 head: at 400x400 its body sees 100x100 rays a frame, each ray an 8 x 8 block of pixels at
# 800x800's angular size -- the paper's x8 at 800x800; the x8 head at 400x400 asks a ray for twice the detail
mobile_x4='{"sr_stages": [[64, 4, 2], [16, 4, 2]]}'
case ${PLAN:-mobile_b32} in
  mobile_x4) plan=(mobile_r2l 16 1e-3 3000 "$mobile_x4") ;;
  mobile_b32) plan=(mobile_r2l 32 1e-3 3000 '') ;;  # 4x the frames a step: MobileR2L's step is host-bound
  slab_fine) plan=(lightslab 8 5e-4 3000 "$fine_slab") ;;
  oracle) plan=(oracle 65536 2e-3 3000 '') ;;  # the depth oracle: rays a step; poses to draw them from
  *) echo "PLAN must be mobile_x4, mobile_b32, slab_fine or oracle, got ${PLAN}"; exit 2 ;;
esac
arch=${ARCH:-${plan[0]}} batch=${BATCH:-${plan[1]}} lr=${LR:-${plan[2]}} views=${PSEUDO_VIEWS:-${plan[3]}}
student_config=${STUDENT_CONFIG-${plan[4]}}
config_flag=()
[ "${COMPILE:-0}" = 1 ] && config_flag=(--compile)
if [ -n "$student_config" ]; then
  echo "$student_config" > "$work/student_config.json" && config_flag+=(--student-config "$work/student_config.json")
fi
views_per_s=50  # the teacher renders ~57 views/s at 400x400 on an H200 (BENCHMARKS.md)
[ "$arch" = oracle ] && views_per_s=1000000  # it renders no pseudo views: the teacher answers ray by ray
reserve=45      # starting the distillation, its eval references, probes and the final evaluation of 100 views
if [ "${SMOKE:-0}" = 1 ]; then
  teacher_cmd=(train nerf --scene synthetic --size tiny --steps 20 --device cpu)
  size=tiny views=${PSEUDO_VIEWS:-8} views_per_s=4 reserve=20
  device=(--device cpu)
else
  teacher_cmd=(train nerf --scene "$scenes/lego" --seconds "${TEACHER_SECONDS:-60}")
  size=full device=()
fi
left() { echo $(( budget - SECONDS )); }
echo "=== $(date +%T) student_gpu.sh: arch $arch, batch $batch, lr $lr, $views pseudo views, config" \
  "${student_config:-(preset)}, compile ${COMPILE:-0}, budget ${budget}s"
[ "${SMOKE:-0}" = 1 ] || nvidia-smi --query-gpu=index,name,memory.used --format=csv,noheader

teacher=$work/teacher
student=$work/student_${arch}_b${batch}_lr${lr}_$(date +%H%M%S)
seconds=0
if [ "${PROBE_ONLY:-0}" = 1 ]; then
  echo "=== PROBE_ONLY: no teacher, no distillation"
elif [ -f "$teacher/metrics.json" ]; then
  echo "=== reusing the teacher in $teacher"
else
  echo "=== $(date +%T) teacher: ngfx ${teacher_cmd[*]}"
  timeout $(( $(left) - 60 )) python3 -m ngfx.cli "${teacher_cmd[@]}" --out "$teacher" --overwrite \
    || { echo "=== teacher FAILED or timed out ($?)"; exit 1; }
fi

if [ "${PROBE_ONLY:-0}" != 1 ]; then
  probe_reserve=${PROBE_RESERVE_S:-$([ "${PROBE:-1}" = 1 ] && echo 50 || echo 0)}
  seconds=$(( $(left) - views / views_per_s - reserve - probe_reserve ))
  if [ "$seconds" -lt 10 ]; then echo "=== no time left to distil (${seconds}s)"; exit 1; fi
  echo "=== $(date +%T) distillation: $seconds s of training into $student"
  timeout $(( $(left) - 5 )) python3 -m ngfx.cli nelf distill "$teacher" --out "$student" --arch "$arch" --size "$size" \
    --pseudo-views "$views" --steps 1000000 --finetune-steps "${FINETUNE_STEPS:-0}" --seconds "$seconds" \
    --batch "$batch" --lr "$lr" \
    "${config_flag[@]}" "${device[@]}" || echo "=== distillation FAILED or timed out ($?)"
fi

if [ "${PROBE:-1}" = 1 ] && [ "$(left)" -gt 20 ]; then
  echo "=== $(date +%T) steps/s by batch ($(left) s left)"
  export SMOKE=${SMOKE:-0} FINE_SLAB=$fine_slab MOBILE_X4=$mobile_x4
  timeout $(( $(left) - 3 )) python3 - "$work/throughput.json" <<'EOF' || echo "=== probe stopped ($?)"
# steps/s of one distillation step (the run's own: ray encoding, bf16 forward, MSE, backward, fused Adam) on
# random targets, by batch, for each student at its full size on 400x400 frames; written after every row
import json, os, sys, time
import torch
from ngfx.cameras import Intrinsics, orbit_poses
from ngfx.io import write_json
from ngfx.nelf.distill import _Frames, _param_groups
from ngfx.nelf.network import build_student, compile_blocks, student_preset, with_overrides
from ngfx.render.neural_field import optimisation_step

smoke = os.environ["SMOKE"] == "1"
device = torch.device("cpu" if smoke else "cuda")
torch.backends.cudnn.benchmark = True
side, preset, steps = (32, "tiny", 3) if smoke else (400, "paper", 20)
slab, fine_slab = student_preset("lightslab", preset), json.loads(os.environ["FINE_SLAB"])
mobile = student_preset("mobile_r2l", preset)
students = {"mobile_r2l x8": mobile, "mobile_r2l x4": with_overrides(mobile, json.loads(os.environ["MOBILE_X4"]),
                                                                    "mobile x4"),
            "lightslab": slab, "lightslab fine": with_overrides(slab, fine_slab, "fine slab")}
# most telling first (the probe stops when the time is up): the default plan's batch and twice it, the default
# plan's student with compiled blocks (--compile; its first steps' time is the compilation), then the candidates
probes = [("mobile_r2l x8", 32), ("mobile_r2l x8", 64), ("mobile_r2l x8 compiled", 32), ("mobile_r2l x8", 8),
          ("mobile_r2l x4", 32), ("lightslab fine", 8), ("lightslab", 8), ("mobile_r2l x4", 16),
          ("mobile_r2l x8", 16), ("lightslab fine", 16)]
probes = probes[:3] if smoke else probes
k = Intrinsics.from_fov_x(side, side, 0.69)
geometry = {"near": 2.0, "far": 6.0, "aabb": torch.tensor([[-1.5] * 3, [1.5] * 3])}
poses = orbit_poses(64, 4.0)
targets = torch.randint(0, 256, (64, side, side, 3), dtype=torch.uint8, device=device)
rows = []
for arch, batch in probes:
    batch = min(batch, 4) if smoke else batch
    model = build_student(students[arch.removesuffix(" compiled")]).to(device).to(memory_format=torch.channels_last)
    if arch.endswith(" compiled"):
        compile_blocks(model)
    first = time.perf_counter()
    opt = torch.optim.Adam(_param_groups(model, 1e-4), fused=device.type == "cuda" or None)
    frames = _Frames(model, targets, poses, k, geometry, batch, seed=0)
    frames.train()
    for step in range(steps + 5):
        if step == 5:  # the first steps pick cuDNN's algorithms
            torch.cuda.synchronize() if device.type == "cuda" else None
            began = time.perf_counter()
        optimisation_step(frames, opt, step)
    torch.cuda.synchronize() if device.type == "cuda" else None
    per_s = steps / (time.perf_counter() - began)
    rows.append({"arch": arch, "batch": batch, "steps_per_s": per_s, "frames_per_s": per_s * batch,
                 "first_steps_s": began - first})
    print(f"  {arch:23s} batch {batch:3d}: {per_s:6.1f} steps/s, {per_s * batch:7.0f} frames/s (first 5 steps "
          f"{began - first:.1f} s)", flush=True)
    write_json(sys.argv[1], {"side": side, "rows": rows})
    del model, opt, frames
EOF
fi

echo "=== $(date +%T) summary"
python3 - "$teacher" "$student" "$work/throughput.json" "$seconds" <<'EOF'
import math, sys
from pathlib import Path

from ngfx.io import read_json
from ngfx.render.metrics import psnr_from_mse

teacher, student, throughput = (Path(p) for p in sys.argv[1:4])
seconds = float(sys.argv[4])
t = read_json(teacher / "metrics.json") if (teacher / "metrics.json").is_file() else {}
print(f"teacher: {t['psnr_db']:.2f} dB on the val views, {t['steps']} steps in {t['seconds']:.0f} s" if t
      else "teacher: no metrics.json")
run = read_json(student / "run.json") if (student / "run.json").is_file() else {}
if run:
    print(f"student {run['arch']}{' (compiled)' if run['compiled'] else ''}: batch {run['batch']}, lr {run['lr']}, "
          f"{run['pseudo_views']} pseudo views, "
          f"{run['steps']} distillation + {run['finetune_steps']} fine-tuning steps in {seconds:.0f} s "
          f"({(run['steps'] + run['finetune_steps']) / seconds:.1f} steps/s), frames "
          f"{run['resolution'][0]}x{run['resolution'][1]}, upscale "
          f"x{math.prod(stride for _, _, stride in run['nelf_config']['sr_stages'])}")
curve = read_json(student / "curve.json") if (student / "curve.json").is_file() else {}
if curve.get("psnr_by_minutes"):
    rows = curve["psnr_by_minutes"]
    # the last probe at or before each whole minute, and the last one (fine-tuning included)
    shown = [max(before, key=lambda r: r[0]) for m in range(1, int(rows[-1][0]) + 1)
             if (before := [r for r in rows if r[0] <= m])] + rows[-1:]
    print("| minutes | step | probe dB vs truth (8 val views) | vs teacher |\n|---:|---:|---:|---:|")
    for minutes, step, truth, vs_teacher in shown:
        print(f"| {minutes:.2f} | {step:.0f} | {truth:.2f} | {vs_teacher:.2f} |")
    best = max(rows, key=lambda r: r[2])
    print(f"best probe {best[2]:.2f} dB at {best[0]:.2f} min")
    # the loss of the distillation's last 200 steps as a PSNR on its pseudo views: under-fitting shows as a low
    # one, over-fitting as a high one above a falling probe
    end = run.get("steps", max(step for step, _ in curve["loss"]))
    last = [loss for step, loss in curve["loss"] if end - 200 < step <= end]
    print(f"pseudo-view training PSNR over the distillation's last 200 steps: "
          f"{psnr_from_mse(sum(last) / len(last)):.2f} dB")
if (student / "metrics.json").is_file():
    m = read_json(student / "metrics.json")
    print(f"final on {m['eval_views']} val views: student {m['student_psnr_db']:.2f} dB vs truth, "
          f"{m['student_vs_teacher_psnr_db']:.2f} dB vs teacher; teacher {m['teacher_psnr_db']:.2f} dB, "
          f"constant colour {m['constant_colour_psnr_db']:.2f} dB")
else:
    print(f"no final metrics in {student}")
if throughput.is_file():
    for r in read_json(throughput)["rows"]:
        print(f"throughput {r['arch']} batch {r['batch']}: {r['steps_per_s']:.1f} steps/s, {r['frames_per_s']:.0f} "
              f"frames/s, first 5 steps {r['first_steps_s']:.1f} s")
EOF
echo "=== $(date +%T) done in ${SECONDS}s"
