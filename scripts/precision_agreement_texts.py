"""A text model's lower precisions against fp32 on many real utterances (BENCHMARKS.md, issue #24).

    python scripts/precision_agreement_texts.py FP32_BUNDLE MELD/dev_sent_emo.csv [--int8 INT8_BUNDLE]

The sample clip that `merclip export` measures on holds 22 words: a text-only model gets ~20 distinct
readings from it. This reads every utterance of a CSV (column ``Utterance``, as MELD's) with the fp32
bundle on onnxruntime, at bf16 on OpenVINO (needs a CPU with AMX or AVX-512-BF16) and, given, with an int8
bundle; prints the same statistics as the gate (``export/agreement.py``), identical readings counted once.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from merclip.export.agreement import bundle_readings, compare
from merclip.export.runtime import Bundle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="a fp32 bundle of a model that reads text")
    parser.add_argument("csv", type=Path, help="a CSV with an Utterance column (MELD's dev_sent_emo.csv)")
    parser.add_argument("--int8", type=Path, help="the same model's int8 bundle")
    args = parser.parse_args()
    with args.csv.open(encoding="utf-8", errors="replace", newline="") as f:
        texts = [row["Utterance"] for row in csv.DictReader(f) if row.get("Utterance", "").strip()]
    windows = [(None, None, text) for text in texts]
    reference = Bundle.load(args.bundle, providers="cpu", precision="fp32")
    others = {"bf16": Bundle.load(args.bundle, providers="openvino", precision="bf16")}
    if args.int8:
        others["int8"] = Bundle.load(args.int8, providers="cpu", precision="int8")
    print(f"{len(texts)} utterances of {args.csv}")
    for name, bundle in others.items():
        stats = compare(bundle_readings(reference), bundle_readings(bundle), windows)
        print(f"  {name} ({bundle.runtime_line()}): " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
