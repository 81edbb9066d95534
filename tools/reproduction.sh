#!/usr/bin/env bash
# Regenerates the reproduction study: docs/REPRODUCTION.md (the main study, linear decay), docs/REPRODUCTION-EMOTION.md
# (its Emotion grid at 16 epochs) and docs/REPRODUCTION-SCHEDULE.md (the SST-2 grid again with the paper's constant
# learning rate, plus AG News, with the layer analyses). The runs first (finished ones are skipped, so this also
# continues a partial study), then the reports and their figures. Run from the repository root.
# On a GPU machine: RUNS_PER_GPU=12 bash tools/reproduction.sh (several short runs share the card); on a CPU,
# WORKERS=2 runs two at a time, each with its share of the cores' threads.
# REPORT_ONLY=1 skips the runs and rewrites the reports from the stores as they are.
# The paragraphs under each report's title (scope, where runs ran, caveats) are tools/notes/*.md.
set -euo pipefail
export HEALCORE_DATA=${HEALCORE_DATA:-../shared/data}
STORE=runs/reproduction
PACKING=(--runs-per-gpu "${RUNS_PER_GPU:-1}" --workers "${WORKERS:-1}")
if [ -z "${REPORT_ONLY:-}" ]; then
  for preset in reproduction-minilm reproduction-minilm-variants reproduction-minilm-probe reproduction-minilm-noise \
                reproduction-minilm-l3; do
    # runs of about 20 s on a GPU: a per-epoch checkpoint (~260 MB with optimizer state) costs more than a
    # restart. precision=bf16: every run in the doc used bf16 autocast (the default on GPUs when they ran).
    healcore --store $STORE grid $preset "${PACKING[@]}" --set checkpoint_every=0 --set precision=bf16
  done
  # the plateau check of the clean Emotion model at 10 epochs, in its own store (see the note)
  healcore --store runs/emotion-epochs grid reproduction-minilm-emotion-epochs "${PACKING[@]}" \
    --set checkpoint_every=0 --set precision=bf16
  # Emotion's grid at 16 epochs, where its clean model plateaus: docs/REPRODUCTION-EMOTION.md
  healcore --store runs/emotion-16 grid reproduction-minilm-emotion "${PACKING[@]}" --set checkpoint_every=0 \
    --set precision=bf16
  # the paper's constant learning rate, and the layer analyses: docs/REPRODUCTION-SCHEDULE.md (they ran on a CPU,
  # in fp32: the precision healcore picks there)
  for preset in reproduction-minilm-constant reproduction-minilm-constant-ag-news; do
    healcore --store runs/schedule grid $preset "${PACKING[@]}" --set checkpoint_every=0
  done
fi
healcore --store $STORE report --out docs --name reproduction --force --title "Reproduction study: do minilm-l6 and minilm-l3 heal the way the paper says?" \
  --note "${REPRODUCTION_NOTE:-$(cat tools/notes/reproduction.md)}" --command "RUNS_PER_GPU=12 bash tools/reproduction.sh"
healcore --store runs/emotion-16 report --out docs --name reproduction-emotion --force \
  --title "Reproduction study, Emotion at 16 epochs: does minilm-l6 heal the way the paper says once the clean model has plateaued?" \
  --note "$(cat tools/notes/reproduction-emotion.md)" --command "RUNS_PER_GPU=12 bash tools/reproduction.sh"
healcore --store runs/schedule report --out docs --name reproduction-schedule --force \
  --title "Reproduction study with the paper's optimizer: a constant learning rate, and where healing happens" \
  --note "$(cat tools/notes/reproduction-schedule.md)" --command "WORKERS=2 bash tools/reproduction.sh"
