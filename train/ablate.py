"""`merclip ablate`: the paper's Tables 3 and 4 in one command, ours beside the paper's numbers.

Table 3: the decoder's inputs (every modality subset, every fusion order the paper lists); Table 4: w/ and
w/o CMD and LE. Both are sentiment runs (ACC2, F1 on the test split), as in the paper. Each row is one
`merclip train` + scoring with the same data, seed and recipe; only the variant or modalities change.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console
from rich.table import Table

from merclip.errors import MerClipError

# (modalities, paper ACC2, paper F1) — Table 3, CMU-MOSEI
TABLE3 = [("V", 74.7, 73.8), ("A", 70.9, 69.1), ("L", 83.7, 83.6), ("VA", 74.6, 74.4), ("AV", 75.0, 73.9),
          ("AL", 84.4, 84.4), ("LA", 84.5, 84.6), ("VL", 84.7, 84.5), ("LV", 84.4, 84.4), ("VAL", 84.5, 84.3),
          ("AVL", 84.8, 84.7), ("ALV", 84.6, 84.5), ("LAV", 85.0, 84.7), ("VLA", 85.0, 84.8),
          ("LVA", 85.3, 85.1)]  # fmt: skip
# (row, variant, paper ACC2, paper F1) — Table 4, CMU-MOSEI
TABLE4 = [("w/o CMD, LE", "concat_fc", 81.1, 80.5), ("w/o CMD — w LE", "no_cmd", 85.1, 84.7),
          ("w CMD — w/o LE", "no_le", 84.4, 84.1), ("MER-CLIP (full)", "full", 85.3, 85.1)]  # fmt: skip
# The synthetic set for the ablation: the label shows in the words only (the paper finds language the
# strongest modality), so a row without L must fall to chance. Small, so 18 runs fit a few CPU minutes.
SYNTHETIC_ABLATION = {"clips": 160, "informative": "L", "epochs": 3, "frames": 1}


def _run(args, out: Path, variant: str, modalities: str) -> dict:
    """Train one row and score it on the test split; returns the test metrics."""
    import torch
    from merclip.model import build_prompts, load_checkpoint
    from merclip.model.tokenizer import ClipTokenizer
    from torch.utils.data import DataLoader

    from .data import Collate
    from .loop import evaluate, train
    from .splits import _check_splits, _datasets
    from .training import new_run, train_config
    from .windows import use_samples, window_entries

    row = SimpleNamespace(**{**vars(args), "variant": variant, "modalities": modalities, "task": "sentiment",
                             "out": str(out), "emotion_labels": None, "seed": args.seed})  # fmt: skip
    cfg = train_config(row, taught_default=False)
    if cfg.train.teacher_runs != "0":  # a row's teachers would be rows of their own: six trainings a row
        raise MerClipError("merclip ablate trains its rows untaught: train.teacher_runs is for merclip train")
    train_ds, valid_ds, test_ds = _datasets(cfg, ("train", "valid", "test"))
    partial = _check_splits(cfg, (train_ds, valid_ds, test_ds), train_ds.info)
    setting, _ = use_samples(cfg, train_ds, valid_ds)  # what the recipe trains on, as `merclip train` does
    model, opts = new_run(cfg, setting, "sentiment")
    train(model, train_ds, valid_ds, opts)
    best, _ = load_checkpoint(out / "best.safetensors")
    tok = ClipTokenizer.default(best.cfg.text_context_length)
    prompts = build_prompts(best.cfg, tok) if best.cfg.uses_label_encoder else None
    collate = Collate(tok, best.arch.image_mean, best.arch.image_std, False)
    scores = {}
    clips = list(test_ds.entries)
    for protocol in ("clips", "windows"):  # whole clips (the paper's tables) and the monitor's readings
        test_ds.entries = clips if protocol == "clips" else window_entries(clips, setting)
        loader = DataLoader(test_ds, batch_size=32, collate_fn=collate)
        scores[protocol] = evaluate(best, loader, prompts, torch.device("cpu"), "sentiment",
                                    cfg.labels.emotion_threshold) | {"n": len(test_ds)}  # fmt: skip
    return scores["clips"] | {"windows": scores["windows"], "partial": bool(partial)}


def cmd_ablate(args) -> int:
    from .synthetic import generate

    console = Console(stderr=True, soft_wrap=True)
    out = Path(args.out or "runs/ablate").expanduser()
    out.mkdir(parents=True, exist_ok=True)
    base = {"config": args.config, "model": args.model, "weights": args.weights, "dataset": args.dataset,
            "data_root": args.data_root, "recipe": args.recipe, "allow_partial": args.allow_partial,
            "lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size, "frames": args.frames,
            "seed": args.seed or 0}  # fmt: skip
    if args.dataset == "synthetic":
        data = Path(args.data_root or out / "synthetic-L").expanduser()
        if not (data / "index.jsonl").is_file():
            s = SYNTHETIC_ABLATION
            from merclip.config import load_config

            from .splits import _cache_reading
            from .training import PAPER_RECIPE

            reading = _cache_reading(load_config(args.config))
            if args.recipe == "paper":  # its model reads its 12 frames in each window too
                reading = replace(reading, frames_per_window=PAPER_RECIPE["train"]["frames"])
            elif args.frames:  # ours reads --frames per window
                reading = replace(reading, frames_per_window=args.frames)
            generate(data, s["clips"], informative=s["informative"], frames=s["frames"], reading=reading)
        # the synthetic clips' frame count is the data's, not a reading's: not passed as if asked (--recipe
        # paper samples its own 12 frames, §4.3; ours reads capture.frames_per_window per window)
        base |= {"data_root": str(data), "epochs": args.epochs or SYNTHETIC_ABLATION["epochs"], "frames": args.frames}
    rows = [("t3", mods, "full", mods, p_acc, p_f1) for mods, p_acc, p_f1 in TABLE3]
    rows += [("t4", name, variant, "LVA", p_acc, p_f1) for name, variant, p_acc, p_f1 in TABLE4]
    if args.rows:  # a subset: Table 3 rows by modalities (LVA, VL, ...), Table 4 rows by variant
        wanted = {r.strip() for r in args.rows.split(",") if r.strip()}
        known = {r[1] for r in rows if r[0] == "t3"} | {r[2] for r in rows if r[0] == "t4"}
        if not wanted <= known:
            raise MerClipError(
                f"--rows: unknown {', '.join(sorted(wanted - known))} (known: {', '.join(sorted(known))})"
            )
        rows = [r for r in rows if (r[1] if r[0] == "t3" else r[2]) in wanted]
    results: dict = {}
    for i, (_table, name, variant, mods, *_) in enumerate(rows, 1):
        key = (variant, mods)
        if key not in results:
            console.print(f"[{i}/{len(rows)}] {name} ({variant}, {mods})")
            results[key] = _run(SimpleNamespace(**base), out / f"{variant}-{mods}", variant, mods)
    partial = any(r["partial"] for r in results.values())
    recipe = args.recipe or "merclip"
    title = f"{args.dataset}, recipe {recipe}, test split" + (", partial" if partial else "")
    view = Console()
    for table, caption in (("t3", "Table 3 — decoder inputs (sentiment)"), ("t4", "Table 4 — CMD and LE")):
        t = Table(title=f"{caption} — {title}")
        for col in ("Modalities" if table == "t3" else "Combinations", "paper ACC2(%)", "paper F1(%)",
                    "clips ACC2(%)", "clips F1(%)", "windows ACC2(%)", "windows F1(%)"):  # fmt: skip
            t.add_column(col, justify="left" if col in ("Modalities", "Combinations") else "right")
        for tab, name, variant, mods, p_acc, p_f1 in rows:
            if tab == table:
                m, w = results[(variant, mods)], results[(variant, mods)]["windows"]
                t.add_row(name, f"{p_acc:.1f}", f"{p_f1:.1f}", f"{100 * m['acc2']:.1f}", f"{100 * m['f1']:.1f}",
                          f"{100 * w['acc2']:.1f}", f"{100 * w['f1']:.1f}")  # fmt: skip
        view.print(t)
    view.print("clips: each test clip read whole (the paper's protocol); windows: each clip cut into the 2-s "
               "windows merclip-live reads, read as the monitor reads them (RESULTS.md)")  # fmt: skip
    summary = [{"table": tab, "row": name, "variant": v, "modalities": mo, "paper_acc2": pa, "paper_f1": pf,
                "acc2": results[(v, mo)]["acc2"], "f1": results[(v, mo)]["f1"],
                "windows_acc2": results[(v, mo)]["windows"]["acc2"], "windows_f1": results[(v, mo)]["windows"]["f1"]}
               for tab, name, v, mo, pa, pf in rows]  # fmt: skip
    (out / "ablation.json").write_text(json.dumps({"recipe": recipe, "dataset": args.dataset, "partial": partial,
                                                   "rows": summary}, indent=2), encoding="utf-8")  # fmt: skip
    return 0
