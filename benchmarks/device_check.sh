#!/usr/bin/env bash
# One script for the day a GPU is lent: about 8 minutes on one H100, one results folder out.
#
#   bash benchmarks/device_check.sh                 # from the repository root, on the GPU machine
#   OUT=/some/folder IMDAD_FMNIST_DIR=/data/fmnist bash benchmarks/device_check.sh
#
# 1. Every run-axis strategy and auto's on-device choice: run-steps/s of the main job's CNN2+FC3 IMD-AD step at
#    1, 10, 100 and 1000 runs (benchmarks/bench_strategies.py).
# 2. This library against PyTorch on the same GPU: sides (a)-(d) of benchmarks/bench_vs_pytorch.py at 1 and 10 runs.
# 3. The main job, the paper's full schedule (10 classes, 200 epochs): its wall time and AUC table.
# Each step has its own time limit so a slow one cannot take the others' time; every step's output is kept even
# when a later one fails. Fashion-MNIST must be on the machine for step 3 (and for real images in step 2: it uses
# random images otherwise), where the library looks for it (docs/data.md): $IMDAD_FMNIST_DIR, the four .gz files in
# ~/.cache/imdad_jax/fashion-mnist, or the Debian package dataset-fashion-mnist. Nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/device_check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export IMDAD_CACHE_DIR="$OUT/cache"               # auto's measurement is taken afresh and kept with the results
export JAX_COMPILATION_CACHE_DIR="$OUT/xla_cache"
LOG="$OUT/device_check.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }

say "# device check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$LOG"
python -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)" 2>&1 | tee -a "$LOG"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  say ""
  say "## $name (limit ${limit} s): $*"
  local t0=$(date +%s)
  timeout --signal=TERM --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | grep -v "^I0000\|absl::" | tail -40 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  say "[$name] exit $rc after $(( $(date +%s) - t0 )) s"
}

step strategies 150 python benchmarks/bench_strategies.py --arch=cnn2 --runs=1,10,100,1000 --steps=10 --epochs=3 \
  --strategies=auto/scan,vmap/scan,vmap_fwd/scan,map/scan,chunked/scan --out="$OUT/strategies"
cat "$OUT/strategies.md" >> "$LOG" 2>/dev/null

SYNTH=""
[ -z "${IMDAD_FMNIST_DIR:-}" ] && [ ! -d "$HOME/.cache/imdad_jax/fashion-mnist" ] \
  && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1 && SYNTH="--synthetic"
step vs_pytorch 90 python benchmarks/bench_vs_pytorch.py --runs=1,10 --seconds=8 --torch_device=auto $SYNTH \
  --out="$OUT/vs_pytorch" --md="$OUT/vs_pytorch.md"

step main_job 220 python experiments/run.py --dataset=fmnist --all_classes --out_dir="$OUT"
ls "$OUT"/fmnist_imdad_*.md >/dev/null 2>&1 && cat "$OUT"/fmnist_imdad_*.md >> "$LOG"

say ""
say "# done: $LOG"
