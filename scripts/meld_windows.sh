#!/usr/bin/env bash
# RESULTS.md, "Reading what the monitor reads": the default recipe, trained, calibrated and scored on the
# monitor's 2-s windows (and on whole utterances beside them), on a test-sized stand-in for MELD's test
# split (held-out train dialogues: scripts/meld_holdout.py). No flag beyond the issue's command chain.
#
# Usage: bash scripts/meld_windows.sh [MELD_DIR] [OUT] [SEEDS]   (about 8 CPU minutes a seed on 2 cores: the
# default on MELD trains five teachers first (pooled: train.teacher_attend), seeds seed+1..seed+5 in
# OUT/seed-N/model/teachers, then the run taught by them; MERCLIP_TRAIN_FLAGS="--teachers 0" gives the
# untaught rows)
# SEEDS: one seed or several ("0 1 2 3 4 5"); each trains into OUT/seed-N. One seed's figures move by about
# a point between seeds, so the last lines print every seed and the mean ± sd.
set -euo pipefail
meld=${1:-../shared/data/meld}
out=${2:-runs/meld-windows}
seeds=${3:-0}
python scripts/meld_holdout.py "$meld" "$out/data"
for seed in $seeds; do
  run="$out/seed-$seed"
  merclip train --dataset meld --data-root "$out/data" --modalities L --model tiny --epochs 3 --seed "$seed" \
    ${MERCLIP_TRAIN_FLAGS:-} --out "$run/model"
  merclip calibrate "$run/model/best.safetensors" --dataset meld --data-root "$out/data" --split valid
  for protocol in windows clips; do
    merclip eval --checkpoint "$run/model/best.safetensors" --dataset meld --data-root "$out/data" --split test \
      --protocol "$protocol" --json "$run/test-$protocol.json"
  done
done
python - "$out" $seeds <<'EOF'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
cols = {"win wF1 emo": ("windows", "weighted_f1"), "win wF1 sent": ("windows", "sentiment_weighted_f1"),
        "win ECE emo": ("windows", "emotion_ece"), "win ECE sent": ("windows", "sentiment_ece"),
        "clip wF1 emo": ("clips", "weighted_f1"), "clip wF1 sent": ("clips", "sentiment_weighted_f1")}
table = {c: [] for c in cols}
for seed in seeds:
    scores = {p: json.load(open(f"{out}/seed-{seed}/test-{p}.json")) for p in ("windows", "clips")}
    for c, (p, key) in cols.items():
        table[c].append(scores[p][key] if "ECE" in c else 100 * scores[p][key])
def line(label, values):
    return f"{label:>5}  " + "  ".join(f"{v:>{len(c)}.{3 if 'ECE' in c else 1}f}" for c, v in zip(cols, values))
print("seed   " + "  ".join(cols))
for i, seed in enumerate(seeds):
    print(line(seed, [table[c][i] for c in cols]))
if len(seeds) > 1:
    print(line("mean", [statistics.mean(v) for v in table.values()]))
    print(line("sd", [statistics.stdev(v) for v in table.values()]))
EOF
