"""Export MER-CLIP (trained) or pretrained CLIP (zero-shot) to a self-contained ONNX bundle."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from merclip.model.face import FaceSetting
from merclip.model.merclip import MerClip
from merclip.model.reading import ReadingSetting
from merclip.model.tokenizer import ClipTokenizer, prompt_text
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from merclip import __version__
from merclip.errors import MerClipError

from . import graphs
from .manifest import FORMAT, PARTS, sha256_file, write_manifest

log = logging.getLogger(__name__)
LABEL_CONTEXT = 77


@dataclass(frozen=True)
class ExportOptions:
    out: Path
    mode: str = "trained"  # trained | zero-shot
    weights: str = "random"  # what the CLIP towers were initialised from (for the manifest and UI)
    precision: str = "fp32"
    opset: int = 17
    reading: ReadingSetting = ReadingSetting()  # how the bundle is read live (model/reading.py)
    emotion_template: str = "a photo of a person feeling {label}."
    sentiment_template: str = "a {label} statement."
    emotion_threshold: float = 0.6
    parity_samples: int = 32
    neutral_label: str = "neutral"  # zero-shot: the neutral prompt's label, scored with the emotions


def label_prompts(manifest_labels: dict, labels: list[str], task: str) -> list[str]:
    """The text each label is embedded as: a template (zero-shot) or the learnable-context prompt."""
    if manifest_labels["mode"] == "zero-shot":
        return [manifest_labels[f"{task}_template"].format(label=label) for label in labels]
    return [prompt_text(label, manifest_labels["prompt_context"]) for label in labels]


def _graphs(model: MerClip, mode: str) -> dict:
    zero = mode == "zero-shot"
    parts = {
        "vision": graphs.VisionGraph(model),
        "audio": graphs.AudioGraph(model),
        "text": graphs.TextGraph(model),
        "fuse": graphs.ZeroShotFuseGraph(model) if zero else graphs.FuseGraph(model),
    }
    if zero:
        parts["labels"] = graphs.ZeroShotLabelGraph(model)
    elif model.label_encoder is not None:
        parts["labels"] = graphs.LabelGraph(model)
    return parts


def _dummy(model: MerClip, part: str, label_len: int):
    dim, size = model.arch.embed_dim, model.arch.image_size
    length = model.cfg.text_context_length
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(2, length, dtype=torch.long)
    ids[:, :4] = torch.tensor([49406, 320, 1125, 49407])
    if part == "vision":
        return (
            (torch.randn(2, 3, size, size, generator=g),),
            ["images"],
            ["features"],
            {"images": {0: "n"}, "features": {0: "n"}},
        )
    if part == "audio":
        wave = torch.randn(2, model.cfg.mel.segment_samples, generator=g) * 0.1
        return (wave,), ["waveform"], ["features"], {"waveform": {0: "batch"}, "features": {0: "batch"}}
    if part == "text":
        axes = {n: {0: "batch"} for n in ("input_ids", "tokens", "valid", "pooled")}
        return (ids,), ["input_ids"], ["tokens", "valid", "pooled"], axes
    if part == "labels":
        lab = torch.zeros(3, label_len, dtype=torch.long)
        lab[:, :4] = torch.tensor([49406, 320, 1125, 49407])
        return (lab,), ["input_ids"], ["embeddings"], {"input_ids": {0: "k"}, "embeddings": {0: "k"}}
    args = (
        torch.randn(2, 3, dim, generator=g),
        torch.randn(2, 1, dim, generator=g),
        torch.randn(2, length, dim, generator=g),
        ids > 0,
        torch.randn(2, dim, generator=g),
        torch.ones(2, 3),
        torch.randn(2, dim, generator=g),
        torch.randn(len(model.cfg.emotion_labels), dim, generator=g),
        torch.randn(len(model.cfg.sentiment_labels), dim, generator=g),
    )
    axes = {
        "vision": {0: "batch", 1: "frames"},
        "audio": {0: "batch", 1: "segments"},
        "text": {0: "batch"},
        "text_valid": {0: "batch"},
        "text_pooled": {0: "batch"},
        "present": {0: "batch"},
        "emotion_labels": {0: "k_emotion"},
        "sentiment_labels": {0: "k_sentiment"},
        "emotion_probs": {0: "batch", 1: "k_emotion"},
        "sentiment_probs": {0: "batch", 1: "k_sentiment"},
    }
    return args, graphs.FUSE_INPUTS, graphs.FUSE_OUTPUTS, axes


@contextlib.contextmanager
def _no_mha_fastpath():
    """nn.MultiheadAttention's fused inference kernel has no ONNX export: trace the plain path."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _convert_precision(path: Path, precision: str, part: str) -> None:
    import onnx

    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = path.with_suffix(".int8.onnx")
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8)
        tmp.replace(path)
    elif precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(path))
        # The log-mel front-end stays fp32: spectral power overflows fp16 and its log underflows.
        block = [n.name for n in model.graph.node if "audio_frontend" in n.name] if part == "audio" else []
        model = convert_float_to_float16(model, keep_io_types=True, node_block_list=block)
        onnx.save(model, str(path))


