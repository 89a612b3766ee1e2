#!/usr/bin/env bash
# The device session's one script: GPU benchmarks and GPU tests, most important first, each under its own
# time limit so that one hang cannot eat the lease. Results (bench/results/*.json for the card) are re-packed
# into $OUT/results.tar after every step, so a run cut short still returns what finished.
#
#   bash bench/gpu_check.sh [STEP ...]      (no STEP: all of them, in order)
#
# The device machine has torch and transformers but not Unsloth, TRL, PEFT's pinned version, datasets or
# bitsandbytes, and cannot reach PyPI: `bash bench/gpu_site.sh` (here) packs those pinned wheels into
# .gpu/site.tar.xz, which the run carries and unpacks onto PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
mkdir -p "$OUT" bench/results
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false GARAGE_HOME="${GARAGE_HOME:-/tmp/garage_home}"
if [ -f .gpu/site.tar.xz ] && [ ! -d /tmp/site/unsloth ]; then
  mkdir -p /tmp/site && tar xJf .gpu/site.tar.xz -C /tmp/site
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site
PY="${PYTHON:-python3}"
LOG="$OUT/log.txt"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date +%T), limit ${limit}s): $*" | tee -a "$LOG"
  local started=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG" | grep -E "^(=|tiny|random|ratio|tokens/s|gemma|plain|app|bare|augment|speed|profile|[0-9]+ (passed|failed)|FAILED|ERROR|error|Traceback|NOTE)"
  echo "=== $name: exit ${PIPESTATUS[0]} in $((SECONDS - started)) s" | tee -a "$LOG"
  tar cf "$OUT/results.tar" bench/results/*.json 2>/dev/null
}

train() {  # train NAME LIMIT MODEL [bench_train options]
  local name=$1 limit=$2 model=$3
  shift 3
  step "$name" "$limit" "$PY" bench/bench_train.py --model "$model" --steps 30 --skip 5 --seq-len 1024 --batch 4 \
    --rounds 1 --plain-first --warmup 0 --gradient-checkpointing "$@"
}

# Measured 2026-11-27 on an H100 (torch 2.11, the device image's): our path's first steps compile for 60-75 s
# with an empty kernel cache (more than 100 s for the first config of a machine) and its second step recompiles
# for a new length (30 s); plain TRL + PEFT starts in 7 s. Each of our configs therefore gets 200 s or more.
# Steps of both stacks took 0.3-0.7 s whatever the model size (270M as 1B): per-step overhead, not the GPU, so
# big1b measures what more tokens per step (batch 16, packed) does to MFU. With Unsloth's per-block compile on
# (compile1b) runs never reached a steady rate in 4 minutes: the app turns it off. Not measured yet, most important
# first: shaping1b (the app's default 2 rows x 4 passes per step, which batch shaping runs as one pass of 8, against
# plain TRL running the 4 passes), big1b (memory and MFU at 16k tokens a step), qlora1b, profile1b (torch.profiler:
# how much of a step's wall time the GPU is busy, and the kernels and CPU operators per step).
run_step() {
  case $1 in
    env) step env 120 "$PY" -c "import unsloth, torch, transformers, trl, peft, datasets, bitsandbytes
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))
print('transformers', transformers.__version__, 'unsloth', unsloth.__version__, 'trl', trl.__version__,
      'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)" ;;
    lora1b) train lora1b 280 random-gemma-3-1b --parts plain,app ;;
    shaping1b) train shaping1b 280 random-gemma-3-1b --parts plain,app --batch 2 --accumulation 4 ;;
    profile1b) train profile1b 240 random-gemma-3-1b --parts plain,bare --steps 12 --skip 6 --profile 3 ;;
    packing1b) train packing1b 220 random-gemma-3-1b --parts plain,app --packing ;;
    big1b) train big1b 240 random-gemma-3-1b --parts plain,app --packing --batch 16 ;;
    compile1b) UNSLOTH_BLOCK_COMPILE=1 TORCH_LOGS=recompiles train compile1b 240 random-gemma-3-1b --parts app --steps 40 --skip 10 ;;
    qlora1b) train qlora1b 200 random-gemma-3-1b --parts app --method qlora ;;
    lora270m) train lora270m 120 random-gemma-3-270m --parts plain,app ;;
    augment1b) step augment1b 150 "$PY" bench/bench_augment.py --chunks 32 --max-tokens 128 --concurrency 16 \
                 --local "$("$PY" -c 'from garage.models.loading import model_source; print(model_source("random-gemma-3-1b"))')" ;;
    tests) step tests 360 "$PY" -m pytest -q -p no:cacheprovider -x tests/test_gpu.py ;;
    grpo) step grpo 200 "$PY" bench/bench_grpo.py --steps 4 ;;
    dpo1b) step dpo1b 200 "$PY" bench/bench_dpo.py --model random-gemma-3-1b --seq-len 1024 --steps 20 --skip 5 ;;
    chat) step chat 120 "$PY" bench/bench_chat.py --model random-gemma-3-1b --tokens 256 --repeat 5 ;;
    *) echo "unknown step $1" >&2; return 2 ;;
  esac
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee -a "$LOG"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(shaping1b big1b qlora1b profile1b packing1b lora1b augment1b lora270m chat grpo dpo1b tests compile1b)
for s in "${steps[@]}"; do run_step "$s"; done
