#!/usr/bin/env bash
# Reproduces RESULTS.md: text-only MELD (dev split) with the tiny model and the ViT-B-32 text tower
# (random initialisation: no pretrained weights are reachable here), two reference points, and word vs
# sentence labels. Usage: scripts/meld_results.sh [MELD_DIR] [OUT_DIR]
set -euo pipefail
MELD=${1:-../shared/data/meld}
OUT=${2:-runs/meld}
mkdir -p "$OUT"
M="merclip"
SENTENCES=(
  "A calm and even state with no strong feeling either way."
  "A bright, warm feeling of delight and pleasure."
  "A sudden reaction to something unexpected, with astonishment or wonder."
  "A strong feeling of annoyance and hostility that pushes toward confrontation."
  "A heavy feeling of sorrow that follows loss or disappointment."
  "A strong revulsion toward something unpleasant or offensive."
  "An intense dread about a possible danger or threat."
)
# These tables are of single runs: --teachers 0 (MELD's default since 2026-12-07 trains five teachers first)
$M eval --baseline majority --dataset meld --data-root "$MELD" --split valid --json "$OUT/majority.json"
$M eval --baseline tfidf --dataset meld --data-root "$MELD" --split valid --json "$OUT/tfidf.json"
for variant in full concat_fc; do
  $M train --dataset meld --data-root "$MELD" --modalities L --model tiny --variant $variant --epochs 4 \
    --teachers 0 --out "$OUT/tiny-$variant"
done
$M train --dataset meld --data-root "$MELD" --modalities L --model tiny --variant full --epochs 4 \
  --emotion-labels "${SENTENCES[@]}" --teachers 0 --out "$OUT/tiny-full-sentences"
for variant in full concat_fc; do
  $M train --dataset meld --data-root "$MELD" --modalities L --model ViT-B-32 --weights random \
    --variant $variant --epochs 1 --batch-size 32 --lr 1e-4 --teachers 0 --out "$OUT/vitb32-$variant"
done
