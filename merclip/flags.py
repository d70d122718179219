"""The argparse pieces the command lines share: the project's one-line error shape, value types that refuse a
bad value with a clear reason, and the flag groups several commands take (config, model, bundle, precision,
speech, protocol, training)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from merclip.config import MAX_TEACHER_RUNS

# What train/ applies where neither the config file (a key it leaves unset) nor a flag says:
# DATASET_DEFAULTS (train/splits.py), RANDOM_INIT_LR (train/training.py) and ablate's SYNTHETIC_ABLATION
# (tests/test_ux_train.py keeps these equal). Written out so that --help need not import the training code.
SYNTHETIC_TRAIN = {"epochs": 6, "frames": 2}


SYNTHETIC_ABLATE = {"epochs": 3, "frames": 1}


def _training_epilog(synthetic: dict) -> str:
    frames = f"{synthetic['frames']} frame" + ("s" if synthetic["frames"] != 1 else "")
    return f"""\
defaults that depend on the dataset and the model: a setting that the config file leaves
unset and that no flag gives takes the dataset's own value (one written out is used as written)
  synthetic  {synthetic["epochs"]} epochs, lr 1e-3, clips of {frames} (a small model trained from scratch; its
             labels are exact: no label smoothing)
  mosi       lr 2.2e-5, batch 8 (the paper's MOSI recipe)
  meld       its 7 emotions and 3 sentiments, single-label emotion; with our recipe, five
             teachers trained first (attending pooled vectors: train.teacher_attend) and the
             lr falling to 0 along a cosine (train.lr_schedule)
otherwise random weights (--model tiny, or --weights random) train at lr 5e-4 (the paper's
8e-6 is for fine-tuning pretrained CLIP). A run's first line prints the values it uses.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error shape: one line ``error: ...`` on stderr, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _one_line(text: str) -> str:
    """Control characters (a newline in a file name...) written as escapes: a message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _int_at_least(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _number(lo: float = 0.0, strict: bool = True, hi: float | None = None) -> Callable[[str], float]:
    """A finite float ``> lo`` (``>= lo`` when not strict) and ``<= hi``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < lo or (strict and value == lo) or (hi is not None and value > hi):
            span = f"{'>' if strict else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
            raise argparse.ArgumentTypeError(f"must be {span}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def _text(text: str) -> str:
    """A name or path: an empty one is a mistake (``--source ""`` would silently mean the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


TEXT = _text


def _counts(text: str) -> tuple[int, ...]:
    """``4`` or ``1,4,16``: positive counts."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts such as 4 or 1,4,16, got {text!r}") from None
    if not counts or min(counts) < 1 or max(counts) > 256:
        raise argparse.ArgumentTypeError(f"counts must be from 1 to 256, got {text!r}")
    return counts


def _checkpoints(text: str) -> tuple[str, ...]:
    """``A.safetensors,B.safetensors``: one or more paths (whether they exist is checked when they load)."""
    paths = tuple(part.strip() for part in text.split(","))
    if any(not path for path in paths):
        raise argparse.ArgumentTypeError(f"expected paths separated by commas, got {text!r}")
    return paths


def _teachers(text: str) -> int | tuple[str, ...]:
    """``--teachers``: a count of teachers to train first (``8``; ``0``: none), or trained checkpoints (``A,B``)."""
    if text.strip().isdigit():
        count = int(text)
        if count > MAX_TEACHER_RUNS:
            raise argparse.ArgumentTypeError(
                f"a count of teachers to train must be 0 to {MAX_TEACHER_RUNS}, got {count}"
            )
        return count
    return _checkpoints(text)


POSITIVE = _int_at_least(1)
FRAMES = _int_at_least(1, 64)


PROVIDER_CHOICES = ("auto", "tensorrt", "cuda", "openvino", "cpu")
PROVIDERS_HELP = ("what runs the model: auto (a GPU through onnxruntime, else OpenVINO bf16 on CPUs with AMX or "
                  "AVX-512-BF16 once it agrees with fp32, else onnxruntime's CPU provider), tensorrt, cuda, "
                  "openvino, or cpu (onnxruntime's CPU provider); default: runtime.providers")  # fmt: skip
PRECISION_HELP = ("what the model computes in: auto (the fastest this CPU and bundle allow that agrees with fp32), "
                  "fp32, bf16 (OpenVINO, AMX / AVX-512-BF16), int8 (a bundle exported at int8; with --model it is "
                  "exported so); default: runtime.precision")  # fmt: skip


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=TEXT,
        help="config file (default: ./config.toml if present, else the packaged defaults)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="ARCH", type=TEXT, help="open_clip architecture (ViT-B-32, ...) or 'tiny'")
    parser.add_argument(
        "--weights", metavar="W", type=TEXT, help="pretrained tag (openai), local weights file, or 'random'"
    )
    parser.add_argument(
        "--variant",
        choices=("full", "no_cmd", "no_le", "concat_fc"),
        help="model variant: the paper's model or an ablation (Table 4, concat+FC baseline)",
    )
    parser.add_argument("--modalities", metavar="ORDER", type=TEXT, help="modalities and fusion order, e.g. LVA, VL, A")


def _bundle_flags(parser: argparse.ArgumentParser, bundle_help: str = "run this exported bundle") -> None:
    """Which model runs, and on what: an exported bundle, or an architecture exported to the cache once
    (merclip-live, rescore, serve)."""
    parser.add_argument("--bundle", metavar="DIR", type=TEXT, help=bundle_help)
    parser.add_argument(
        "--model",
        metavar="ARCH",
        type=TEXT,
        help="or: this architecture, exported to the cache once and then run ('tiny' works offline)",
    )
    parser.add_argument(
        "--weights", metavar="W", type=TEXT, help="with --model: pretrained tag, local file, or 'random'"
    )
    parser.add_argument("--providers", choices=PROVIDER_CHOICES, help=PROVIDERS_HELP)


def _precision_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), help=PRECISION_HELP)


