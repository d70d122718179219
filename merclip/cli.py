"""Command-line entry points: ``merclip`` (config, prepare, train, eval, export, bench, report) and
``merclip-live`` (the monitor). Heavy imports happen inside the commands, so ``--help`` is instant and
the live path never imports torch unless it has to export a bundle first.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence

from merclip import __version__
from merclip.config import Config, load_config, override, to_toml
from merclip.errors import MerClipError

log = logging.getLogger("merclip")

LIVE_EPILOG = """\
examples:
  merclip-live --source sample --model tiny     built-in clip, a random tiny model, no camera needed
  merclip-live --camera 0                       webcam + default microphone, configured model
  merclip-live --camera 0 --log sessions/       ... and a CSV row per window
  merclip-live --camera http://PHONE:8080/video a phone-as-webcam app or IP camera (MJPEG or rtsp://)
  merclip-live --source talk.mp4 --fast --no-ui --log out.csv
keys: q or Ctrl-C ends the session and prints a summary.
exit codes: 0 readings made · 1 the session ran but made no reading · 2 an error you can fix (one line) ·
130 interrupted by Ctrl-C (143 by SIGTERM); the rows read until then are all in the log.
"""


SERVE_EPILOG = """\
examples:
  merclip serve --model tiny                       a service for this machine only: http://127.0.0.1:8000/merclip
  merclip serve --bundle bundle/ --host 0.0.0.0 --tls-cert server.pem --tls-key server.key --token-file token
                                                   reachable from other machines, encrypted, token required
  merclip serve --bundle bundle/ --num-gpus 0.25 --replicas 4   four replicas sharing one GPU
  ray start --head && merclip serve --address auto --bundle /shared/bundle   on a cluster (see README)
then on each camera machine:
  merclip-live --camera 0 --server https://HOST:8000/merclip --server-ca ca.pem --token-file token
A --host other than loopback needs TLS and a token (or --insecure, said at start and by merclip doctor);
README "Many streams" shows how to make the certificate. The token comes from a file or MERCLIP_TOKEN,
never from the command line. Ctrl-C or SIGTERM stops the service and the local Ray cluster it started
(exit 130 / 143).
"""


# What train.cli applies where neither the config file (a key left at its packaged value) nor a flag says:
# DATASET_DEFAULTS and RANDOM_INIT_LR there, and ablate's SYNTHETIC_ABLATION (tests/test_ux_train.py keeps
# these equal). Written out so that --help need not import the training code.
SYNTHETIC_TRAIN = {"epochs": 6, "frames": 2}
SYNTHETIC_ABLATE = {"epochs": 3, "frames": 1}


def _training_epilog(synthetic: dict) -> str:
    frames = f"{synthetic['frames']} frame" + ("s" if synthetic["frames"] != 1 else "")
    return f"""\
defaults that depend on the dataset and the model: a setting that the config file leaves at
its packaged value and that no flag gives takes the dataset's own value
  synthetic  {synthetic["epochs"]} epochs, lr 1e-3, {frames} (a small model trained from scratch)
  mosi       lr 2.2e-5, batch 8 (the paper's MOSI recipe)
  meld       its 7 emotions and 3 sentiments, single-label emotion
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
        "(default for a model trained for windows; DESIGN §7), or whole clips (default for other models)",
    )
    parser.add_argument(
        "--context",
        choices=("window", "utterance"),
        help="with --protocol windows: read each window with this reading context instead of the checkpoint's "
        "(to measure the choice; the monitor always uses the model's)",
    )


