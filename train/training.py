"""`merclip train` (and `torchrun -m merclip.train`): the run's settings from the config, the dataset and the
flags; its --out folder locked to one run; the model built and the loop (loop.py) started."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from rich.console import Console

from merclip.config import Config, load_config, override, weights_flag
from merclip.errors import MerClipError

from .outputs import _short
from .splits import _cache_dir, _check_splits, _check_task_data, _datasets, _with_dataset_defaults

RANDOM_INIT_LR = 5e-4
console = Console(stderr=True, soft_wrap=True)


# The paper's recipe (supp. Alg. 1, §4.3) beside ours: what `--recipe paper` pins in the model and data.
PAPER_RECIPE = {"model": {"attend": "pooled"}, "labels": {"prompt_context": 8}, "train": {"frames": 12}}


# Teachers a run of our recipe trains first where that was measured to read the monitor's windows better
# (RESULTS.md, "The default chain since 2026-12-07"): MELD, +1.0 / +1.0 wF1 on windows for six trainings.
TEACHERS_BY_DEFAULT = {"meld": 5}
# How those teachers' decoders attend where that was measured to teach better (RESULTS.md, "The teachers
# attend one pooled vector"): MELD, pooled — five such runs' mean reads windows better than five token
# readers', and the run they teach (attending as model.attend says) +0.4 / +0.2 wF1 over six seeds.
TEACHER_ATTEND_BY_DEFAULT = {"meld": "pooled"}
# Where a run of our recipe lets its lr fall along a cosine by default (train.lr_schedule = "auto"), as measured
# on the monitor's windows (RESULTS.md, "The learning rate falls along a cosine"): MELD, teachers and taught run.
COSINE_BY_DEFAULT = ("meld",)


def train_config(args, taught_default: bool = True) -> Config:
    """The run's settings: the config, then the flags, the dataset's and recipe's defaults.
    ``taught_default``: whether the dataset's default teachers apply (not to `merclip ablate`'s rows)."""
    cfg = load_config(args.config)
    explicit = {k: v for k, v in {"lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size,
                                  "frames": args.frames}.items() if v is not None}  # fmt: skip
    weights = weights_flag(args.model, args.weights)
    teachers = getattr(args, "teachers", None)
    runs = str(teachers) if isinstance(teachers, int) else None  # --teachers N: trained by this run first
    cfg = override(
        cfg,
        model={"arch": args.model, "weights": weights, "variant": args.variant, "modalities": args.modalities},
        labels={"emotion": args.emotion_labels},
        train={"dataset": args.dataset, "data_root": args.data_root, "task": args.task, "seed": args.seed,
               "out": args.out, "recipe": getattr(args, "recipe", None),
               "teachers": () if runs is not None else teachers, "teacher_runs": runs,
               "allow_partial": True if getattr(args, "allow_partial", False) else None,
               **explicit},
    )  # fmt: skip
    cfg = _with_dataset_defaults(cfg, cfg.train.dataset)  # after the flags: what they set is asked
    if cfg.train.recipe == "paper":
        if "frames" in explicit and explicit["frames"] != 12:
            raise MerClipError("--recipe paper samples 12 frames per clip (§4.3): leave --frames out")
        cfg = override(cfg, **PAPER_RECIPE)
    elif "frames" in explicit:  # our recipe reads the monitor's windows: --frames is a window's frame count
        cfg = override(cfg, capture={"frames_per_window": explicit["frames"]})
    if cfg.model.weights == "random" and "lr" not in cfg.asked("train"):
        # 8e-6 is the paper's lr for fine-tuning pretrained CLIP; from scratch it would barely move.
        cfg = override(cfg, train={"lr": RANDOM_INIT_LR})
    if cfg.train.lr_schedule == "auto":  # resolved here: the teachers trained first inherit it, records say it
        cosine = cfg.train.recipe == "merclip" and cfg.train.dataset in COSINE_BY_DEFAULT
        cfg = override(cfg, train={"lr_schedule": "cosine" if cosine else "constant"})
    if cfg.train.teacher_runs == "auto":  # resolved here: the run, its teachers and its record say the count
        taught = taught_default and cfg.train.recipe == "merclip" and not cfg.train.teachers
        runs = TEACHERS_BY_DEFAULT.get(cfg.train.dataset, 0) if taught else 0
        if runs and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # teachers train in one process (below)
            if int(os.environ.get("RANK", "0")) == 0:
                console.print(f"notice: {cfg.train.dataset}'s runs are taught by {runs} teachers trained first, "
                              "which torchrun does not do: this run trains alone (--teachers CKPT,... to teach "
                              "it)", style="yellow", markup=False, highlight=False)  # fmt: skip
            runs = 0
        cfg = override(cfg, train={"teacher_runs": str(runs)})
    if cfg.train.teacher_attend == "auto":  # resolved here too: a teacher's record says how it attends
        attend = TEACHER_ATTEND_BY_DEFAULT.get(cfg.train.dataset, cfg.model.attend)
        cfg = override(cfg, train={"teacher_attend": attend})
    return cfg


def _trained_face(mcfg, cfg: Config):
    """The model records the face crop of the pictures it trains on: the prepared cache's, whatever
    ``capture.face`` says now (a difference is noted)."""
    from dataclasses import replace

    from .cache import read_face

    cache = _cache_dir(cfg)
    if not (cache / "index.jsonl").is_file():  # text only: no pictures; the configured setting is recorded
        return mcfg
    face = read_face(cache)
    asked = cfg.capture.face
    if asked != "auto" and asked != face.mode:
        console.print(f"notice: capture.face = {asked!r}, but {cache} was prepared with {face.describe()}; "
                      "training on the cache as prepared (run `merclip prepare` again to change it)")  # fmt: skip
    return replace(mcfg, face=face.mode, face_margin=face.margin)


def cmd_train(args) -> int:
    cfg = train_config(args)
    out = Path(cfg.train.out).expanduser()
    if out.exists() and not out.is_dir():
        raise MerClipError(f"--out {out} is a file: training writes a folder of checkpoints and metrics")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 owns the folder
        if not args.resume and any((out / name).exists() for name in RUN_FILES):
            raise MerClipError(f"{out} already holds a training run: pass --resume to continue it, "
                               "or choose another --out")  # fmt: skip
        with _run_lock(out):
            return _train(args, _taught_by_own_teachers(cfg, out), out)
    return _train(args, _taught_by_own_teachers(cfg, out), out)


# A folder holding any of these is a training run: a new run there would replace its model.
RUN_FILES = ("best.safetensors", "last.safetensors", "metrics.json")


LOCK_NAME = ".train.lock"


@contextlib.contextmanager
def _run_lock(out: Path):
    """One ``merclip train`` per --out folder: a lock file holding the owner's pid (a dead owner's lock is
    taken over, so a killed run never blocks the folder)."""
    from merclip.stream.cache import pid_alive

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MerClipError(f"--out {_short(str(out))} cannot be created: {err.strerror}") from None
    lock = out / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and pid_alive(owner):
                raise MerClipError(f"another merclip train (pid {owner}) is writing to {out}: wait for it, "
                                   "or choose another --out") from None  # fmt: skip
            lock.unlink(missing_ok=True)  # left by a run that was killed
        except OSError as err:
            raise MerClipError(f"--out {_short(str(out))} is not writable: {err.strerror}") from None
    else:
        raise MerClipError(f"cannot lock {out} for training (another run started at the same moment?)")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


TEACHERS_DIR = "teachers"
# What a teacher trained by the run shares with it: everything that shapes a run's model (the folder, the
# seed and the teaching itself aside). A teacher folder trained otherwise is refused, not silently reused.
TEACHER_SECTIONS = ("model", "labels", "capture", "train")
NOT_SHARED = ("train.out", "train.seed", "train.teachers", "train.teacher_runs", "train.num_workers")


def _taught_by_own_teachers(cfg: Config, out: Path) -> Config:
    """``--teachers N``: N untaught runs of ``cfg`` (seeds seed+1 .. seed+N) trained first in OUT/teachers/seed-K
    (a finished one is reused, an interrupted one continued); returns ``cfg`` taught by their best epochs."""
    import json

    n = int(cfg.train.teacher_runs)
    if not n:
        return cfg
    if cfg.train.recipe != "merclip":
        raise MerClipError("--recipe paper trains on the paper's plain loss: --teachers is for recipe merclip")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MerClipError("--teachers N trains its teachers in one process: under torchrun, train them "
                           "first (one torchrun each, --seed 1, 2, ...) and pass their best.safetensors")  # fmt: skip
    seeds = f"{cfg.train.seed + 1}" + (f" to {cfg.train.seed + n}" if n > 1 else "")
    attend = cfg.train.teacher_attend  # resolved by train_config
    how = "one pooled vector per modality" if attend == "pooled" else "token sequences"
    console.print(f"{n} teacher{'s' if n > 1 else ''} first (seed{'s' if n > 1 else ''} {seeds}, attending {how}), "
                  f"then the run taught by them in {out}; --teachers 0 trains this one run alone "
                  "(RESULTS.md, \"Several runs\")", markup=False, highlight=False)  # fmt: skip
    settings = json.loads(json.dumps(_shared_settings(cfg)))  # as a record reads back
    paths = []
    for k in range(1, n + 1):
        seed = cfg.train.seed + k
        folder = out / TEACHERS_DIR / f"seed-{seed}"
        record = folder / "teacher.json"
        if record.is_file():
            theirs = json.loads(record.read_text(encoding="utf-8"))
            differ = sorted(key for key in settings.keys() | theirs.keys() if settings.get(key) != theirs.get(key))
            if differ:  # a finished or interrupted teacher of other settings: neither reused nor continued
                shown = ", ".join(differ[:4]) + (", ..." if len(differ) > 4 else "")
                raise MerClipError(f"{folder} holds a teacher trained with other settings ({shown}): remove it, "
                                   "or choose another --out")  # fmt: skip
        elif any((folder / name).exists() for name in RUN_FILES):
            raise MerClipError(f"{folder} holds a training run this run did not train as a teacher: remove it, "
                               "or choose another --out")  # fmt: skip
        done = (folder / "metrics.json").is_file() and (folder / "best.safetensors").is_file()
        if done:
            console.print(f"teacher {k} of {n} (seed {seed}): trained already in {folder}, used as it is")
        else:
            resume = (folder / "last.safetensors").is_file()
            console.print(f"teacher {k} of {n} (seed {seed}){', continued' if resume else ''} -> {folder}")
            folder.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(settings, indent=1), encoding="utf-8")
            teacher = override(cfg, model={"attend": attend}, train={"seed": seed, "out": str(folder),
                                                                     "teacher_runs": "0"})  # fmt: skip
            _train(argparse.Namespace(resume=resume), teacher, folder)
        paths.append(str(folder / "best.safetensors"))
    console.print(f"the taught run, by the {n} teacher{'s' if n > 1 else ''} above -> {out}")
    return override(cfg, train={"teachers": tuple(paths), "teacher_runs": "0"})


def _shared_settings(cfg: Config) -> dict:
    from dataclasses import asdict

    flat = {f"{section}.{k}": v for section in TEACHER_SECTIONS for k, v in asdict(getattr(cfg, section)).items()}
    return {k: v for k, v in flat.items() if k not in NOT_SHARED}


def new_run(cfg: Config, setting, task: str, resume: bool = False):
    """(a new model, its run options) for a training run of ``cfg`` read as ``setting``: what `merclip train`
    and each row of `merclip ablate` train, built one way so that a row honours the whole [train] table."""
    from dataclasses import replace

    import torch
    from merclip.model import build_model
    from merclip.model.config import model_config

    from .loop import RunOptions

    torch.manual_seed(cfg.train.seed)
    model = build_model(replace(_trained_face(model_config(cfg), cfg), reading=setting), weights=cfg.model.weights)
    t = cfg.train
    opts = RunOptions(out=t.out, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                      grad_clip=t.grad_clip, amp=t.amp, seed=t.seed, task=task, recipe=t.recipe,
                      num_workers=t.num_workers, label_smoothing=t.label_smoothing, teachers=t.teachers,
                      distill_weight=t.distill_weight, distill_temperature=t.distill_temperature,
                      lr_schedule=t.lr_schedule, threshold=cfg.labels.emotion_threshold, resume=resume)  # fmt: skip
    return model, opts


def _train(args, cfg: Config, out: Path) -> int:
    from .loop import resolve_task, train
    from .windows import use_samples

    task = resolve_task(cfg.train.task, cfg.train.dataset)
    train_ds, valid_ds = _datasets(cfg, ("train", "valid"))
    if len(valid_ds) == 0:
        raise MerClipError("the dataset has no validation split")
    _check_task_data(cfg, task, train_ds.info)
    _check_splits(cfg, (train_ds, valid_ds), train_ds.info)
    clips = (len(train_ds), len(valid_ds))
    setting, samples = use_samples(cfg, train_ds, valid_ds)
    model, opts = new_run(cfg, setting, task, resume=args.resume)
    t = cfg.train
    schedule = " falling to 0 along a cosine" if opts.lr_schedule == "cosine" else ""
    console.print(
        f"training {cfg.model.arch} ({cfg.model.variant}, {cfg.model.modalities}, task {task}, recipe {t.recipe}) "
        f"on {t.dataset}: {clips[0]} train / {clips[1]} valid clips as {samples} ({len(train_ds)} / "
        f"{len(valid_ds)} samples), read as {setting.describe()}; lr {t.lr}{schedule}, {t.epochs} epochs -> {t.out}"
    )
    if abs(setting.window_s - model.cfg.mel.segment_s) > 1e-9:  # said now, not after the run
        console.print(f"notice: read in {setting.window_s:g}-s windows, this model trains and scores (merclip eval) "
                      f"but cannot be exported: a bundle reads {model.cfg.mel.segment_s:g}-s windows, the audio "
                      "encoder's segment (capture.window_s)",
                      style="yellow", markup=False, highlight=False)  # fmt: skip
    summary = train(model, train_ds, valid_ds, opts)
    if summary:
        console.print(
            f"best validation {summary['selected_by']} {summary['best'][summary['selected_by']]:.4f} at epoch "
            f"{summary['best_epoch']}; "
            f"{Path(t.out) / 'metrics.json'}"
        )
    return 0
