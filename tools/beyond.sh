#!/usr/bin/env bash
# Regenerates docs/REPRODUCTION-BEYOND.md: removed layers against re-initialised ones, which parameters heal, whether
# damage measured before fine-tuning predicts healing, and healing against training-set size. minilm-l6 on SST-2
# and AG News slices, 2 seeds; 72 runs, about 51 minutes on a 2-core CPU with WORKERS=2. Run from the repository
# root. Finished runs are skipped; REPORT_ONLY=1 rewrites the report from the store as it is. The paragraph under the report's title
# (the answers, read off the tables below it) is tools/notes/reproduction-beyond.md.
set -euo pipefail
export HEALCORE_DATA=${HEALCORE_DATA:-../shared/data}
STORE=runs/beyond
if [ -z "${REPORT_ONLY:-}" ]; then
  for preset in beyond-removal beyond-train-layers beyond-data-size beyond-ag-news beyond-ag-news-train-layers; do
    healcore --store $STORE grid $preset --workers "${WORKERS:-2}"
  done
fi
healcore --store $STORE report --out docs --name reproduction-beyond --force \
  --title "Beyond re-initialisation: removed layers, what heals, damage that predicts healing, data size" \
  --note "$(cat tools/notes/reproduction-beyond.md)" --command "WORKERS=2 bash tools/beyond.sh"
