#!/usr/bin/env bash
# One GPU session's checks and measurements for the throughput work, in priority order, each under its own time
# limit (device time comes in slots of about 15 minutes; these stages add up to 12). A benchmark script, not a test.
#
# Run on the GPU machine, from the repository root:  bash bench/gpu_session.sh
# Needs HEALCORE_DATA to hold sst2/ (default ../shared/data; carry a copy where the machine has no ../shared).
# Each stage's full output goes to $OUT/<stage>.log (or gpu-logs/); its last lines are printed here.
set -u
out=${OUT:-gpu-logs}
mkdir -p "$out"
export HEALCORE_DATA=${HEALCORE_DATA:-../shared/data} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

stage() {
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "rc=$? after $((SECONDS - t0))s"
  grep -v -i warn "$out/$name.log" | tail -n 12
}

# 1. The compiled and fused paths give the eager metrics on CUDA (tiny models; the device is picked as cuda).
stage correctness 150 env HEALCORE_TEST_DEVICE=cuda python -m pytest -q -x -p no:cacheprovider \
  tests/test_compiled.py tests/test_fast_path.py
# 2. One run's step at batch 32 against the Trainer (c/a target 7x), compiled with CUDA graphs; MFU at batch 1024.
stage step-throughput 210 env OMP_NUM_THREADS=1 python bench/throughput.py --device cuda --datasets sst2 \
  --steps 100 --warmup 10 --mfu-batches 1024
# 3. The paper's Table 1 BERT-base row: a 27-run slice fused and compiled, extrapolated (target <= 3 H100-hours).
stage table1-slice 200 python bench/table1_slice.py --device cuda --train-rows 8000 --fuse 27 \
  --compile reduce-overhead
# 4. Grids of K runs each way (fused K=27 >= 5x persistent workers is the target).
stage grid-throughput 160 python bench/grid_throughput.py --device cuda --ks 9,27 --models bert-base \
  --skip-overhead --ways "persistent,fused,compiled,fused and compiled"
