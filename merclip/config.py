"""config.toml -> typed, validated dataclasses.

The dataclass defaults *are* the packaged defaults; the repository's ``config.toml`` documents every key
with the same values, set or, where setting it would ask a trained model for another reading or override
a dataset's own value, shown commented out (a test keeps the two equal). Unknown keys, wrong types and bad
values are refused with one line naming the key and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from merclip.cache_dir import DEFAULT_CACHE_DIR, check_cache_dir
from merclip.errors import MerClipError
from merclip.errors import show_value as _show

MOSEI_EMOTIONS = ("happy", "sad", "angry", "surprise", "disgust", "fear")
SENTIMENTS = ("positive", "negative")


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KB; anything this big is not one


def _check(choices: tuple | None = None, lo: float | None = None, hi: float | None = None,
           above: float | None = None, nonempty: bool = False) -> dict:  # fmt: skip
    """Field metadata: allowed values, inclusive bounds ``lo``/``hi``, exclusive lower bound ``above``."""
    return {"choices": choices, "lo": lo, "hi": hi, "above": above, "nonempty": nonempty}


_TEXT = _check(nonempty=True)
COMPUTE_TYPES = ("default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")  # fmt: skip


@dataclass(frozen=True)
class ModelSection:
    arch: str = field(default="ViT-B-32", metadata=_TEXT)
    weights: str = field(default="openai", metadata=_TEXT)
    variant: str = field(default="full", metadata=_check(("full", "no_cmd", "no_le", "concat_fc")))
    modalities: str = "LVA"
    attend: str = field(default="tokens", metadata=_check(("tokens", "pooled")))
    decoder_heads: int = field(default=0, metadata=_check(lo=0, hi=64))
    text_context_length: int = field(default=77, metadata=_check(lo=8, hi=77))
    emotion_mode: str = field(default="multi_label", metadata=_check(("multi_label", "single_label")))


@dataclass(frozen=True)
class LabelsSection:
    emotion: tuple[str, ...] = MOSEI_EMOTIONS
    sentiment: tuple[str, ...] = SENTIMENTS
    emotion_query: str = "Emotion"
    sentiment_query: str = "Sentiment"
    prompt_context: int = field(default=8, metadata=_check(lo=0, hi=32))
    emotion_threshold: float = field(default=0.6, metadata=_check(lo=0.0, hi=1.0))
    neutral: str = field(default="neutral", metadata=_TEXT)


@dataclass(frozen=True)
class CaptureSection:
    source: str = field(default="camera", metadata=_TEXT)
    camera: str = field(default="0", metadata=_TEXT)
    width: int = field(default=640, metadata=_check(lo=16, hi=8192))
    height: int = field(default=480, metadata=_check(lo=16, hi=8192))
    fps: float = field(default=15.0, metadata=_check(lo=1.0, hi=120.0))
    microphone: str = ""
    # input latency asked of PortAudio (0: the host's default); see stream/capture.py
    mic_latency_s: float = field(default=0.05, metadata=_check(lo=0.0, hi=1.0))
    window_s: float = field(default=2.0, metadata=_check(lo=0.5, hi=30.0))
    hop_s: float = field(default=2.0, metadata=_check(lo=0.25, hi=30.0))
    frames_per_window: int = field(default=4, metadata=_check(lo=1, hi=64))
    allow_missing: bool = False
    # auto: preparing/exporting crops the face (haar; synthetic sets: off), live follows the bundle
    face: str = field(default="auto", metadata=_check(("auto", "haar", "off")))
    face_margin: float = field(default=0.3, metadata=_check(lo=0.0, hi=2.0))
    # Which words a reading reads (model/reading.py): auto = what the model was trained for (training: the
    # recipe's choice); live follows the bundle's (a different value here gets a notice)
    context: str = field(default="auto", metadata=_check(("auto", "window", "utterance")))


@dataclass(frozen=True)
class AsrSection:
    enabled: bool = True
    model: str = field(default="tiny.en", metadata=_TEXT)
    # stream: rolling buffer, padded as Whisper was trained, words committed by LocalAgreement (default);
    # window-unpadded: each window alone on its real length (only for models fine-tuned on short inputs)
    mode: str = field(default="stream", metadata=_check(("stream", "window-unpadded")))
    device: str = field(default="auto", metadata=_check(("auto", "cpu", "cuda")))
    # CTranslate2's compute types (what a device lacks falls back to the nearest it has, so all are valid)
    compute_type: str = field(default="int8", metadata=_check(COMPUTE_TYPES))
    language: str = "en"
    vad: bool = True
    beam_size: int = field(default=1, metadata=_check(lo=1, hi=10))
    context_words: int = field(default=8, metadata=_check(lo=0, hi=64))


@dataclass(frozen=True)
class RuntimeSection:
    bundle: str = ""
    providers: str = field(default="auto", metadata=_check(("auto", "tensorrt", "cuda", "openvino", "cpu")))
    # what the model computes in (export/backends.py): auto = the fastest that agrees with fp32 here
    precision: str = field(default="auto", metadata=_check(("auto", "fp32", "bf16", "int8")))
    threads: int = field(default=0, metadata=_check(lo=0, hi=256))
    cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata=_TEXT)
    queue_windows: int = field(default=2, metadata=_check(lo=1, hi=64))
    overlap: bool = True
    # URL of a `merclip serve` service to send windows to ("" = run the bundle in this process)
    server: str = ""
    # how this client trusts the service and is trusted by it (README "Many streams")
    server_ca: str = ""
    token_file: str = ""
    client_cert: str = ""
    client_key: str = ""


@dataclass(frozen=True)
class ServeSection:
    address: str = ""
    host: str = field(default="127.0.0.1", metadata=_TEXT)
    port: int = field(default=8000, metadata=_check(lo=1, hi=65535))
    route: str = field(default="/merclip", metadata=_TEXT)
    replicas: int = field(default=1, metadata=_check(lo=1, hi=4096))
    num_cpus: float = field(default=1.0, metadata=_check(lo=0.0, hi=1024.0))
    num_gpus: float = field(default=0.0, metadata=_check(lo=0.0, hi=64.0))
    max_batch: int = field(default=16, metadata=_check(lo=1, hi=4096))
    batch_wait_ms: float = field(default=10.0, metadata=_check(lo=0.0, hi=10_000.0))
    # who may connect and how (stream/access.py): TLS files, the shared token's file, and the choice to
    # listen beyond loopback without them
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    token_file: str = ""
    insecure: bool = False


@dataclass(frozen=True)
class UiSection:
    enabled: bool = True
    smoothing_s: float = field(default=3.0, metadata=_check(lo=0.0, hi=600.0))
    uncertain_below: float = field(default=0.4, metadata=_check(lo=0.0, hi=1.0))
    baseline_s: float = field(default=0.0, metadata=_check(lo=0.0, hi=3600.0))
    refresh_hz: float = field(default=4.0, metadata=_check(lo=0.5, hi=30.0))


@dataclass(frozen=True)
class LogSection:
    path: str = ""


@dataclass(frozen=True)
class TrainSection:
    dataset: str = field(default="synthetic", metadata=_check(("synthetic", "manifest", "mosi", "mosei", "meld")))
    data_root: str = ""
    cache_dir: str = ""
    task: str = field(default="auto", metadata=_check(("auto", "both", "emotion", "sentiment")))
    recipe: str = field(default="merclip", metadata=_check(("merclip", "paper")))
    allow_partial: bool = False
    epochs: int = field(default=20, metadata=_check(lo=1, hi=100_000))
    batch_size: int = field(default=16, metadata=_check(lo=1, hi=65_536))
    lr: float = field(default=8e-6, metadata=_check(above=0.0, hi=1.0))
    weight_decay: float = field(default=1e-3, metadata=_check(lo=0.0, hi=10.0))
    frames: int = field(default=12, metadata=_check(lo=1, hi=64))
    # What a training sample is: auto = the recipe's (merclip: the monitor's windows and whole clips, paper:
    # whole clips); windows = each clip cut into the monitor's windows (train/windows.py); clips; both
    samples: str = field(default="auto", metadata=_check(("auto", "windows", "clips", "both", "views")))
    grad_clip: float = field(default=1.0, metadata=_check(lo=0.0, hi=1e6))
    # ours only (the paper's recipe trains on the plain cross-entropy); RESULTS.md, "Reading what the monitor reads"
    label_smoothing: float = field(default=0.1, metadata=_check(lo=0.0, hi=0.5))
    # Distillation from earlier runs (recipe merclip): their mean softened reading of each training sample
    teachers: tuple[str, ...] = ()
    # ... or teachers trained first by the run itself (seeds seed+1.., in OUT/teachers): a count, or "auto"
    # (the dataset's, train/training.py TEACHERS_BY_DEFAULT)
    teacher_runs: str = "auto"
    # ... and how their decoders attend: auto = the dataset's where one was measured to teach better
    # (train/training.py TEACHER_ATTEND_BY_DEFAULT), else as this run's (model.attend)
    teacher_attend: str = field(default="auto", metadata=_check(("auto", "tokens", "pooled")))
    distill_weight: float = field(default=0.8, metadata=_check(lo=0.0, hi=1.0))
    distill_temperature: float = field(default=2.0, metadata=_check(above=0.0, hi=100.0))
    lr_schedule: str = field(default="auto", metadata=_check(("auto", "constant", "cosine")))  # COSINE_BY_DEFAULT
    amp: bool = True
    seed: int = field(default=0, metadata=_check(lo=0, hi=2**32 - 1))
    out: str = field(default="runs/merclip", metadata=_TEXT)
    num_workers: int = field(default=0, metadata=_check(lo=0, hi=256))


MAX_TEACHER_RUNS = 32


@dataclass(frozen=True)
class ExportSection:
    out: str = field(default="bundle", metadata=_TEXT)
    precision: str = field(default="fp32", metadata=_check(("fp32", "fp16", "int8")))
    opset: int = field(default=17, metadata=_check(lo=14, hi=21))
    emotion_template: str = "a photo of a person feeling {label}."
    sentiment_template: str = "a {label} statement."
    parity_samples: int = field(default=32, metadata=_check(lo=1, hi=100_000))


@dataclass(frozen=True)
class Config:
    model: ModelSection = ModelSection()
    labels: LabelsSection = LabelsSection()
    capture: CaptureSection = CaptureSection()
    asr: AsrSection = AsrSection()
    runtime: RuntimeSection = RuntimeSection()
    serve: ServeSection = ServeSection()
    ui: UiSection = UiSection()
    log: LogSection = LogSection()
    train: TrainSection = TrainSection()
    export: ExportSection = ExportSection()
    # "section.key" for each value the file or a command-line flag set: what a user wrote is asked for even
    # where it equals the packaged default (a 4-frame window asked of a 12-frame bundle gets its notice).
    spelled: frozenset[str] = field(default=frozenset(), compare=False, repr=False, metadata={"internal": True})

    def asked(self, section: str) -> dict[str, Any]:
        """The ``[section]`` values a user asked for: set in the file or by a flag, or (a Config built in
        code) other than the packaged default."""
        values, default = dataclasses.asdict(getattr(self, section)), dataclasses.asdict(getattr(Config(), section))
        return {k: v for k, v in values.items() if f"{section}.{k}" in self.spelled or v != default[k]}


def _sections() -> list[dataclasses.Field]:
    return [f for f in fields(Config) if not f.metadata.get("internal")]


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "a list of strings"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any, may_be_empty: bool = False) -> Any:
    """Check ``value`` against the field type ``tp``; return it in the dataclass's form. A list may be empty
    only where its default is (``may_be_empty``): an empty label set is a mistake, no teachers is not."""
    bad = MerClipError(f"config: {key} must be {_type_name(tp)}, got {_show(value)}")
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad
        if not value and not may_be_empty:
            raise MerClipError(f"config: {key} must not be empty")
        if any("\0" in v for v in value):
            raise MerClipError(f"config: {key} must not contain NUL characters")
        return tuple(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        try:
            number = float(value)
        except OverflowError:
            raise MerClipError(f"config: {key} must be a finite number, got {_show(value)}") from None
        if not math.isfinite(number):
            raise MerClipError(f"config: {key} must be a finite number, got {number}")
        return number
    if tp is str:
        # a camera index or microphone index may be written as a number in TOML
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise bad
        if "\0" in value:
            raise MerClipError(f"config: {key} must not contain NUL characters")
        return value
    raise TypeError(f"unsupported config type {tp}")  # a bug in this module, not the user's


def _build_section(cls: type, name: str, table: dict[str, Any]) -> Any:
    if not isinstance(table, dict):
        raise MerClipError(f"config: [{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, raw in table.items():
        if key not in known:
            raise MerClipError(f"config: unknown key {name}.{_show(key)[1:-1]} (known: {', '.join(known)})")
        value = _coerce(f"{name}.{key}", raw, hints[key], known[key].default == ())
        meta = known[key].metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise MerClipError(f"config: {name}.{key} must be one of {', '.join(meta['choices'])}, got {_show(value)}")
        if meta.get("nonempty") and not value.strip():
            raise MerClipError(f"config: {name}.{key} must not be empty")
        if meta.get("above") is not None and not value > meta["above"]:
            raise MerClipError(f"config: {name}.{key} must be > {meta['above']}, got {_show(value)}")
        if meta.get("lo") is not None and value < meta["lo"]:
            raise MerClipError(f"config: {name}.{key} must be >= {meta['lo']}, got {_show(value)}")
        if meta.get("hi") is not None and value > meta["hi"]:
            raise MerClipError(f"config: {name}.{key} must be <= {meta['hi']}, got {_show(value)}")
        values[key] = value
    return cls(**values)


def _check_template(key: str, template: str) -> None:
    try:
        filled = template.format(label="x")
    except (KeyError, IndexError, ValueError, AttributeError):
        filled = None
    if filled is None or "{label}" not in template:
        raise MerClipError(f"config: {key} must contain {{label}} and no other {{...}} fields (write {{{{ }}}} for a "
                           f"brace), got {_show(template)}")  # fmt: skip


def _validate(cfg: Config) -> None:
    mods = cfg.model.modalities
    if not mods or set(mods) - set("LVA") or len(set(mods)) != len(mods):
        raise MerClipError(f"config: model.modalities must be an order of distinct letters from L, V, A, got "
                           f"{_show(mods)}")  # fmt: skip
    if cfg.capture.hop_s > cfg.capture.window_s:
        raise MerClipError("config: capture.hop_s must be <= capture.window_s (windows may overlap, not leave gaps)")
    for name, labels in (("labels.emotion", cfg.labels.emotion), ("labels.sentiment", cfg.labels.sentiment)):
        if len(set(labels)) != len(labels) or any(not s.strip() for s in labels):
            raise MerClipError(f"config: {name} must hold distinct, non-empty labels")
    _check_template("export.emotion_template", cfg.export.emotion_template)
    _check_template("export.sentiment_template", cfg.export.sentiment_template)
    check_cache_dir(cfg.runtime.cache_dir)
    runs = cfg.train.teacher_runs
    if runs != "auto" and not (runs.isdigit() and int(runs) <= MAX_TEACHER_RUNS):
        raise MerClipError(f"config: train.teacher_runs must be \"auto\" or a count 0 to {MAX_TEACHER_RUNS}, "
                           f"got {_show(runs)}")  # fmt: skip
    if cfg.train.teachers and runs not in ("auto", "0"):
        raise MerClipError("config: train.teachers names teachers, train.teacher_runs trains them: set one of the two")
    if not cfg.serve.route.startswith("/") or cfg.serve.route == "/":
        raise MerClipError(f"config: serve.route must be a path such as /merclip, got {_show(cfg.serve.route)}")


def from_dict(data: dict[str, Any]) -> Config:
    sections = {f.name: f.type for f in _sections()}
    hints = typing.get_type_hints(Config)
    built = {}
    for name, table in data.items():
        if name not in sections:
            if not isinstance(table, dict):
                raise MerClipError(
                    f"config: key {_show(name)[1:-1]} must be inside a [section] (sections: {', '.join(sections)})"
                )
            raise MerClipError(f"config: unknown section [{_show(name)[1:-1]}] (known: {', '.join(sections)})")
        built[name] = _build_section(hints[name], name, table)
    cfg = Config(**built, spelled=frozenset(f"{name}.{key}" for name, table in data.items() for key in table))
    _validate(cfg)
    return cfg


def load_config(path: str | Path | None = None) -> Config:
    """Read ``path``; with None, ``./config.toml`` if present, else the packaged defaults."""
    if path is None:
        path = Path("config.toml")
        if not path.is_file():
            return Config()
    path = Path(path)
    try:
        if not path.exists():
            if path.is_symlink():
                raise MerClipError(f"config: {path} is a broken or looping symbolic link")
            raise MerClipError(f"config: file not found: {path}")
        if path.is_dir():
            raise MerClipError(f"config: {path} is a folder, not a config file")
        if not path.is_file():
            raise MerClipError(f"config: {path} is not a regular file")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise MerClipError(f"config: {path} is {path.stat().st_size} bytes: too big for a config file")
        raw = path.read_bytes()
    except OSError as err:
        raise MerClipError(f"config: cannot read {path}: {err.strerror}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise MerClipError(f"config: {path} is UTF-16 text; save it as UTF-8")
    if b"\0" in raw:
        raise MerClipError(f"config: {path} is a binary file, not TOML text")
    try:
        text = raw.decode("utf-8-sig")  # a BOM (Windows editors) is fine
    except UnicodeDecodeError as err:
        raise MerClipError(f"config: {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise MerClipError(f"config: {path} is not valid TOML: {err}") from None
    except RecursionError:
        raise MerClipError(f"config: {path} is not valid TOML: nested too deeply") from None
    return from_dict(data)


def weights_flag(arch: str | None, weights: str | None) -> str | None:
    """``--weights`` as given; for the built-in tiny model, which has no pretrained weights, "random" unless
    given (the one rule for live, serve, rescore, train and export)."""
    return "random" if arch == "tiny" and weights is None else weights


def override(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Apply CLI flags, e.g. ``override(cfg, model={"arch": "tiny"})``; None values are ignored."""
    changes, spelled = {}, set(cfg.spelled)
    for name, values in sections.items():
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            continue
        current = dataclasses.asdict(getattr(cfg, name))
        current.update(values)
        changes[name] = _build_section(type(getattr(cfg, name)), name, current)
        spelled.update(f"{name}.{key}" for key in values)
    new = dataclasses.replace(cfg, **changes, spelled=frozenset(spelled))
    _validate(new)
    return new