def _asr_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--asr-model", metavar="M", type=TEXT, help="Whisper size name or local CTranslate2 folder")
    parser.add_argument("--no-asr", action="store_true", help="do not transcribe (no language modality)")


def _protocol_flags(parser: argparse.ArgumentParser, verb: str) -> None:
    """What eval scores and calibrate fits on: the monitor's windows or whole clips (eval, calibrate)."""
    parser.add_argument(
        "--protocol",
        choices=("windows", "clips"),
        help=f"{verb} the readings the monitor shows: each clip cut into its windows as merclip-live cuts a stream "
        "(the default for a checkpoint that records how it is read: every one trained by this version, --recipe "
        "paper too; DESIGN §7), or whole clips (the paper's tables; the default for older checkpoints, whose windows, "
        "asked for with --protocol windows, are read as their bundle reads them: as [capture] asks, the utterance so "
        "far for context = auto)",
    )
    parser.add_argument(
        "--context",
        choices=("window", "utterance"),
        help="with --protocol windows: read each window with this reading context instead of the checkpoint's "
        "(to measure the choice; the monitor always uses the model's)",
    )


def _training_flags(parser: argparse.ArgumentParser, synthetic: dict) -> None:
    """Optimisation flags shared by `train` and `ablate` (each ablation row is one training run); ``synthetic``:
    the epochs that command trains on the synthetic set."""
    parser.add_argument("--epochs", type=POSITIVE, help="training epochs (default: train.epochs, the paper's 20; "
                        f"synthetic: {synthetic['epochs']})")  # fmt: skip
    parser.add_argument("--batch-size", type=POSITIVE, help="batch size (default: train.batch_size, the paper's 16; "
                        "mosi: 8)")  # fmt: skip
    parser.add_argument("--lr", type=_number(0.0, hi=1.0), help="AdamW learning rate (default: train.lr, the paper's "
                        "8e-6; mosi: 2.2e-5; synthetic: 1e-3; random weights, e.g. --model tiny: 5e-4)")  # fmt: skip
    parser.add_argument("--frames", type=FRAMES, help="frames the model reads: per window with our recipe (default: "
                        "capture.frames_per_window, recorded in the checkpoint; a prepared cache must hold as many "
                        "per window: prepare with capture.frames_per_window = N), per clip with --recipe paper "
                        "(always 12)")  # fmt: skip
    parser.add_argument("--seed", type=_int_at_least(0, 2**32 - 1), help="random seed")
