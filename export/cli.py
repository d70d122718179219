"""`merclip export --onnx`: checkpoint or pretrained CLIP -> bundle, with a parity check."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from merclip.config import Config, load_config, override, weights_flag
from merclip.errors import MerClipError

from .agreement import InputSource


def export_from_config(
    cfg: Config,
    out: Path,
    checkpoint: str | None = None,
    zero_shot: bool = False,
    console: Console | None = None,
    reference: InputSource | None = None,
) -> dict:
    """Build or load the model ``cfg`` describes, export it to ``out``, check parity; return the manifest.
    ``reference``: real windows on which every precision the bundle can run at is compared with fp32 (the
    result goes into the manifest, ``export/agreement.py``); None: not measured (a first load measures bf16)."""
    import torch
    from merclip.model import build_model, load_checkpoint
    from merclip.model.config import model_config

    from .onnx_export import ExportOptions, export_bundle
    from .parity import check_parity
    from .runtime import Bundle

    console = console or Console(stderr=True, soft_wrap=True)
    torch.manual_seed(0)
    if checkpoint:
        model, _ = load_checkpoint(checkpoint)
        mode, weights = "trained", f"checkpoint {Path(checkpoint).name}"
        asked, trained = cfg.capture.face, model.cfg.face
        if asked != "auto" and asked != trained:  # the bundle must show the model what it was trained on
            console.print(f"notice: capture.face = {asked!r} ignored: the checkpoint was trained with face = "
                          f"{trained!r}, and the bundle keeps that")  # fmt: skip
    else:
        weights = cfg.model.weights
        model = build_model(model_config(cfg), weights=weights)
        # Without a checkpoint the decoder is untrained: pretrained CLIP is only meaningful zero-shot.
        mode = "zero-shot" if zero_shot or weights != "random" else "trained"
    reading = bundle_reading(cfg, model.cfg.reading, console)
    opts = ExportOptions(
        out=out,
        mode=mode,
        weights=weights,
        precision=cfg.export.precision,
        opset=cfg.export.opset,
        reading=reading,
        emotion_template=cfg.export.emotion_template,
        sentiment_template=cfg.export.sentiment_template,
        emotion_threshold=cfg.labels.emotion_threshold,
        neutral_label=cfg.labels.neutral,
        parity_samples=cfg.export.parity_samples,
    )
    manifest = export_bundle(model, opts)
    bundle = Bundle.load(out, providers="cpu")
    # fp32 must match exactly (32 windows show it); lower precisions report agreement over a few hundred.
    count = opts.parity_samples if opts.precision == "fp32" else max(opts.parity_samples, 200)
    parity = check_parity(model, bundle, count=count, frames=reading.frames_per_window)
    console.print(parity.line(opts.precision))
    if opts.precision == "fp32" and parity.max_abs_diff > 1e-4:
        raise MerClipError(f"export parity failed: max |dp| {parity.max_abs_diff:.2e} > 1e-4 (bundle left in {out})")
    if reference is not None:
        manifest["agreement"] = measure_at_export(model, out, bundle, reference, console)
    sizes = ", ".join(
        f"{e['path']} {(out / e['path']).stat().st_size / 1e6:.1f} MB" for e in manifest["parts"].values()
    )
    console.print(
        f"bundle {out}: {manifest['arch']} {mode} {opts.precision}, activation {manifest['model']['activation']}"
        f"{' (random weights)' if manifest['random_weights'] else ''}; {sizes}"
    )
    return manifest


def bundle_reading(cfg: Config, trained, console: Console):
    """How the bundle will be read live: as its checkpoint was trained to be read (a config asking otherwise
    gets a notice and is ignored), else (zero-shot, random weights, a checkpoint from before the setting was
    recorded) as the config says, the utterance so far unless it names a context."""
    from dataclasses import replace

    from merclip.model.reading import ReadingSetting, ignored_asks

    cap = cfg.capture
    if trained is None:
        return ReadingSetting.for_untrained(cap.context, cap.window_s, cap.hop_s, cap.frames_per_window)
    for notice in ignored_asks(cfg.asked("capture"), trained, "the checkpoint"):
        console.print(notice, markup=False, highlight=False)
    return replace(trained)


def measure_at_export(model, out: Path, bundle, reference: InputSource, console: Console) -> dict:
    """Each precision the bundle can run at, against fp32 on ``reference``'s windows; into the manifest."""
    import onnxruntime

    from .agreement import Agreement, bundle_readings, compare, write_into_manifest
    from .backends import openvino_version
    from .cpu import this_cpu
    from .measure import measure_bf16
    from .parity import torch_readings

    cpu = this_cpu()
    use_audio = bundle.mode != "zero-shot"  # zero-shot CLIP never reads audio (as the live engine)
    stats = compare(torch_readings(model, bundle), bundle_readings(bundle, use_audio), reference.windows(bundle))
    precision = bundle.manifest["precision"]
    records = {precision: Agreement(precision, f"onnxruntime {onnxruntime.__version__} {precision}", "torch fp32",
                                    reference.name, measured_on=cpu.describe(), **stats)}  # fmt: skip
    if precision == "fp32" and cpu.bf16 and openvino_version() is not None:
        measured = measure_bf16(out, reference)
        if measured is not None:
            records["bf16"] = measured
    elif precision == "fp32":
        why = "OpenVINO is not installed" if cpu.bf16 else "this CPU has no bf16 units (AMX, AVX-512-BF16)"
        console.print(f"bf16: not measured here ({why}); a first load on a CPU with them measures it")
    for record in records.values():
        console.print(record.line(), markup=False, highlight=False)
    as_json = {k: v.to_json() for k, v in records.items()}
    write_into_manifest(out, as_json)
    return as_json


def cmd_export(args, reference: InputSource | None = None) -> int:
    cfg = load_config(args.config)
    cfg = override(
        cfg,
        model={
            "arch": args.model,
            "weights": weights_flag(args.model, args.weights),
            "variant": args.variant,
            "modalities": args.modalities,
        },
        export={"out": args.out, "precision": args.precision},
    )
    if args.checkpoint and (args.model or args.weights or args.zero_shot):
        raise MerClipError("--checkpoint carries its own model: do not combine it with --model/--weights/--zero-shot")
    from .onnx_export import check_export_target

    out = check_export_target(cfg.export.out)  # before minutes of building and tracing
    export_from_config(cfg, out, args.checkpoint, args.zero_shot, reference=reference)
    return 0