def _training_flags(parser: argparse.ArgumentParser, synthetic: dict) -> None:
    """Optimisation flags shared by `train` and `ablate` (each ablation row is one training run); ``synthetic``:
    the epochs and frames that command uses on the synthetic set."""
    parser.add_argument("--epochs", type=POSITIVE, help="training epochs (default: train.epochs, the paper's 20; "
                        f"synthetic: {synthetic['epochs']})")  # fmt: skip
    parser.add_argument("--batch-size", type=POSITIVE, help="batch size (default: train.batch_size, the paper's 16; "
                        "mosi: 8)")  # fmt: skip
    parser.add_argument("--lr", type=_number(0.0, hi=1.0), help="AdamW learning rate (default: train.lr, the paper's "
                        "8e-6; mosi: 2.2e-5; synthetic: 1e-3; random weights, e.g. --model tiny: 5e-4)")  # fmt: skip
    parser.add_argument("--frames", type=FRAMES, help="frames per clip (default: train.frames, the paper's 12; "
                        f"synthetic: {synthetic['frames']}; --recipe paper: always 12)")  # fmt: skip
    parser.add_argument("--seed", type=_int_at_least(0, 2**32 - 1), help="random seed")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="merclip",
        description="MER-CLIP Live: train, evaluate, export and "
        "benchmark multimodal emotion models. The live monitor is `merclip-live`.",
    )
    parser.add_argument("--version", action="version", version=f"merclip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("config", help="check the configuration and print the effective values")
    _common(p)

    p = sub.add_parser("prepare", help="decode a dataset once into a compact training cache")
    _common(p)
    p.add_argument("--dataset", choices=("synthetic", "manifest", "mosi", "mosei", "meld"), help="dataset kind")
    p.add_argument("--data-root", metavar="DIR", type=TEXT, help="dataset folder (manifest: the manifest file)")
    p.add_argument(
        "--cache-dir", metavar="DIR", type=TEXT, help="where the cache goes (default: DATA_ROOT/.merclip-cache)"
    )
    p.add_argument("--synthetic", metavar="N", type=POSITIVE, help="generate N synthetic clips into --cache-dir")
    p.add_argument(
        "--informative",
        default="LVA",
        metavar="MODS",
        help="synthetic: modalities that carry the label (others are noise), default LVA",
    )
    p.add_argument("--frames", type=FRAMES, help="frames sampled per clip (default: train.frames)")
    p.add_argument(
        "--seconds",
        type=_number(1.0, hi=60.0),
        default=2.0,
        help="synthetic: seconds per clip (default 2; longer clips make several of the monitor's windows)",
    )

    p = sub.add_parser(
        "train",
        help="train MER-CLIP (or an ablation) on a dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_training_epilog(SYNTHETIC_TRAIN),
    )
    _common(p)
    _model_flags(p)
    p.add_argument("--dataset", choices=("synthetic", "manifest", "mosi", "mosei", "meld"), help="dataset kind")
    p.add_argument("--data-root", metavar="DIR", type=TEXT, help="dataset folder")
    p.add_argument(
        "--task",
        choices=("auto", "both", "emotion", "sentiment"),
        help="which heads train and which metric picks best (auto: MOSI sentiment, else both)",
    )
    p.add_argument(
        "--recipe",
        choices=("merclip", "paper"),
        help="paper: the paper's head and optimiser exactly (gain 1, one AdamW group, pooled keys, 12 frames); "
        "merclip: ours (DESIGN §7)",
    )
    p.add_argument("--allow-partial", action="store_true", help="run on incomplete MOSI/MOSEI splits (tables say so)")
    _training_flags(p, SYNTHETIC_TRAIN)
    p.add_argument("--out", metavar="DIR", type=TEXT,
                   help="output folder for checkpoints and metrics; a folder that already holds a run is refused "
                        "unless --resume")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--emotion-labels", metavar="TEXT", nargs="+", help="emotion label texts (override config)")

    p = sub.add_parser("eval", help="evaluate a checkpoint; prints the paper-layout tables")
    _common(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="FILE", type=TEXT, help="a .safetensors checkpoint")
    what.add_argument(
        "--baseline",
        choices=("majority", "tfidf"),
        help="score a reference predictor instead (single-label text datasets such as MELD)",
    )
    p.add_argument("--dataset", choices=("synthetic", "manifest", "mosi", "mosei", "meld"), help="dataset kind")
    p.add_argument("--data-root", metavar="DIR", type=TEXT, help="dataset folder")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"), help="split (default: test)")
    p.add_argument(
        "--json",
        metavar="FILE",
        type=TEXT,
        help="also write the metrics as JSON (an existing file only if it is such a metrics file)",
    )
    p.add_argument("--allow-partial", action="store_true", help="score an incomplete MOSI/MOSEI split (marked partial)")
    p.add_argument(
        "--half",
        type=int,
        choices=(1, 2),
        help="score only alternate clips of the split (1st, 3rd, ... or 2nd, 4th, ...)",
    )
    _protocol_flags(p, "score")

    p = sub.add_parser("calibrate", help="fit temperature / Platt scaling on a split and store it in the checkpoint")
    _common(p)
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=TEXT, help="a .safetensors checkpoint")
    p.add_argument("--dataset", choices=("synthetic", "manifest", "mosi", "mosei", "meld"), help="dataset kind")
    p.add_argument("--data-root", metavar="DIR", type=TEXT, help="dataset folder")
    p.add_argument("--split", default="valid", choices=("train", "valid", "test"), help="split (default: valid = dev)")
    p.add_argument(
        "--half", type=int, choices=(1, 2), help="fit on alternate clips only (the other half stays held out)"
    )
    p.add_argument("--out", metavar="FILE", type=TEXT,
                   help="write the calibrated checkpoint here (default: in place); an existing file is replaced "
                        "only when it is a MER-CLIP checkpoint")  # fmt: skip
    p.add_argument("--allow-partial", action="store_true", help="use an incomplete MOSI/MOSEI split")
    _protocol_flags(p, "fit on")

    p = sub.add_parser(
        "ablate",
        help="the paper's Tables 3 and 4: train and score every ablation row",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_training_epilog(SYNTHETIC_ABLATE),
    )
    _common(p)
    p.add_argument("--model", metavar="ARCH", type=TEXT, help="open_clip architecture (ViT-B-32, ...) or 'tiny'")
    p.add_argument("--weights", metavar="W", type=TEXT, help="pretrained tag, local weights file, or 'random'")
    p.add_argument("--dataset", choices=("synthetic", "manifest", "mosi", "mosei", "meld"), help="dataset kind")
    p.add_argument("--data-root", metavar="DIR", type=TEXT, help="dataset folder (prepared)")
    p.add_argument("--recipe", choices=("merclip", "paper"), help="training recipe for every row")
    p.add_argument("--allow-partial", action="store_true", help="run on incomplete MOSI/MOSEI splits")
    _training_flags(p, SYNTHETIC_ABLATE)
    p.add_argument("--out", metavar="DIR", type=TEXT, help="folder for the runs and ablation.json (runs/ablate)")
    p.add_argument(
        "--rows",
        metavar="LIST",
        type=TEXT,
        help="only these rows, comma-separated: Table 3 by modalities (L,VL,LVA,...), Table 4 by variant "
        "(full,no_cmd,no_le,concat_fc); default all 19",
    )

    p = sub.add_parser("export", help="export a model to an ONNX bundle for merclip-live")
    _common(p)
    _model_flags(p)
    p.add_argument("--onnx", action="store_true", help="export ONNX graphs (the only format, kept for clarity)")
    p.add_argument("--out", metavar="DIR", type=TEXT, help="bundle folder (default: export.out)")
    p.add_argument("--checkpoint", metavar="FILE", type=TEXT, help="trained checkpoint (mode 'trained')")
    p.add_argument("--zero-shot", action="store_true", help="pretrained CLIP alone, scored against label prompts")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="weights precision (default fp32)")

    p = sub.add_parser("bench", help="measure per-stage latency, real-time factor, torch vs ONNX ratios")
    _common(p)
    p.add_argument(
        "--model", metavar="ARCH", type=TEXT, default="tiny", help="architecture with random weights (default tiny)"
    )
    p.add_argument("--checkpoint", metavar="FILE", type=TEXT,
                   help="time this trained checkpoint instead (its architecture; its bf16 agreement decides the "
                        "default runtime, as for merclip-live)")  # fmt: skip
    p.add_argument(
        "--asr-model",
        metavar="M",
        type=TEXT,
        help="Whisper: local CTranslate2 folder or size name (default: asr.model, tiny.en)",
    )
    p.add_argument(
        "--asr-mode",
        choices=("stream", "window-unpadded"),
        help="speech path timed end to end (default: asr.mode, stream)",
    )
    p.add_argument("--frames", type=FRAMES, help="frames per window (default: capture.frames_per_window)")
    p.add_argument("--windows", type=POSITIVE, default=5, help="windows timed per measurement (default 5)")
    p.add_argument(
        "--streams",
        type=_counts,
        default=(4,),
        metavar="N[,N...]",
        help="streams batched together for the throughput line (default 4); with --server, each count is a run",
    )
    p.add_argument("--providers", choices=PROVIDER_CHOICES, help=PROVIDERS_HELP)
    _precision_flag(p)
    p.add_argument(
        "--text-context", type=_int_at_least(8, 77), default=77, help="transcript token context (8..77, default 77)"
    )
    p.add_argument("--no-torch", action="store_true", help="skip the torch eager comparison")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 bundle")
    p.add_argument("--no-e2e", action="store_true", help="skip the real-time end-to-end run on the sample clip")
    p.add_argument(
        "--soak",
        type=_number(0.0, strict=False),
        default=0.0,
        metavar="S",
        help="also replay S seconds of synthetic stream as fast as possible: latency, memory and words per tenth "
        "of it (with --speech FILE: that recording looped is the audio)",
    )
    p.add_argument(
        "--speech",
        metavar="FILE",
        help="only score the speech paths on this recording (any audio/video file): WER of the streaming and "
        "the unpadded path against the same model's offline transcript, time per window; prints JSON "
        "(with --soak: the soak's audio instead)",
    )
    p.add_argument("--transcript", metavar="TEXT", help="with --speech: what is really said, for a WER against it")
    p.add_argument(
        "--server",
        nargs="?",
        const="local",
        metavar="URL",
        help="only measure many streams against a service: URL, or none to start a local one (loopback); "
        "--streams then takes a list, e.g. 1,4,16",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")

    p = sub.add_parser(
        "serve",
        help="serve the monitor's model on Ray Serve for many streams (merclip-live --server)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the monitor's model as a service on Ray Serve: windows from many\n"
        "`merclip-live --server` clients are scored together in batches on shared replicas. Capture,\n"
        "speech recognition, the UI and the CSV stay on each client. The model is loaded once per replica.\n"
        "Needs pip install 'merclip-live[serve]'. Settings: the [serve] table of config.toml.",
        epilog=SERVE_EPILOG,
    )
    _common(p)
    _bundle_flags(p, "serve this exported bundle (same path on every node)")
    p.add_argument(
        "--address", metavar="ADDR", type=TEXT, help="join this Ray cluster (auto, host:6379); default: start one here"
    )
    p.add_argument(
        "--host",
        metavar="HOST",
        type=TEXT,
        help="address to listen on (default 127.0.0.1; 0.0.0.0: all; beyond loopback needs TLS and a token)",
    )
    p.add_argument("--port", type=_int_at_least(1, 65535), help="HTTP port (default 8000)")
    p.add_argument("--replicas", type=POSITIVE, help="model replicas (default 1)")
    p.add_argument("--num-cpus", type=_number(0.0, strict=False), metavar="N", help="CPUs per replica (default 1)")
    p.add_argument("--num-gpus", type=_number(0.0, strict=False), metavar="N", help="GPUs per replica, may be 0.25")
    p.add_argument("--max-batch", type=POSITIVE, metavar="N", help="windows per batch at most (default 16)")
    p.add_argument("--batch-wait-ms", type=_number(0.0, strict=False), metavar="MS",
                   help="how long a batch waits to fill after its first window (default 10)")  # fmt: skip
    p.add_argument("--tls-cert", metavar="FILE", type=TEXT, help="serve HTTPS with this PEM certificate (chain)")
    p.add_argument("--tls-key", metavar="FILE", type=TEXT, help="the certificate's unencrypted PEM key (chmod 600)")
    p.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        type=TEXT,
        help="require client certificates signed by this CA (merclip-live --client-cert/--client-key)",
    )
    p.add_argument(
        "--token-file",
        metavar="FILE",
        type=TEXT,
        help="every request must carry the token in this file (default: $MERCLIP_TOKEN if set)",
    )
    p.add_argument("--insecure", action="store_true",
                   help="listen beyond loopback without TLS or a token anyway (faces and voices in clear)")  # fmt: skip

    p = sub.add_parser("cache", help="list or clear the bundles `merclip-live --model` exported (runtime.cache_dir)")
    _common(p)
    p.add_argument("action", choices=("list", "clear"), help="list: name, size, last used; clear: remove them all")

    p = sub.add_parser("doctor", help="can the monitor run here? devices, runtimes, models, caches: ✓/✗ and fixes")
    _common(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the checklist")

    p = sub.add_parser("rescore", help="score a `merclip-live --record` recording again: other bundle or labels")
    _common(p)
    p.add_argument("recording", metavar="FILE.mkv", type=TEXT, help="a recording written by merclip-live --record")
    _bundle_flags(p)
    _precision_flag(p)
    p.add_argument("--labels", metavar="A,B,...", type=TEXT, help="emotion labels, comma-separated (zero-shot)")
    p.add_argument("--sentiment-labels", metavar="A,B,...", type=TEXT, help="sentiment labels, comma-separated")
    _asr_flags(p)
    p.add_argument("--log", metavar="PATH", type=TEXT, help="CSV for the new readings (a folder or a file)")
    p.add_argument("--json", action="store_true", help="also print one JSON object per reading on stdout")

    p = sub.add_parser("report", help="plot a logged session (PNG) and summarise it")
    _common(p)
    p.add_argument("session", metavar="SESSION.csv", type=TEXT, help="a CSV written by merclip-live --log")
    p.add_argument("--out", metavar="PNG", type=TEXT, help="image path (default: next to the CSV)")
    p.add_argument(
        "--compare",
        metavar="OTHER.csv",
        type=TEXT,
        help="another run of the same session (e.g. from rescore): side by side",
    )
    return parser


def build_live_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="merclip-live",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=LIVE_EPILOG,
        description="Live multimodal emotion monitor: every 2 s, what the person in front of the camera seems "
        "to feel (face, voice, words) and whether what they say is positive or negative.",
    )
    parser.add_argument("--version", action="version", version=f"merclip-live {__version__}")
    _common(parser)
    parser.add_argument("--source", metavar="SRC", type=TEXT, help="camera | sample | synthetic | path to a video file")
    parser.add_argument(
        "--camera",
        metavar="N",
        type=TEXT,
        help="camera index, device path (/dev/video2) or network camera URL (http://PHONE:8080/video, an MJPEG "
        "stream; rtsp://...) (implies --source camera)",
    )
    parser.add_argument("--mic", metavar="DEV", help="microphone name or index (default: system default)")
    _bundle_flags(parser)
    _precision_flag(parser)
    parser.add_argument("--frames", type=_int_at_least(1, 32), help="frames per window (default 4)")
    _asr_flags(parser)
    parser.add_argument(
        "--no-ui",
        action="store_true",
        help="print JSON lines instead of the UI: each window when it closes (final: false), then with its "
        "final words (final: true, the CSV row)",
    )
    parser.add_argument(
        "--log",
        metavar="PATH",
        type=TEXT,
        help="CSV session log: a path ending in .csv is that file, anything else is a folder (created if needed) "
        "that gets a new timestamped .csv per session; an existing log is never overwritten (NAME-1.csv beside it)",
    )
    parser.add_argument("--duration", type=_number(0.0), metavar="S", help="stop after S seconds of stream time")
    parser.add_argument("--fast", action="store_true", help="file sources: as fast as possible, not real time")
    parser.add_argument(
        "--baseline",
        type=_number(0.0),
        metavar="S",
        help="treat the first S seconds as the person's resting state; show later readings relative to it",
    )
    parser.add_argument(
        "--allow-missing", action="store_true", help="go on without a camera or microphone that cannot be opened"
    )
    parser.add_argument(
        "--record",
        metavar="FILE.mkv",
        type=TEXT,
        help="also record the camera frames and microphone audio (raw face and voice, lossless) to this file, "
        "for `merclip rescore`; off unless given. As with --log, an existing file is never overwritten: the "
        "recording goes beside it as FILE-1.mkv",
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        type=TEXT,
        help="send windows to a `merclip serve` service (https://host:8000/merclip) instead of running the model here",
    )
    parser.add_argument(
        "--server-ca",
        metavar="FILE",
        type=TEXT,
        help="with --server https://: the CA certificate that signed the service's certificate",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        type=TEXT,
        help="with --server: the service's token, read from this file (default: $MERCLIP_TOKEN)",
    )
    parser.add_argument(
        "--client-cert",
        metavar="FILE",
        type=TEXT,
        help="with --server: this client's certificate, for a service that requires one",
    )
    parser.add_argument("--client-key", metavar="FILE", type=TEXT, help="the key of --client-cert")  # fmt: skip
    parser.add_argument(
        "--list-devices",
        action="store_true",
        help="list the cameras and microphones found, measure the microphone (and a --camera URL or path), then exit",
    )
    return parser


