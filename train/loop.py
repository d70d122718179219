"""The training loop: AdamW with the paper's defaults, BCE (multi-label emotion) or CE (single-label),
CE for sentiment, mixed precision on CUDA, gradient clipping, a NaN guard, atomic checkpoints every epoch
plus the best by validation, exact resume, DDP under torchrun, and metrics files.

Repeatability: every epoch reseeds torch with ``seed + epoch`` and draws its sample order from that seed,
so a run resumed from an epoch checkpoint replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from merclip.model import MerClip, build_prompts, load_checkpoint, save_checkpoint
from merclip.model.tokenizer import ClipTokenizer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, DistributedSampler

from merclip.errors import MerClipError

from .data import IGNORE, ClipDataset, Collate
from .distill import TaughtTargets, load_teachers
from .losses import compute_loss, distill_loss
from .metrics import multilabel_metrics, sentiment_metrics, single_label_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    out: str
    epochs: int = 20
    batch_size: int = 16
    lr: float = 8e-6
    weight_decay: float = 1e-3
    grad_clip: float = 1.0
    amp: bool = True
    seed: int = 0
    task: str = "both"  # resolved: both | emotion | sentiment (see resolve_task)
    recipe: str = "merclip"  # merclip (our heads and optimiser groups) | paper (supp. Alg. 1, §4.3 exactly)
    label_smoothing: float = 0.0  # of the single-label cross-entropies; recipe merclip only
    teachers: tuple[str, ...] = ()  # checkpoints to distil from (recipe merclip)
    distill_weight: float = 0.8
    distill_temperature: float = 2.0
    lr_schedule: str = "constant"  # or "cosine": each group's lr falls to 0 over the run's steps
    num_workers: int = 0
    threshold: float = 0.6
    resume: bool = False


# ---- distributed helpers ----------------------------------------------------------------------------------
def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


RECIPES = ("merclip", "paper")
# The dataset's own task where the user asked for none: CMU-MOSI has sentiment scores only.
DATASET_TASKS = {"mosi": "sentiment"}


def resolve_task(task: str, dataset: str) -> str:
    """``auto`` -> the dataset's task (MOSI: sentiment; others: both heads)."""
    return DATASET_TASKS.get(dataset, "both") if task == "auto" else task


def selection_metric(task: str, metrics: dict) -> str:
    """The validation metric that picks ``best.safetensors``: ACC2 for sentiment runs (3-class accuracy
    where sentiment has a neutral class); for single-label emotion (MELD), the weighted F1 that dataset is
    reported in, of both heads when both train (accuracy rewards the majority class: on MELD's windows it
    picked epochs that read 70 % of them as neutral); the emotion accuracy (Table 1's first column) otherwise."""
    if task == "sentiment":
        return "acc2" if "acc2" in metrics else "sentiment_accuracy"
    if "mean_weighted_f1" in metrics and task == "both":
        return "mean_weighted_f1"
    if "weighted_f1" in metrics:
        return "weighted_f1"
    return "emotion_accuracy"


# ---- evaluation ----------------------------------------------------------------------------------------
def _forward(model, batch: dict, prompts, device):
    def dev(x):
        return None if x is None else x.to(device, non_blocking=True)

    return model(frames=dev(batch["frames"]), audio=dev(batch["audio"]), text=dev(batch["text"]),
                 prompts=prompts.to(device) if prompts is not None else None,
                 audio_lengths=dev(batch.get("audio_lengths")))  # fmt: skip


