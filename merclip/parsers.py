"""The `merclip` command line: every command's flags and help (what each command does lives in the module
`merclip.cli` dispatches it to)."""

from __future__ import annotations

import argparse

from merclip import __version__
from merclip.flags import (
    FRAMES,
    POSITIVE,
    PROVIDER_CHOICES,
    PROVIDERS_HELP,
    SYNTHETIC_ABLATE,
    SYNTHETIC_TRAIN,
    TEXT,
    _asr_flags,
    _bundle_flags,
    _common,
    _counts,
    _int_at_least,
    _model_flags,
    _number,
    _Parser,
    _precision_flag,
    _protocol_flags,
    _teachers,
    _training_epilog,
    _training_flags,
)

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
    p.add_argument("--teachers", metavar="N|CKPT,CKPT,...", type=_teachers,
                   help="distil from teachers: N trains N of them first (this run's settings, seeds seed+1 to seed+N, "
                   "decoders attending as train.teacher_attend says, in OUT/teachers; a finished one is reused, an "
                   "interrupted one continued), or name trained runs (e.g. other seeds' best.safetensors; they must "
                   "read as this run does: model, modalities, labels, reading context). Each sample is also taught "
                   "their mean reading of it (train.distill_weight, train.distill_temperature), and every window and "
                   "clip is a sample each epoch (train.samples). Default (train.teacher_runs = auto): 5 on MELD with "
                   "recipe merclip (attending one pooled vector per modality), where it was measured to read the "
                   "monitor's windows better (RESULTS.md), else 0; 0 trains this one run alone")  # fmt: skip
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
        help="score a reference predictor instead (single-label text datasets such as MELD), fitted on the train "
        "split's whole clips; it scores whole clips unless --protocol windows, which reads each window as an "
        "untrained model's bundle does ([capture])",
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
    p.add_argument("--frames", type=FRAMES, help="frames per window (default: as many as --checkpoint's model was "
                   "trained on; else capture.frames_per_window)")  # fmt: skip
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
    p.add_argument("--frames", type=FRAMES, help="frames per window (default: as many as the bundle's model was "
                   "trained on; another count is said, and recorded in every row of the new CSV)")  # fmt: skip
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
