"""Run an exported bundle: no torch, no open_clip.

``Bundle.load(path, providers="auto", precision="auto")`` chooses the runtime once (``export/backends.py``:
onnxruntime on TensorRT -> CUDA, else OpenVINO at bf16 on CPUs with AMX / AVX-512-BF16 where the bundle's
bf16 readings were measured to agree with fp32, else onnxruntime's CPU provider) and says in one line what
runs each part and why nothing faster was used. A graph OpenVINO cannot compile runs on onnxruntime at fp32
instead (one notice; the session goes on).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from merclip.model.face import FaceSetting
from merclip.model.preprocess import normalize_frames, resize_center_crop
from merclip.model.reading import ReadingSetting
from merclip.model.tokenizer import ClipTokenizer, prompt_text

from merclip.errors import MerClipError

from .agreement import read_records
from .backends import ORT_EPS, Plan, choose_plan, openvino_version, ort_chain
from .cpu import CpuInfo, this_cpu
from .manifest import read_manifest

log = logging.getLogger(__name__)


_FUSE_INPUTS = (
    "vision", "audio", "text", "text_valid", "text_pooled", "present", "queries", "emotion_labels", "sentiment_labels",
)  # fmt: skip


def _load_tokenizer(path: Path, preprocess: dict) -> ClipTokenizer:
    try:
        tokenizer = ClipTokenizer.from_file(path, int(preprocess["context_length"]))
    except Exception as err:  # the tokenizers library raises its own exception types
        raise MerClipError(
            f"bundle file {path} is not a valid tokenizer: {str(err).splitlines()[0][:160] if str(err) else err!r}"
        ) from None
    if tokenizer.sot_id is None or tokenizer.eot_id is None:
        raise MerClipError(f"bundle file {path} is not a CLIP tokenizer (no start/end-of-text tokens)")
    return tokenizer


@dataclass(frozen=True)
class Prediction:
    emotion: np.ndarray  # (B, K_e) probabilities
    sentiment: np.ndarray  # (B, K_s) probabilities
    present: np.ndarray  # (B, 3) modalities used, columns L, V, A


def choose_providers(requested: str, precision: str, cache_dir: str | Path | None) -> tuple[list, str]:
    """onnxruntime's providers alone (no OpenVINO): (providers list, a one-line note of those skipped)."""
    if requested not in ("auto", "tensorrt", "cuda", "cpu"):
        raise MerClipError(f"providers must be auto, tensorrt, cuda or cpu, got {requested!r}")
    return ort_chain(requested, precision, set(ort.get_available_providers()), cache_dir)