def _load(args) -> Config:
    return load_config(getattr(args, "config", None))


def cmd_config(args) -> int:
    print(to_toml(_load(args)), end="")
    return 0


def cmd_export(args) -> int:
    """`merclip export`, its bundle's precisions compared with fp32 on the sample clip's windows (stream/)."""
    from merclip.export.cli import cmd_export as export
    from merclip.stream.precision import SAMPLE

    return export(args, reference=SAMPLE)


def _not_built(name: str) -> Callable:
    def run(args) -> int:
        raise MerClipError(f"`merclip {name}` is not built yet in this version")

    return run


def _dispatch(name: str) -> Callable:
    """Commands live next to the code they drive; imported only when used."""
    from importlib import import_module

    table = {
        "config": lambda: cmd_config,
        "prepare": lambda: import_module("merclip.train.cli").cmd_prepare,
        "train": lambda: import_module("merclip.train.cli").cmd_train,
        "eval": lambda: import_module("merclip.train.cli").cmd_eval,
        "calibrate": lambda: import_module("merclip.train.cli").cmd_calibrate,
        "ablate": lambda: import_module("merclip.train.ablate").cmd_ablate,
        "export": lambda: cmd_export,
        "bench": lambda: import_module("merclip.train.bench.cli").cmd_bench,
        "report": lambda: import_module("merclip.stream.report").cmd_report,
        "cache": lambda: import_module("merclip.stream.cache").cmd_cache,
        "doctor": lambda: import_module("merclip.stream.doctor").cmd_doctor,
        "rescore": lambda: import_module("merclip.stream.cli").cmd_rescore,
        "serve": lambda: import_module("merclip.stream.serve_cli").cmd_serve,
    }
    try:
        return table[name]()
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("merclip"):
            return _not_built(name)
        if err.name and err.name.split(".")[0] in ("ray", "starlette"):
            raise MerClipError(f"`merclip {name}` needs Ray Serve: pip install 'merclip-live[serve]'") from None
        raise MerClipError(f"`merclip {name}` needs {err.name}: pip install 'merclip-live[train]'") from None


def _run(fn: Callable[[], int]) -> int:
    try:
        return fn()
    except MerClipError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        # A file the user named that the system refused (name too long, permission, disk full, a file where
        # a folder should be...): the user's to fix, so one line. OSErrors without a file name still raise.
        if err.filename is None or isinstance(err, BrokenPipeError):
            raise
        log.info("details of the error below", exc_info=True)  # with -v: the traceback, for bug reports
        target = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
        print(f"error: {_one_line(target)}: {_one_line(err.strerror or err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(getattr(args, "verbose", False))
    return _run(lambda: _dispatch(args.command)(args))


def live_main(argv: Sequence[str] | None = None) -> int:
    args = build_live_parser().parse_args(argv)
    _setup_logging(args.verbose)

    def run() -> int:
        from merclip.stream.cli import cmd_live

        return cmd_live(args, _load(args))

    return _run(run)


__all__ = ["main", "live_main", "build_parser", "build_live_parser", "override"]


if __name__ == "__main__":
    sys.exit(main())