# Keys a rendering shows commented out unless asked for, with why: written out, the first three ask a bundle
# for another reading (a notice each, model/reading.py); the others, left unset, follow what the reason says.
_TRAINED, _DATASET = "a trained model is read with its own", "left to the dataset"
_LABELS = "left to the dataset in training, live to the bundle"
NOT_ASKED = {"capture.window_s": _TRAINED, "capture.hop_s": _TRAINED, "capture.frames_per_window": _TRAINED,
             "model.emotion_mode": _DATASET, "labels.emotion": _LABELS, "labels.sentiment": _LABELS,
             "train.epochs": _DATASET, "train.batch_size": _DATASET, "train.lr": f"{_DATASET}; random weights 5e-4",
             "train.frames": _DATASET, "train.label_smoothing": _DATASET}  # fmt: skip


def to_toml(cfg: Config) -> str:
    """Render the effective configuration as TOML (for ``merclip config``); loaded again, it asks for what
    ``cfg`` asked for."""
    lines = []
    for section in _sections():
        lines.append(f"[{section.name}]")
        asked = cfg.asked(section.name)
        for key, value in dataclasses.asdict(getattr(cfg, section.name)).items():
            line, name = f"{key} = {_toml_value(value)}", f"{section.name}.{key}"
            if key not in asked and name in NOT_ASKED:
                line = f"# {line}  (not asked: {NOT_ASKED[name]})"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


__all__ = ["Config", "MOSEI_EMOTIONS", "SENTIMENTS", "load_config", "override", "to_toml", "from_dict"]