class Bundle:
    """An exported MER-CLIP bundle, ready to encode frames, audio and text and to fuse them."""

    def __init__(self, folder: Path, manifest: dict, sessions: dict, tokenizer: ClipTokenizer, report: list[str],
                 plan: Plan | None = None, notices: Sequence[str] = ()):  # fmt: skip
        self.folder = folder
        self.manifest = manifest
        self.sessions = sessions
        self.tokenizer = tokenizer
        self.provider_report = report  # one line per part: what runs it
        self.plan = plan or Plan("onnxruntime", manifest["precision"], (ORT_EPS["cpu"],))
        self.notices = list(notices)  # fallbacks the user should hear about once (printed as notice: lines)
        pre = manifest["preprocess"]
        self.image_size = int(pre["image_size"])
        self.image_mean, self.image_std = pre["image_mean"], pre["image_std"]
        self.window_samples = int(pre["window_samples"])
        self.sample_rate = int(pre["sample_rate"])
        self.frames_per_window = int(pre["frames_per_window"])
        self.context_length = int(pre["context_length"])
        # the pictures the model was trained on: the live monitor crops the face when this is on
        self.face: FaceSetting = FaceSetting.from_json(pre.get("face"))
        # how the monitor reads with it (window, hop, frames, which words); a bundle from before the setting
        # read each window's own words
        self.reading: ReadingSetting = ReadingSetting.from_json(
            pre.get("reading"), window_s=self.window_samples / self.sample_rate,
            frames_per_window=self.frames_per_window,
        )  # fmt: skip
        self.embed_dim = int(manifest["embed_dim"])
        emb = manifest["embeddings"]
        labels = manifest["labels"]
        self.emotion_labels: list[str] = list(labels["emotion"])
        self.sentiment_labels: list[str] = list(labels["sentiment"])
        self._queries = self._array(emb["queries"], 2)
        self._emotion = self._array(emb["emotion"], len(self.emotion_labels))
        self._sentiment = self._array(emb["sentiment"], len(self.sentiment_labels))
        self._fuse_inputs = {i.name for i in sessions["fuse"].get_inputs()}

    def _array(self, values, rows: int) -> np.ndarray:
        if values is None:  # fixed-label variants: the fuse graph ignores label embeddings
            return np.zeros((rows, self.embed_dim), np.float32)
        return np.asarray(values, dtype=np.float32)

    # ---- loading --------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        folder: str | Path,
        providers: str = "auto",
        threads: int = 0,
        cache_dir: str | Path | None = None,
        verify: bool = True,
        precision: str = "auto",
        cpu: CpuInfo | None = None,
    ) -> Bundle:
        """``providers``: auto, tensorrt, cuda, openvino or cpu (onnxruntime's CPU provider); ``precision``:
        auto, fp32, bf16 or int8; ``cpu``: this CPU's capabilities (tests pass a faked one)."""
        folder = Path(folder).expanduser()
        manifest = read_manifest(folder, verify=verify)
        records = read_records(manifest, cache_dir)
        plan = choose_plan(providers, precision, manifest["precision"], cpu or this_cpu(),
                           set(ort.get_available_providers()), openvino_version(), records, cache_dir)  # fmt: skip
        sessions, report, plan, notices = _open_sessions(folder, manifest, plan, threads)
        tokenizer = _load_tokenizer(folder / manifest["tokenizer_file"]["path"], manifest["preprocess"])
        bundle = cls(folder, manifest, sessions, tokenizer, report, plan, notices)
        bundle._check_shapes()
        if plan.backend == "openvino":
            bundle.warm_up()
        return bundle

    def warm_up(self) -> None:
        """One window through every part, so the first live window does not pay for it: OpenVINO prepares its
        kernels at a graph's first call (ViT-B-32 bf16, measured: vision 206 ms then 47, audio 234 then 46,
        text 110 then 31, fusion 58 then 8 — half a second on the first window's latency)."""
        start = time.perf_counter()
        size = self.image_size
        frames = [np.zeros((size, size, 3), np.uint8)] * self.frames_per_window
        self.predict(frames, np.zeros(self.window_samples, np.float32), "warm up")
        log.info("runtime warmed up in %.0f ms", (time.perf_counter() - start) * 1000)

    def _check_shapes(self) -> None:
        # Each graph must be the part it is filed as: a swapped or foreign graph fails here, not every window.
        names = {"vision": "images", "audio": "waveform", "text": "input_ids", "labels": "input_ids"}
        for part, name in names.items():
            if part in self.sessions:
                got = [i.name for i in self.sessions[part].get_inputs()]
                if got != [name]:
                    self._mismatch(part, f"inputs {got} != [{name!r}] (not the {part} graph)")
        if len(self.sessions["text"].get_outputs()) != 3:
            self._mismatch("text", "it must output tokens, valid and pooled (not the text graph)")

        def dims(part: str, output: bool = False) -> list:
            sess = self.sessions[part]
            return list((sess.get_outputs() if output else sess.get_inputs())[0].shape)

        checks = [
            ("vision", dims("vision")[1:], [3, self.image_size, self.image_size], "images (3, S, S)"),
            ("vision", dims("vision", output=True)[-1:], [self.embed_dim], "feature width"),
            ("audio", dims("audio")[-1:], [self.window_samples], "window samples"),
            ("text", dims("text")[-1:], [self.context_length], "context length"),
        ]
        for part, got, want, what in checks:
            if got != want:
                self._mismatch(part, f"{what} {got} != {want}")

        fuse_in = {i.name: list(i.shape) for i in self.sessions["fuse"].get_inputs()}
        if set(fuse_in) - set(_FUSE_INPUTS) or "present" not in fuse_in:
            self._mismatch("fuse", f"inputs {sorted(fuse_in)} (not the fuse graph)")
        for name in ("vision", "audio", "text", "text_pooled", "queries", "emotion_labels", "sentiment_labels"):
            width = (fuse_in.get(name) or [None])[-1]
            if isinstance(width, int) and width != self.embed_dim:
                self._mismatch("fuse", f"{name} width {width} != embed_dim {self.embed_dim}")
        outputs = self.sessions["fuse"].get_outputs()
        if len(outputs) != 2:
            self._mismatch("fuse", f"{len(outputs)} outputs, not emotion and sentiment probabilities")
        tasks = (("emotion", self.emotion_labels), ("sentiment", self.sentiment_labels))
        for out, (task, labels) in zip(outputs, tasks, strict=True):
            k = out.shape[-1] if out.shape else None
            if isinstance(k, int) and k != len(labels):
                self._mismatch("fuse", f"it scores {k} {task} labels, the manifest lists {len(labels)}")

    def _mismatch(self, part: str, what: str) -> None:
        path = self.folder / self.manifest["parts"][part]["path"]
        raise MerClipError(f"bundle file {path} does not match the manifest: {what}")

    # ---- description ----------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.manifest["mode"]

    @property
    def random_weights(self) -> bool:
        return bool(self.manifest.get("random_weights"))

    @property
    def emotion_threshold(self) -> float:
        return float(self.manifest["thresholds"]["emotion"])

    @property
    def multi_label(self) -> bool:
        """True: independent sigmoid per emotion label (threshold); False: a softmax over the labels."""
        return self.manifest["labels"].get("emotion_mode", "multi_label") == "multi_label"

    @property
    def neutral_label(self) -> str | None:
        """Zero-shot: the neutral prompt's label, always among the emotion labels."""
        return self.manifest["labels"].get("neutral") if self.mode == "zero-shot" else None

    def describe(self) -> str:
        m = self.manifest
        tags = [m["mode"], m["precision"]] + (["random weights"] if self.random_weights else [])
        return f"{m['arch']} ({', '.join(tags)})"

    def runtime_line(self) -> str:
        """What runs the model here, at which precision, on which instruction sets, and why nothing faster."""
        plan, cpu = self.plan, this_cpu()
        version = ov_version if plan.backend == "openvino" and (ov_version := openvino_version()) else ort.__version__
        line = f"{plan.name} {version}, {plan.precision}"
        if plan.backend == "openvino" or plan.name.endswith("CPU"):
            line += f" on {cpu.describe()}"
        others = [r for r in self.provider_report if not r.endswith(f": {plan.name} {plan.precision}")]
        if others:  # parts that run elsewhere (a GPU provider missing an op, a graph OpenVINO cannot compile)
            line += f"; {', '.join(others)}"
        return line + (f" ({plan.why})" if plan.why else "")

    # ---- the parts ------------------------------------------------------------------------------------
    def preprocess_frames(self, frames_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 frames of any size -> (N, 3, S, S) float32 ready for ``encode_frames``."""
        crops = np.stack([resize_center_crop(f, self.image_size) for f in frames_rgb])
        return normalize_frames(crops, self.image_mean, self.image_std)

    def encode_frames(self, images: np.ndarray) -> np.ndarray:
        return self.sessions["vision"].run(None, {"images": images.astype(np.float32, copy=False)})[0]

    def encode_audio(self, waveform: np.ndarray) -> np.ndarray:
        wave = np.asarray(waveform, np.float32)
        if wave.ndim == 1:
            wave = wave[None]
        if wave.shape[1] != self.window_samples:
            raise ValueError(f"audio windows must be {self.window_samples} samples, got {wave.shape[1]}")
        return self.sessions["audio"].run(None, {"waveform": wave})[0]

    def encode_text(self, texts: Sequence[str]):
        ids = self.tokenizer(list(texts))
        return tuple(self.sessions["text"].run(None, {"input_ids": ids}))

    def embed_label_texts(self, prompts: Sequence[str]) -> np.ndarray:
        if "labels" not in self.sessions:
            raise MerClipError("this bundle's labels are fixed (variant without label encoder)")
        length = int(self.manifest["preprocess"]["label_context_length"])
        ids = self.tokenizer(list(prompts), context_length=length)
        return self.sessions["labels"].run(None, {"input_ids": ids})[0]

    def _prompts(self, labels: Sequence[str], task: str) -> list[str]:
        meta = self.manifest["labels"]
        if meta["mode"] == "zero-shot":
            return [meta[f"{task}_template"].format(label=label) for label in labels]
        return [prompt_text(label, meta["prompt_context"]) for label in labels]

    def set_labels(self, emotion: Sequence[str] | None = None, sentiment: Sequence[str] | None = None) -> None:
        """Use new label texts (words, phrases, sentences) without retraining."""
        if emotion and self.neutral_label and self.neutral_label not in emotion:
            emotion = [*emotion, self.neutral_label]  # zero-shot scores a neutral prompt with the emotions
        if emotion and list(emotion) != self.emotion_labels:
            self._emotion = self.embed_label_texts(self._prompts(emotion, "emotion"))
            self.emotion_labels = list(emotion)
        if sentiment and list(sentiment) != self.sentiment_labels:
            self._sentiment = self.embed_label_texts(self._prompts(sentiment, "sentiment"))
            self.sentiment_labels = list(sentiment)

    def fuse(
        self, vision: np.ndarray | None, audio: np.ndarray | None, text: tuple | None, batch: int = 1
    ) -> Prediction:
        """Encoded modalities (None = missing) -> probabilities; the reading uses what is present."""
        dim = self.embed_dim
        present = np.zeros((batch, 3), np.float32)
        if text is not None:
            present[:, 0] = 1
            tokens, valid, pooled = text
        else:
            tokens = np.zeros((batch, self.context_length, dim), np.float32)
            valid = np.ones((batch, self.context_length), bool)
            pooled = np.zeros((batch, dim), np.float32)
        if vision is not None:
            present[:, 1] = 1
        else:
            vision = np.zeros((batch, 1, dim), np.float32)
        if audio is not None:
            present[:, 2] = 1
        else:
            audio = np.zeros((batch, 1, dim), np.float32)
        feeds = {
            "vision": vision,
            "audio": audio,
            "text": tokens,
            "text_valid": valid,
            "text_pooled": pooled,
            "present": present,
            "queries": self._queries,
            "emotion_labels": self._emotion,
            "sentiment_labels": self._sentiment,
        }
        feeds = {k: v for k, v in feeds.items() if k in self._fuse_inputs}
        emotion, sentiment = self.sessions["fuse"].run(None, feeds)
        return Prediction(emotion, sentiment, present)

    def predict(
        self, frames_rgb: Sequence[np.ndarray] | None = None, audio: np.ndarray | None = None, text: str | None = None
    ) -> Prediction:
        """One window: RGB frames, 2 s of 16 kHz audio, a transcript; any may be None."""
        vision = None
        if frames_rgb is not None and len(frames_rgb):
            vision = self.encode_frames(self.preprocess_frames(frames_rgb))[None]
        audio_feats = self.encode_audio(audio) if audio is not None else None
        text_feats = self.encode_text([text]) if text else None
        return self.fuse(vision, audio_feats, text_feats)


def _ort_options(precision: str, providers: Sequence, threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    on_cpu_only = all((p[0] if isinstance(p, tuple) else p) == ORT_EPS["cpu"] for p in providers)
    # onnxruntime's CPU fusions crash (segfault, seen with 1.32) on fp16 graphs: basic level there.
    level = "ORT_ENABLE_BASIC" if precision == "fp16" and on_cpu_only else "ORT_ENABLE_ALL"
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return opts


def _ort_session(path: Path, opts: ort.SessionOptions, providers: Sequence):
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
    except Exception as err:
        raise MerClipError(
            f"bundle file {path} cannot be loaded by onnxruntime: {str(err).splitlines()[0][:200]}"
        ) from None


def _open_sessions(folder: Path, manifest: dict, plan: Plan, threads: int) -> tuple:
    """(sessions by part, one report line per part, the plan as carried out, notices). OpenVINO that cannot
    be imported, or a graph it cannot compile, falls back to onnxruntime's CPU provider at fp32."""
    from .ov_session import OpenVinoCompiler, OpenVinoError

    notices: list[str] = []
    compiler = None
    if plan.backend == "openvino":
        try:
            compiler = OpenVinoCompiler(plan.precision, threads)
        except OpenVinoError as err:
            notices.append(f"notice: OpenVINO is not usable here ({err}): the model runs on onnxruntime fp32")
            plan = replace(plan, backend="onnxruntime", precision="fp32", providers=(ORT_EPS["cpu"],))
    fallback = plan.providers if plan.backend == "onnxruntime" else (ORT_EPS["cpu"],)
    opts = _ort_options(manifest["precision"], fallback, threads)
    sessions, report, failed = {}, [], []
    for name, entry in manifest["parts"].items():
        path = folder / entry["path"]
        if compiler is not None:
            try:
                sessions[name] = compiler.compile(path)
                report.append(f"{name}: OpenVINO {plan.precision}")
                continue
            except OpenVinoError as err:
                failed.append(f"{name} ({err})")
        sess = _ort_session(path, opts, fallback)
        sessions[name] = sess
        used = sess.get_providers()[0].replace("ExecutionProvider", "")
        report.append(f"{name}: onnxruntime {used} {'fp32' if compiler is not None else manifest['precision']}")
    if failed:
        notices.append(f"notice: OpenVINO could not compile {'; '.join(failed)}: "
                       "that part runs on onnxruntime fp32, the rest on OpenVINO")  # fmt: skip
    if plan.skipped:
        log.info("onnxruntime providers skipped: %s", plan.skipped)
    for line in notices:
        log.warning("%s", line.removeprefix("notice: "))
    return sessions, report, plan, notices
