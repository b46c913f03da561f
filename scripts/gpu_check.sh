#!/usr/bin/env bash
# The GPU checks in one command, so that a borrowed GPU spends its minutes running:
#   1. configs/shakespeare.cfg for $MINUTES minutes in float32 (--mixed_precision=none), then in bfloat16,
#      each stopped by SIGINT (which saves a checkpoint), and the validation loss each reached (evaluate.py);
#   2. the benchmark's `large` preset against the PyTorch peer on the GPU, float32 and bfloat16;
#   3. a profile of the training step: on cuDNN the LSTM runs as CudnnRNNV3 ops.
# Needs TensorFlow with CUDA (pip install 'tensorflow[and-cuda]' -r requirements.txt), and torch in
# $PEER_PYTHON for the peer. Everything lands in $RESULTS (default: gpu_check/), a summary in summary.txt.
# Without a GPU it runs all the same on the CPU (and says so), which is how it is tried out:
#
#   bash scripts/gpu_check.sh                      # on a GPU machine: about 2 x 10 minutes + 5
#   CONFIG=configs/smoke.cfg MINUTES=1 PRESET=small RESULTS=/tmp/gpu bash scripts/gpu_check.sh
#
# Settings (environment): CONFIG (relative to the checkout), MINUTES, PRESET (benchmark preset), RESULTS,
# PYTHON, PEER_PYTHON (empty: no peer), PEER_SCRIPT (default ../shared/peers/torch_charlstm.py), DATA_PATH
# (default: the downloaded tiny-shakespeare).
set -uo pipefail

CONFIG=${CONFIG:-configs/shakespeare.cfg}
MINUTES=${MINUTES:-10}
PRESET=${PRESET:-large}
RESULTS=$(realpath -m "${RESULTS:-gpu_check}")
PYTHON=${PYTHON:-python}
PEER_PYTHON=${PEER_PYTHON-python3}
DATA_FLAGS=()
if [[ -n "${DATA_PATH:-}" ]]; then DATA_FLAGS=("--data_path=$(realpath "$DATA_PATH")"); fi
PEER_FLAGS=()
if [[ -n "$PEER_PYTHON" ]]; then PEER_FLAGS=("--peer_python=$PEER_PYTHON" --rounds=3); fi
if [[ -n "${PEER_SCRIPT:-}" ]]; then PEER_FLAGS+=("--peer_script=$(realpath "$PEER_SCRIPT")"); fi

cd "$(dirname "$0")/.."
if ! "$PYTHON" -c "import tensorflow" 2>/dev/null; then
  echo "error: $PYTHON cannot import tensorflow; install the project (pip install -e .) or set PYTHON" >&2
  exit 1
fi
mkdir -p "$RESULTS"
summary="$RESULTS/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

"$PYTHON" -c "import tensorflow as tf; print(tf.__version__, tf.config.list_physical_devices('GPU'))" \
  >"$RESULTS/tf.txt" 2>/dev/null
say "TensorFlow $(cat "$RESULTS/tf.txt") | $(nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi: CPU only')"

for precision in none bfloat16; do
  run="$RESULTS/run_$precision"
  rm -rf "$run"
  started=$(date +%s)
  timeout --signal=INT "${MINUTES}m" "$PYTHON" scripts/train.py --flagfile="$CONFIG" \
    --mixed_precision="$precision" --train_dir="$run" "${DATA_FLAGS[@]}" 2>"$RESULTS/train_$precision.log"
  status=$?
  seconds=$(($(date +%s) - started))
  rate=$(grep -o '[0-9,]* chars/s' "$RESULTS/train_$precision.log" | tail -1)
  "$PYTHON" scripts/evaluate.py --train_dir="$run" --json >"$RESULTS/eval_$precision.json" \
    2>>"$RESULTS/train_$precision.log"
  say "$CONFIG $precision: exit $status after ${seconds}s, last rate $rate," \
    "$(cat "$RESULTS/eval_$precision.json")"
done

for precision in none bfloat16; do
  "$PYTHON" scripts/benchmark.py --preset="$PRESET" --task=train --mixed_precision="$precision" --steps=20 \
    "${PEER_FLAGS[@]}" >"$RESULTS/bench_$precision.jsonl" 2>"$RESULTS/bench_$precision.log"
  say "benchmark $PRESET $precision (exit $?): $(tail -1 "$RESULTS/bench_$precision.jsonl")"
done

"$PYTHON" scripts/benchmark.py --preset="$PRESET" --task=profile --steps=10 \
  --profile_dir="$RESULTS/profile" >"$RESULTS/profile.json" 2>"$RESULTS/profile.log"
say "profile (exit $?): $(cat "$RESULTS/profile.json")"
if grep -q CudnnRNN "$RESULTS/profile.json"; then
  say "the LSTM ran on cuDNN (CudnnRNNV3 in the profile)"
else
  say "the LSTM did NOT run on cuDNN (no CudnnRNN op in the profile)"
fi
