"""Make a MELD folder whose test split is a held-out quarter of MELD's train dialogues.

MELD's own test split is not available here; this stands in for it at its size (~2,600 utterances, MELD
test has 2,610), so a calibration measured on it is not drowned in the noise of a small set. Whole
dialogues are held out (every dialogue whose id is 3 mod 4), as MELD's splits are by dialogue: no
conversation is seen in training and then scored. dev is MELD's dev, linked, unchanged.

The derived CSVs are MELD's (GPL): write them under runs/ (ignored by git), never into the repository.

Usage: python scripts/meld_holdout.py ../shared/data/meld runs/meld-holdout
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

HOLDOUT_MOD = 4  # one dialogue in four
HOLDOUT_REST = 3
CALIBRATION_MOD = 8  # one in eight more, with --calibration
CALIBRATION_REST = 1


def split_train(source: Path, out: Path, calibration: bool = False) -> dict[str, int]:
    """Write out/{train,test}_sent_emo.csv (and out/calibration/dev_sent_emo.csv); return the counts."""
    # surrogateescape keeps MELD's few non-UTF-8 bytes as they are
    with open(source / "train_sent_emo.csv", encoding="utf-8", errors="surrogateescape", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    dialogue = header.index("Dialogue_ID")
    parts: dict[str, list[list[str]]] = {"train": [], "test": [], "calibration/dev": []}
    for row in body:
        d = int(row[dialogue])
        if d % HOLDOUT_MOD == HOLDOUT_REST:
            parts["test"].append(row)
        elif calibration and d % CALIBRATION_MOD == CALIBRATION_REST:
            parts["calibration/dev"].append(row)
        else:
            parts["train"].append(row)
    for name, part in parts.items():
        if not part:
            continue
        path = out / f"{name}_sent_emo.csv"
        path.parent.mkdir(exist_ok=True)
        with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(part)
    return {name: len(part) for name, part in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("meld", type=Path, help="folder with MELD's train_sent_emo.csv and dev_sent_emo.csv")
    parser.add_argument("out", type=Path, help="folder to write (under runs/)")
    parser.add_argument("--calibration", action="store_true", help="also hold out a calibration set (see above)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    counts = split_train(args.meld, args.out, args.calibration)
    dev = args.out / "dev_sent_emo.csv"
    if not dev.exists():
        os.symlink((args.meld / "dev_sent_emo.csv").resolve(), dev)
    print(f"{args.out}: utterances " + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + "; dev linked")


if __name__ == "__main__":
    main()
