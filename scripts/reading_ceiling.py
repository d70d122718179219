"""How far can a better reading context lift a checkpoint's window scores?

Scores a checkpoint on the monitor's windows of a split (``merclip eval --protocol windows``'s code) and
prints the support-weighted F1 of both heads for:
- each window as the monitor reads it (the checkpoint's reading context);
- each window given its *whole* utterance's reading (the clip scored whole, once per window of it): what a
  reading context that knew every word of the utterance, later ones included, would score. The monitor
  cannot have later words, so no reading context of this model can do better than about this: the ceiling;
- the windows whose reading already holds the whole utterance, and those that hold only its beginning.

``--baseline tfidf`` prints the same rows for TF-IDF + logistic regression fitted on the train split's whole
clips (``merclip eval --baseline``'s predictor), each window read by the utterance so far: how much of the
loss on beginnings a bag of words shares, i.e. how much of it is in the words themselves.

Windows weight long utterances more than whole-clip scoring does (a 6-s utterance gives three windows, a
1-s one gives one), so the ceiling differs from the whole-clip figure even where every reading is whole.

Only for research notes (RESULTS.md, #22). MELD is GPL: the split folders live under runs/
(scripts/meld_holdout.py), never in the repository.

Usage: python scripts/reading_ceiling.py CHECKPOINT [CHECKPOINT ...] --data-root runs/meld-holdout --split test
       python scripts/reading_ceiling.py --baseline tfidf --data-root runs/meld-holdout --split test
"""

from __future__ import annotations

import argparse
import types

import numpy as np
from merclip.model import load_checkpoint
from merclip.train.evaluate import _score_checkpoint, scoring_protocol
from merclip.train.metrics import weighted_f1
from merclip.train.splits import _datasets, _with_dataset_defaults
from merclip.train.windows import window_entries

from merclip.config import load_config, override

TASKS = ("emotion", "sentiment")


def _outputs(model, root: str, split: str, protocol: str) -> dict:
    args = types.SimpleNamespace(config=None, dataset="meld", data_root=root, allow_partial=False, split=split,
                                 half=None, protocol=protocol, context=None)  # fmt: skip
    return _score_checkpoint(args, model)[1]


def ceiling(model, root: str, split: str) -> dict[str, dict[str, float]]:
    """{row: {"n", "emotion", "sentiment"}} for the rows the module docstring lists (wF1 in %)."""
    args = types.SimpleNamespace(protocol="windows", context=None)
    cfg = override(load_config(None), train={"dataset": "meld", "data_root": root})
    _, setting = scoring_protocol(args, model.cfg.reading, cfg.capture)
    (clips,) = _datasets(cfg, (split,))
    windows = window_entries(clips.entries, setting)  # the order eval scores them in
    clip_row = {e["clip_id"]: k for k, e in enumerate(clips.entries)}
    of_clip = np.array([clip_row[w["clip_id"]] for w in windows])
    whole = np.array([w["text"].split() == w["clip_text"].split() for w in windows])  # CSVs hold double spaces
    read, full = _outputs(model, root, split, "windows"), _outputs(model, root, split, "clips")
    rows: dict[str, dict[str, float]] = {}
    every = np.ones(len(windows), bool)
    for row, keep, source in (("as read", every, "read"), ("whole utterance on every window", every, "full"),
                              ("windows holding the whole utterance", whole, "read"),
                              ("windows holding its beginning only", ~whole, "read")):  # fmt: skip
        rows[row] = {"n": int(keep.sum())}
        for task in TASKS:
            targets = read[f"{task}_targets"]
            logits = read[f"{task}_logits"] if source == "read" else full[f"{task}_logits"][of_clip]
            rows[row][task] = 100 * weighted_f1(targets[keep], logits[keep].argmax(1))
    return rows


def baseline_ceiling(kind: str, root: str, split: str) -> dict[str, dict[str, float]]:
    """The rows of ``ceiling`` for a reference predictor (train/baselines.py) fitted on the train split's
    whole clips; windows read as an untrained model's bundle reads them (the config's [capture])."""
    from merclip.model.reading import ReadingSetting
    from merclip.train.baselines import predict

    # MELD's labels and single-label heads, as `merclip eval --baseline` takes them
    cfg = _with_dataset_defaults(override(load_config(None), train={"dataset": "meld", "data_root": root}), "meld")
    capture = cfg.capture
    setting = ReadingSetting.for_untrained(capture.context, capture.window_s, capture.hop_s, capture.frames_per_window)
    train, scored = _datasets(cfg, ("train", split))
    windows = window_entries(scored.entries, setting)
    whole = np.array([w["text"].split() == w["clip_text"].split() for w in windows])
    targets = {"emotion": ([train.emotion_target(e) for e in train.entries],
                           [scored.emotion_target(w) for w in windows]),
               "sentiment": ([train.sentiment_target(e.get("sentiment")) for e in train.entries],
                             [scored.sentiment_target(w.get("sentiment")) for w in windows])}  # fmt: skip
    # one fit per task: each window's reading and its whole utterance, predicted together
    texts = [w["text"] for w in windows] + [w["clip_text"] for w in windows]
    read, full = {}, {}
    for task, (y_train, _) in targets.items():
        pred = predict(kind, [e["text"] for e in train.entries], y_train, texts)
        read[task], full[task] = pred[: len(windows)], pred[len(windows) :]
    every = np.ones(len(windows), bool)
    rows: dict[str, dict[str, float]] = {}
    for row, keep, source in (("as read", every, read), ("whole utterance on every window", every, full),
                              ("windows holding the whole utterance", whole, read),
                              ("windows holding its beginning only", ~whole, read)):  # fmt: skip
        rows[row] = {"n": int(keep.sum())}
        for task, (_, y) in targets.items():
            rows[row][task] = 100 * weighted_f1(np.asarray(y)[keep], source[task][keep])
    return rows


def _print(name: str, rows: dict[str, dict[str, float]]) -> None:
    print(name)
    for row, r in rows.items():
        print(f"  {row:38s} {r['n']:5d} windows  emotion wF1 {r['emotion']:5.1f}  sentiment wF1 {r['sentiment']:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--baseline", choices=("majority", "tfidf"), help="also a reference predictor's rows")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    if not args.checkpoints and not args.baseline:
        parser.error("give a checkpoint or --baseline")
    for path in args.checkpoints:
        _print(path, ceiling(load_checkpoint(path)[0], args.data_root, args.split))
    if args.baseline:
        _print(f"{args.baseline} baseline", baseline_ceiling(args.baseline, args.data_root, args.split))


if __name__ == "__main__":
    main()