@torch.no_grad()
def evaluate(
    model: MerClip, loader: DataLoader, prompts, device, task: str, threshold: float, outputs: dict | None = None
) -> dict:
    """Metrics of ``model`` on ``loader``. ``threshold`` is the multi-label decision threshold on the raw
    sigmoid; with a calibrated model it is moved with the calibration, so the same labels pass. ``outputs``,
    when given, receives the logits and targets (for reliability diagrams and calibration fits)."""
    model.eval()
    emo_p, emo_t, emo_k, sent_p, sent_t, scores, losses, emo_z, sent_z = [], [], [], [], [], [], [], [], []
    for batch in loader:
        out = _forward(model, batch, prompts, device)
        losses.append(float(compute_loss(model, out, {k: v.to(device) if torch.is_tensor(v) else v
                                                       for k, v in batch.items()}, task)))  # fmt: skip
        emo_p.append(out.emotion_probs.float().cpu().numpy())
        emo_z.append(out.emotion_logits.float().cpu().numpy())
        emo_t.append(batch["emotion"].numpy())
        emo_k.append(batch["has_emotion"].numpy() if "has_emotion" in batch else np.ones(len(batch["emotion"]), bool))
        sent_p.append(out.sentiment_probs.float().cpu().numpy())
        sent_z.append(out.sentiment_logits.float().cpu().numpy())
        sent_t.append(batch["sentiment"].numpy())
        scores.append(batch["score"].numpy())
    probs, targets, annotated = np.concatenate(emo_p), np.concatenate(emo_t), np.concatenate(emo_k)
    emo_logits, sent_logits = np.concatenate(emo_z), np.concatenate(sent_z)
    metrics: dict = {"loss": float(np.mean(losses)) if losses else math.nan}
    multi = model.cfg.emotion_mode == "multi_label"
    cal = model.calibration
    emo_keep = (targets != IGNORE) if not multi else annotated
    # emotion metrics over annotated clips only; none (CMU-MOSI) = no emotion metrics at all
    if annotated.any():
        if not multi:
            keep = targets != IGNORE
            metrics.update(single_label_metrics(targets[keep], probs[keep].argmax(1)))
        else:
            metrics.update(multilabel_metrics(targets[annotated] > 0, probs[annotated] >= cal.map_threshold(threshold)))
        metrics["emotion_accuracy"] = metrics["accuracy"]
    s_probs, s_targets = np.concatenate(sent_p), np.concatenate(sent_t)
    labels = list(model.cfg.sentiment_labels)
    if "neutral" in labels:
        keep = s_targets != IGNORE
        sent = single_label_metrics(s_targets[keep], s_probs[keep].argmax(1))
        metrics.update({f"sentiment_{k}": v for k, v in sent.items()})
    else:
        pos = labels.index("positive") if "positive" in labels else 0
        sent = sentiment_metrics(np.concatenate(scores), s_probs[:, pos])
        metrics.update({"acc2": sent["acc2"], "f1": sent["f1"]})
    if task == "sentiment":
        metrics["accuracy"] = metrics.get("acc2", metrics.get("sentiment_accuracy", 0.0))
    if "weighted_f1" in metrics and "sentiment_weighted_f1" in metrics:
        metrics["mean_weighted_f1"] = 0.5 * (metrics["weighted_f1"] + metrics["sentiment_weighted_f1"])
    sent_keep = s_targets != IGNORE
    metrics.update(_calibration_metrics(emo_logits[emo_keep], targets[emo_keep], multi, sent_logits[sent_keep],
                                        s_targets[sent_keep], cal))  # fmt: skip
    if outputs is not None:
        outputs.update(emotion_logits=emo_logits[emo_keep], emotion_targets=targets[emo_keep], multi_label=multi,
                       sentiment_logits=sent_logits[sent_keep], sentiment_targets=s_targets[sent_keep])  # fmt: skip
    return metrics


def _calibration_metrics(emo_logits, emo_targets, multi: bool, sent_logits, sent_targets, cal) -> dict:
    """ECE (15 bins), Brier and NLL per task, of the calibrated probabilities and, when the model is
    calibrated, of the raw ones too (``*_uncalibrated``)."""
    from .calibration import calibrated, multi_label_calibration, single_label_calibration

    out: dict = {}
    settings = [("", cal)] + ([] if cal.identity else [("_uncalibrated", type(cal)())])
    for suffix, c in settings:
        if len(emo_targets):
            if multi:
                p = calibrated(emo_logits, True, c.emotion_scale, c.emotion_bias)
                m = multi_label_calibration(p, emo_targets)
            else:
                m = single_label_calibration(calibrated(emo_logits, False, c.emotion_scale), emo_targets.astype(int))
            out.update({f"emotion_{k}{suffix}": v for k, v in m.items() if k in ("ece", "brier", "nll", "confidence")})
        if len(sent_targets):
            m = single_label_calibration(calibrated(sent_logits, False, c.sentiment_scale), sent_targets.astype(int))
            out.update(
                {f"sentiment_{k}{suffix}": v for k, v in m.items() if k in ("ece", "brier", "nll", "confidence")}
            )
    return out


def cosine_factor(step: int, total: int) -> float:
    """The learning rate's share of its peak at ``step`` of ``total``: 1 at the first, falling along half a
    cosine to 0 after the last."""
    return 0.5 * (1 + math.cos(math.pi * step / total))


# ---- checkpoints --------------------------------------------------------------------------------------
def save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    """Optimizer state as tensors (safetensors) + scalars (JSON metadata): no pickling."""
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    meta = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state: dict = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for key, value in json.loads(meta["scalars"]).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