def check_export_target(out: str | Path) -> Path:
    """An export replaces an earlier bundle at ``out``, never anything else; missing parents are made."""
    out = Path(out).expanduser()
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise MerClipError(f"--out {out} exists and is not a folder: choose another bundle folder")
        if any(out.iterdir()) and not (out / "manifest.json").is_file():
            raise MerClipError(
                f"--out {out} is a folder with other files in it, not a bundle: an export would replace it; "
                "choose a new or empty folder"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MerClipError(f"cannot create the bundle folder's parent {out.parent}: {err.strerror}") from None
    return out


def export_bundle(model: MerClip, opts: ExportOptions, tokenizer: ClipTokenizer | None = None) -> dict:
    """Write the bundle folder; return the manifest. The folder is replaced only when all went well."""
    if opts.mode not in ("trained", "zero-shot"):
        raise MerClipError(f"export mode must be trained or zero-shot, got {opts.mode!r}")
    window_s = opts.reading.window_s
    if abs(window_s - model.cfg.mel.segment_s) > 1e-9:
        fix = "train it again" if model.cfg.reading is not None else "set"  # a trained model keeps its own
        raise MerClipError(f"a bundle reads {model.cfg.mel.segment_s:g}-s windows (the audio encoder's segment) and "
                           f"this model is read in {window_s:g}-s ones: {fix} with capture.window_s = "
                           f"{model.cfg.mel.segment_s:g}")  # fmt: skip
    model = model.eval().float()
    tokenizer = tokenizer or ClipTokenizer.default()
    label_len = model.cfg.text_context_length if opts.mode == "zero-shot" else LABEL_CONTEXT
    parts = _graphs(model, opts.mode)
    out = check_export_target(opts.out)
    work = Path(tempfile.mkdtemp(prefix=".merclip-export-", dir=out.parent))
    try:
        files = {}
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("exporting", total=len(parts))
            for name, graph in parts.items():
                bar.update(task, description=f"exporting {name} graph ({opts.precision})")
                args, inputs, outputs, axes = _dummy(model, name, label_len)
                path = work / f"{name}.onnx"
                with torch.no_grad(), _no_mha_fastpath(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer chatter about constant shapes we rely on
                    torch.onnx.export(
                        graph,
                        args,
                        str(path),
                        input_names=inputs,
                        output_names=outputs,
                        dynamic_axes=axes,
                        opset_version=opts.opset,
                        dynamo=False,
                        do_constant_folding=True,
                    )
                _convert_precision(path, opts.precision, name)
                files[name] = {"path": path.name, "sha256": sha256_file(path)}
                bar.advance(task)
        tokenizer.save(work / "tokenizer.json")
        files["tokenizer"] = {"path": "tokenizer.json", "sha256": sha256_file(work / "tokenizer.json")}
        manifest = _manifest(model, opts, files, label_len)
        manifest["embeddings"] = _label_embeddings(model, manifest, tokenizer)
        write_manifest(work, manifest)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _manifest(model: MerClip, opts: ExportOptions, files: dict, label_len: int) -> dict:
    cfg = model.cfg
    emotions, emotion_mode = list(cfg.emotion_labels), cfg.emotion_mode
    if opts.mode == "zero-shot":  # a softmax over the emotions and a neutral prompt (graphs.ZeroShotFuseGraph)
        emotions += [] if opts.neutral_label in emotions else [opts.neutral_label]
        emotion_mode = "single_label"
    return {
        "format": FORMAT,
        "package_version": __version__,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "opset": opts.opset,
        "precision": opts.precision,
        "mode": opts.mode,
        "arch": cfg.arch,
        "weights": opts.weights,
        "random_weights": opts.weights == "random",
        "embed_dim": model.arch.embed_dim,
        # What the CLIP towers compute with: the activation their weights were trained with (QuickGELU for
        # OpenAI's CLIP). Informational: the graphs already contain it.
        "model": {"arch": cfg.arch, "activation": model.arch.activation, "quick_gelu": model.arch.quick_gelu},
        "model_config": cfg.to_dict(),
        "preprocess": {
            "image_size": model.arch.image_size,
            "image_mean": list(model.arch.image_mean),
            "image_std": list(model.arch.image_std),
            "frames_per_window": opts.reading.frames_per_window,
            "sample_rate": cfg.mel.sample_rate,
            "window_s": opts.reading.window_s,
            # how the monitor reads with this model: window, hop, frames and which words (model/reading.py)
            "reading": opts.reading.to_json(),
            "window_samples": cfg.mel.segment_samples,
            "mel": asdict(cfg.mel),
            "context_length": cfg.text_context_length,
            "label_context_length": label_len,
            # the pictures the vision encoder expects (model/face.py); absent in older bundles = whole frames
            "face": FaceSetting(cfg.face, cfg.face_margin).to_json(),
        },
        "tokenizer": "tokenizer.json",
        "labels": {
            "mode": opts.mode,
            "emotion": emotions,
            "sentiment": list(cfg.sentiment_labels),
            "neutral": opts.neutral_label,
            "emotion_template": opts.emotion_template,
            "sentiment_template": opts.sentiment_template,
            "emotion_query": cfg.emotion_query,
            "sentiment_query": cfg.sentiment_query,
            "prompt_context": cfg.prompt_context,
            "emotion_mode": emotion_mode,
            "fixed": cfg.variant in ("no_le", "concat_fc"),
        },
        # the fuse graph outputs calibrated probabilities (calibration baked in); a multi-label threshold
        # set on the raw sigmoid moves with the calibration so the same labels pass
        "thresholds": {"emotion": model.calibration.map_threshold(opts.emotion_threshold)},
        "calibration": model.calibration.to_dict(),
        "logit_scale": {
            "sentiment": model.sentiment_log_scale.exp().item(),
            "emotion": model.emotion_log_scale.exp().item(),
        },
        "parts": {name: files[name] for name in PARTS if name in files},
        "tokenizer_file": files["tokenizer"],
    }


@torch.no_grad()
def _label_embeddings(model: MerClip, manifest: dict, tokenizer: ClipTokenizer) -> dict:
    """Precomputed query and label embeddings, so the runtime needs the label graph only for new labels."""
    labels = manifest["labels"]
    length = manifest["preprocess"]["label_context_length"]
    if labels["fixed"]:
        return {"queries": None, "emotion": None, "sentiment": None}

    def embed(texts: list[str]) -> list:
        ids = torch.from_numpy(tokenizer(texts, context_length=length))
        if labels["mode"] == "zero-shot":
            return graphs.ZeroShotLabelGraph(model)(ids).numpy().tolist()
        return model.embed_labels(ids).numpy().tolist()

    queries = [
        prompt_text(labels["emotion_query"], labels["prompt_context"]),
        prompt_text(labels["sentiment_query"], labels["prompt_context"]),
    ]
    return {
        "queries": embed(queries) if labels["mode"] == "trained" else np.zeros((2, manifest["embed_dim"])).tolist(),
        "emotion": embed(label_prompts(labels, labels["emotion"], "emotion")),
        "sentiment": embed(label_prompts(labels, labels["sentiment"], "sentiment")),
    }


def dump_manifest(manifest: dict) -> str:
    return json.dumps({k: v for k, v in manifest.items() if k != "embeddings"}, indent=2)
