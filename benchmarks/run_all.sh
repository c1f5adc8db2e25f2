#!/usr/bin/env bash
# One GPU batch on the lent H200 (through the device tool), in two parts that each fit one 10-minute call:
#   bash benchmarks/run_all.sh nerf   # Lego NeRF (train <= 3 min, 1080p/4K frames, fused vs unfused), its trace,
#                                     # a bounded NeLF distillation from it, NeLF fp16 frames/s
#   bash benchmarks/run_all.sh apps   # GIA (albert), NSDF (armadillo), NVR (cloud): train, 4K frames (APP_TRACES=1: traces)
# Environment knobs: NERF_SECONDS, NERF_LIMIT, EVAL_VIEWS, NERF_PROFILE=1, DISTILL=0, DISTILL_SECONDS, PSEUDO_VIEWS,
# DISTILL_ARCHS="mobile_r2l lightslab", DISTILL_LONG_SIDE=400,
# BENCH_NELF=1, PROFILE=1, NERF_VARIANTS=densegrid,lowres (VARIANT_SECONDS, VARIANT_LIMIT), APPS, APP_SECONDS, APPS_LIMIT.
# Real scenes are read from $NGFX_SCENES (default .gpu_data/scenes, a carried copy of ../shared/scenes).
# Everything lands in /tmp/ngfx_bench; the small results (Markdown, JSON, PNG, traces) are packed into
# $OUT/results_PART.tar.gz and the tables are printed last.
set -uo pipefail
part=${1:?usage: run_all.sh nerf|apps|both|none}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # simpy, trimesh, rtree, markdown are not on the GPU image
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD
fi
scenes=${NGFX_SCENES:-.gpu_data/scenes}
work=/tmp/ngfx_bench; mkdir -p "$work/traces" "$work/traces_fused"
out=${OUT:-$work/out}; mkdir -p "$out"
step() { local limit=$1; shift; echo "=== $(date +%T) $*"; timeout "$limit" "$@" || echo "=== FAILED or timed out ($?): $*"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

if [ "$part" = nerf ] || [ "$part" = both ]; then
  step ${NERF_LIMIT:-330} python3 benchmarks/bench_render.py --out "$work/nerf" --scene "$scenes/lego" --train-seconds ${NERF_SECONDS:-170} ${EVAL_VIEWS:+--eval-views $EVAL_VIEWS} ${NERF_PROFILE:+--profile}
  step 60 python3 -m ngfx.cli trace "$work/nerf/run_nerf_hashgrid" --resolution 1920x1080 --out "$work/traces/nerf_hashgrid.json"
  step 60 python3 -m ngfx.cli trace "$work/nerf/run_nerf_hashgrid" --resolution 1920x1080 --fused \
    --out "$work/traces_fused/nerf_hashgrid.json"
  [ "${BENCH_NELF:-0}" = 1 ] && step 150 python3 benchmarks/bench_nelf.py --out "$work/nelf_bench"
  if [ "$part" = nerf ] && [ "${DISTILL:-1}" = 1 ]; then  # each student arch, same teacher and budget
    for arch in ${DISTILL_ARCHS:-mobile_r2l}; do
      step $(( ${DISTILL_SECONDS:-120} + 120 )) python3 -m ngfx.cli nelf distill "$work/nerf/run_nerf_hashgrid" \
        --out "$work/nelf_lego_$arch" --arch $arch --size full --pseudo-views ${PSEUDO_VIEWS:-200} --steps 100000 \
        --finetune-steps 10000 --seconds ${DISTILL_SECONDS:-120} ${DISTILL_LONG_SIDE:+--long-side $DISTILL_LONG_SIDE}
      python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print('$arch PSNR by minutes (min, step, vs truth, vs teacher):'); [print('  %.2f %d %.2f %.2f' % tuple(e)) for e in c['psnr_by_minutes']]" "$work/nelf_lego_$arch/curve.json"
    done
  fi
fi
if [ "${PROFILE:-0}" = 1 ]; then  # where a fused 1080p NeRF frame's time goes (stages and GPU kernels)
  step 200 python3 benchmarks/bench_render.py --out "$work/nerf_profile" --scene "$scenes/lego" --train-seconds 40 \
    --eval-views 5 --resolutions 1920x1080 --profile
fi
if [ -n "${NERF_VARIANTS:-}" ]; then  # e.g. densegrid,lowres: shorter training, fewer val views
  step ${VARIANT_LIMIT:-400} python3 benchmarks/bench_render.py --out "$work/nerf_variants" --scene "$scenes/lego" \
    --encodings "$NERF_VARIANTS" --train-seconds ${VARIANT_SECONDS:-60} --eval-views ${EVAL_VIEWS:-10}
fi
if [ "$part" = apps ] || [ "$part" = both ]; then
  step ${APPS_LIMIT:-480} python3 benchmarks/bench_render_apps.py --out "$work/apps" --scenes "$scenes" --train-seconds ${APP_SECONDS:-75} \
    --apps ${APPS:-gia,nsdf,nvr} ${APP_TRACES:+--traces "$work/traces"}
fi

cd "$work" && find . \( -name '*.md' -o -name '*.json' -o -name '*.png' -o -name '*.jpg' \) -size -4M \
  -not -path '*/pseudo*' | tar -czf "$out/results_$part.tar.gz" -T - && ls -la "$out"
for f in $(find "$work" -name 'results.md' -o -name '*.md' -path '*bench*' | sort -u); do echo "--- $f"; cat "$f"; done