# ---- the run ------------------------------------------------------------------------------------------
def _loader(ds, batch, shuffle, seed, workers, collate):
    rank, world = _world()
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
    return DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate), sampler


def train(
    model: MerClip,
    train_ds: ClipDataset,
    valid_ds: ClipDataset,
    opts: RunOptions,
    tokenizer: ClipTokenizer | None = None,
) -> dict:
    init_distributed()
    rank, world = _world()
    out = Path(opts.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if opts.batch_size % world:
        raise MerClipError(f"batch size {opts.batch_size} must be divisible by the {world} processes")
    if len(train_ds) == 0:
        raise MerClipError("the training split is empty")
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    )
    tokenizer = tokenizer or ClipTokenizer.default(model.cfg.text_context_length)
    causal = model.text.attn_mask is not None  # trimming padding is exact only for a causal text tower
    prompts = build_prompts(model.cfg, tokenizer, trim=causal) if model.cfg.uses_label_encoder else None
    collate = Collate(tokenizer, model.arch.image_mean, model.arch.image_std,
                      model.cfg.emotion_mode == "single_label", trim=causal)  # fmt: skip
    if opts.recipe not in RECIPES:
        raise MerClipError(f"recipe must be one of {', '.join(RECIPES)}, got {opts.recipe!r}")
    if opts.task not in ("both", "emotion", "sentiment"):
        raise MerClipError(f"task must be both, emotion or sentiment, got {opts.task!r}")
    model.to(device)
    if opts.recipe == "paper":
        # supp. Alg. 1 / §4.3: the emotion head is the bare standardised similarity (gain fixed at 1) and
        # every trainable parameter is in one AdamW group at the paper's lr and weight decay.
        if model.cfg.emotion_mode == "multi_label":
            with torch.no_grad():
                model.emotion_log_scale.zero_()
            model.emotion_log_scale.requires_grad_(False)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": opts.lr,
                   "weight_decay": opts.weight_decay}]  # fmt: skip
    else:
        groups = model.parameter_groups(opts.lr, opts.weight_decay)
    opt = torch.optim.AdamW(groups)
    base_lrs = [group["lr"] for group in opt.param_groups]  # the schedule's peaks (a resumed run's too)
    smoothing = opts.label_smoothing if opts.recipe == "merclip" else 0.0  # the paper's loss is plain
    if opts.teachers and opts.recipe != "merclip":
        raise MerClipError("--recipe paper trains on the paper's plain loss: --teachers is for recipe merclip")
    multi = model.cfg.emotion_mode == "multi_label"
    teachers = None
    if opts.teachers:
        pairs = [
            (t, build_prompts(t.cfg, tokenizer, trim=causal) if t.cfg.uses_label_encoder else None)
            for t in load_teachers(opts.teachers, model, device)
        ]  # each with its own label prompts
        teachers = TaughtTargets(pairs, lambda t, batch, p: _forward(t, batch, p, device), multi,
                                 opts.distill_temperature, len(train_ds))  # fmt: skip
    start_epoch, history, best = 0, [], {"score": -math.inf, "epoch": -1, "metrics": {}}
    if opts.resume:
        start_epoch, history, best = _resume(model, opt, out)
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    use_amp = opts.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    train_loader, sampler = _loader(train_ds, opts.batch_size // world, True, opts.seed, opts.num_workers, collate)
    valid_loader = DataLoader(valid_ds, batch_size=opts.batch_size, collate_fn=collate, num_workers=opts.num_workers)
    columns = [
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} samples/s"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, disable=rank != 0, transient=False) as bar:
        for epoch in range(start_epoch, opts.epochs):
            torch.manual_seed(opts.seed + epoch)
            sampler.set_epoch(epoch)
            if hasattr(train_ds, "set_epoch"):
                train_ds.set_epoch(epoch, opts.seed)
            net.train()
            task = bar.add_task(
                "train", total=len(train_loader), epoch=f"{epoch + 1}/{opts.epochs}", loss=0.0, rate=0.0
            )
            started, seen, total_loss = time.perf_counter(), 0, 0.0
            for step, batch in enumerate(train_loader):
                if opts.lr_schedule == "cosine":
                    factor = cosine_factor(epoch * len(train_loader) + step, opts.epochs * len(train_loader))
                    for group, base in zip(opt.param_groups, base_lrs, strict=True):
                        group["lr"] = base * factor
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    outputs = _forward(net, batch, prompts, device)
                    loss = compute_loss(model, outputs, {k: v.to(device) if torch.is_tensor(v) else v
                                                         for k, v in batch.items()}, opts.task,
                                        smoothing)  # fmt: skip
                    if teachers is not None:
                        kd = distill_loss(outputs, teachers(batch, device), multi, opts.distill_temperature,
                                          opts.task)  # fmt: skip
                        loss = (1 - opts.distill_weight) * loss + opts.distill_weight * kd
                if not torch.isfinite(loss):
                    raise MerClipError(
                        f"loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}: stopped; the "
                        f"last good checkpoint is {out / 'last.safetensors'} (try a lower --lr)"
                    )
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if opts.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
                scaler.step(opt)
                scaler.update()
                if opts.recipe == "merclip":
                    with torch.no_grad():  # as CLIP does: a logit scale above 100 only sharpens into overflow
                        model.sentiment_log_scale.clamp_(max=math.log(100))
                seen += len(batch["sentiment"]) * world
                total_loss += loss.item()  # detached: float() on a graph tensor warns
                bar.update(task, advance=1, loss=total_loss / (step + 1), rate=seen / (time.perf_counter() - started))
            train_loss = total_loss / max(1, len(train_loader))
            if rank == 0:
                metrics = evaluate(model, valid_loader, prompts, device, opts.task, opts.threshold)
                row = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": time.perf_counter() - started}
                row["lr"] = opt.param_groups[0]["lr"]  # the network's, at the epoch's last step
                row |= {f"val_{k}": v for k, v in metrics.items()}
                history.append(row)
                key = selection_metric(opts.task, metrics)
                if key not in metrics:
                    raise MerClipError(f"the validation split has no {key.replace('_', ' ')} to select by "
                                       f"(task {opts.task}): no annotated clips")  # fmt: skip
                score = metrics[key]
                if score > best["score"]:
                    best = {"score": score, "epoch": epoch + 1, "metrics": metrics, "selected_by": key}
                _save_epoch(model, opt, out, epoch + 1, history, best, improved=best["epoch"] == epoch + 1)
                bar.console.print(
                    f"epoch {epoch + 1}: train loss {train_loss:.4f}, val loss {metrics['loss']:.4f}, "
                    f"val accuracy {metrics['accuracy']:.3f}"
                )
            if world > 1:
                dist.barrier()
    result = {}
    if rank == 0:
        result = _write_summary(out, history, best, opts)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _save_epoch(model, opt, out: Path, epoch: int, history: list, best: dict, improved: bool) -> None:
    extra = {"epoch": epoch, "history": history, "best": best}
    save_optimizer(opt, out / "last.optim.safetensors")
    save_checkpoint(model, out / "last.safetensors", extra=extra)  # written last: it marks the epoch done
    if improved:
        shutil.copyfile(out / "last.safetensors", out / "best.safetensors.tmp")
        os.replace(out / "best.safetensors.tmp", out / "best.safetensors")
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        columns = list(dict.fromkeys(key for row in history for key in row))  # a run resumed from an older version
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(history)


def _resume(model: MerClip, opt, out: Path):
    last = out / "last.safetensors"
    if not last.is_file():
        raise MerClipError(f"nothing to resume in {out}: no last.safetensors")
    saved, extra = load_checkpoint(last, expect=model.cfg)
    model.load_state_dict(saved.state_dict())
    load_optimizer(opt, out / "last.optim.safetensors")
    log.info("resuming %s after epoch %d", out, extra["epoch"])
    return extra["epoch"], extra["history"], extra["best"]


def _write_summary(out: Path, history: list, best: dict, opts: RunOptions) -> dict:
    final = {k[len("val_") :]: v for k, v in history[-1].items() if k.startswith("val_")} if history else {}
    summary = {
        "accuracy": best["metrics"].get("accuracy") if best["metrics"] else None,
        "best_epoch": best["epoch"],
        "task": opts.task,
        "recipe": opts.recipe,
        "selected_by": best.get("selected_by"),
        "best": best["metrics"],
        "final": final,
        "options": asdict(opts),
    }
    for key in ("weighted_f1", "acc2", "f1", "micro_f1"):
        if key in best["metrics"]:
            summary[key] = best["metrics"][key]
    (out / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plot_curves(history, out / "curves.png")
    return summary


def plot_curves(history: list, path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_l.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_l.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss")
    ax_l.legend()
    for key in ("val_accuracy", "val_micro_f1", "val_acc2", "val_weighted_f1"):
        if key in history[0]:
            ax_a.plot(epochs, [h[key] for h in history], label=key[4:])
    ax_a.set_xlabel("epoch")
    ax_a.set_ylim(0, 1)
    ax_a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
