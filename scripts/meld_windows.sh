#!/usr/bin/env bash
# RESULTS.md, "Reading what the monitor reads": the default recipe, trained, calibrated and scored on the
# monitor's 2-s windows (and on whole utterances beside them), on a test-sized stand-in for MELD's test
# split (held-out train dialogues: scripts/meld_holdout.py). No flag beyond the command chain.
#
# Usage: bash scripts/meld_windows.sh [MELD_DIR] [OUT] [SEED]   (about 5 CPU minutes on 2 cores)
set -euo pipefail
meld=${1:-../shared/data/meld}
out=${2:-runs/meld-windows}
seed=${3:-0}
python scripts/meld_holdout.py "$meld" "$out/data"
merclip train --dataset meld --data-root "$out/data" --modalities L --model tiny --epochs 3 --seed "$seed" \
  --out "$out/model"
merclip calibrate "$out/model/best.safetensors" --dataset meld --data-root "$out/data" --split valid
for protocol in windows clips; do
  merclip eval --checkpoint "$out/model/best.safetensors" --dataset meld --data-root "$out/data" --split test \
    --protocol "$protocol" --json "$out/test-$protocol.json"
done
