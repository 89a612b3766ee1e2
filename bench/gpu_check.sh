#!/usr/bin/env bash
# The device session's one script: GPU tests, then the GPU benchmarks; results land in $OUT (or bench/results).
# Usage on the device machine: bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GARAGE_HOME="${GARAGE_HOME:-/tmp/garage_home}"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_review.py tests/test_training.py tests/test_compare.py 2>&1 | tail -20 | tee "$OUT/gpu_tests.txt"
for model in random-gemma-3-270m random-gemma-3-1b; do
  python bench/bench_train.py --model "$model" --steps 30 --seq-len 1024 --batch 4 --rounds 1
  python bench/bench_train.py --model "$model" --steps 30 --seq-len 1024 --batch 4 --rounds 1 --packing
done
python bench/bench_train.py --model random-gemma-3-1b --method qlora --steps 30 --seq-len 1024 --batch 4 --rounds 1
python bench/bench_grpo.py --steps 4
python bench/bench_chat.py --model random-gemma-3-1b --tokens 256
cp bench/results/*.json "$OUT"/ 2>/dev/null || true
