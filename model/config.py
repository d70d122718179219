"""The MER-CLIP network's config and calibration records, as stored in checkpoints and bundle manifests.

``MerClipConfig`` says which network to build (architecture, variant, modalities, label texts, face crop,
reading setting); ``from_dict`` parses a stored one and refuses what does not fit, naming the key.
``Calibration`` holds the post-hoc scaling ``merclip calibrate`` fits. ``model_config`` reads a config from
the project's (``merclip.config``). No network here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from merclip.errors import MerClipError

from .audio import MelConfig
from .reading import ReadingSetting

MODALITIES = "LVA"  # column order of the ``present`` mask, whatever the fusion order
VARIANTS = ("full", "no_cmd", "no_le", "concat_fc")


@dataclass(frozen=True)
class MerClipConfig:
    arch: str = "tiny"
    variant: str = "full"
    modalities: str = "LVA"
    attend: str = "tokens"
    decoder_heads: int = 0  # 0: as the CLIP text tower (build_model records the number)
    prompt_context: int = 8
    text_context_length: int = 77
    emotion_mode: str = "multi_label"
    emotion_labels: tuple[str, ...] = ("happy", "sad", "angry", "surprise", "disgust", "fear")
    sentiment_labels: tuple[str, ...] = ("positive", "negative")
    emotion_query: str = "Emotion"
    sentiment_query: str = "Sentiment"
    mel: MelConfig = field(default_factory=MelConfig)
    # What the CLIP weights were trained with (open_clip's per-tag record). None = take it from the weights
    # (the tag, else the architecture name); build_model fills them in, so a built model's config (and a
    # checkpoint) records them and a rebuild computes the same function. Absent from old checkpoints.
    quick_gelu: bool | None = None
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    # The pictures the vision encoder was trained on (model/face.py): "haar" = the followed face, cropped
    # square with ``face_margin``; "off" = whole frames (and every checkpoint from before face cropping).
    face: str = "off"
    face_margin: float = 0.3
    # How the monitor reads with this model (model/reading.py): window length, frames per window and the
    # reading context it was trained for. None: a checkpoint from before the setting was recorded; its bundle
    # and its window scores read as the config's [capture] asks (ReadingSetting.for_untrained).
    reading: ReadingSetting | None = None

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise MerClipError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        mods = self.modalities
        if not mods or set(mods) - set(MODALITIES) or len(set(mods)) != len(mods):
            raise MerClipError(f"modalities must be an order of distinct letters from L, V, A, got {mods!r}")
        if self.attend not in ("tokens", "pooled"):
            raise MerClipError(f"attend must be 'tokens' or 'pooled', got {self.attend!r}")
        if self.emotion_mode not in ("multi_label", "single_label"):
            raise MerClipError(f"emotion_mode must be multi_label or single_label, got {self.emotion_mode!r}")
        if self.face not in ("haar", "off"):
            raise MerClipError(f"face must be 'haar' or 'off', got {self.face!r}")
        if not 0.0 <= self.face_margin <= 2.0:
            raise MerClipError(f"face_margin must be in [0, 2], got {self.face_margin}")

    @property
    def uses_label_encoder(self) -> bool:
        return self.variant in ("full", "no_cmd")

    @property
    def uses_decoder(self) -> bool:
        return self.variant in ("full", "no_le")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MerClipConfig:
        """Parse a stored config (JSON types); a missing key takes its default, anything else that does not
        fit (unknown key, wrong type) is refused with a MerClipError naming the key."""
        if not isinstance(data, dict):
            raise MerClipError(f"model config must be a JSON object, got {_json_type(data)}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise MerClipError(f"model config has unknown keys: {', '.join(sorted(unknown))}")
        data = {key: _check_field(key, value) for key, value in data.items()}
        if "mel" in data:
            data["mel"] = _mel_from_dict(data["mel"])
        if data.get("reading") is not None:
            data["reading"] = ReadingSetting.from_json(data["reading"])
        return cls(**data)


# Stored-config schema: key -> kind, or (kind, bound) for numbers
_STR, _INT, _NUM, _LABELS, _BOOL_OR_NONE, _TRIPLE_OR_NONE, _DICT, _DICT_OR_NONE = range(8)
_CONFIG_KINDS = {
    "arch": _STR,
    "variant": _STR,
    "modalities": _STR,
    "attend": _STR,
    "decoder_heads": (_INT, 1),
    "prompt_context": (_INT, 0),
    "text_context_length": (_INT, 1),
    "emotion_mode": _STR,
    "emotion_labels": _LABELS,
    "sentiment_labels": _LABELS,
    "emotion_query": _STR,
    "sentiment_query": _STR,
    "mel": _DICT,
    "quick_gelu": _BOOL_OR_NONE,
    "image_mean": _TRIPLE_OR_NONE,
    "image_std": _TRIPLE_OR_NONE,
    "face": _STR,
    "face_margin": (_NUM, None),
    "reading": _DICT_OR_NONE,
}
_MEL_KINDS = {
    "sample_rate": (_INT, 1),
    "segment_s": (_NUM, 0),
    "n_fft": (_INT, 1),
    "hop_length": (_INT, 1),
    "n_mels": (_INT, 1),
    "image_size": (_INT, 1),
    "db_mean": (_NUM, None),
    "db_std": (_NUM, 0),
    "amin": (_NUM, 0),
}
# Keys every stored config has had since the first checkpoint format; the others were added later.
CONFIG_KEYS_ADDED_LATER = ("quick_gelu", "image_mean", "image_std", "face", "face_margin", "reading")


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    if isinstance(value, bool | str | dict | list | tuple):
        return names[type(value)]
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_field(key: str, value, kinds: dict = _CONFIG_KINDS, where: str = ""):
    kind, least = kinds[key] if isinstance(kinds[key], tuple) else (kinds[key], None)
    name = f"{where}{key}"
    if kind == _STR:
        ok = isinstance(value, str)
        want = "a string"
    elif kind == _INT:  # at least ``least``
        ok = _is_number(value) and isinstance(value, int) and (least is None or value >= least)
        want = "an integer" + ("" if least is None else f" >= {least}")
    elif kind == _NUM:  # above ``least``
        ok = _is_number(value) and (least is None or value > least)
        want = "a number" + ("" if least is None else f" > {least}")
    elif kind == _LABELS:
        ok = isinstance(value, list | tuple) and len(value) > 0 and all(isinstance(v, str) and v for v in value)
        value = tuple(value) if ok else value
        want = "a non-empty list of label strings"
    elif kind == _BOOL_OR_NONE:
        ok = value is None or isinstance(value, bool)
        want = "true, false or null"
    elif kind == _TRIPLE_OR_NONE:
        ok = value is None or (isinstance(value, list | tuple) and len(value) == 3 and all(map(_is_number, value)))
        value = tuple(float(v) for v in value) if ok and value is not None else value
        want = "null or a list of 3 numbers"
    elif kind == _DICT_OR_NONE:
        ok = value is None or isinstance(value, dict)
        want = "null or an object"
    else:
        ok = isinstance(value, dict)
        want = "an object"
    if not ok:
        shown = repr(value) if _is_number(value) or isinstance(value, str) else _json_type(value)
        raise MerClipError(f"model config: {name} must be {want}, got {shown}")
    return value


def _mel_from_dict(data: dict) -> MelConfig:
    unknown = set(data) - set(_MEL_KINDS)
    if unknown:
        raise MerClipError(f"model config: mel has unknown keys: {', '.join(sorted(unknown))}")
    return MelConfig(**{key: _check_field(key, value, _MEL_KINDS, "mel.") for key, value in data.items()})


@dataclass
class Calibration:
    """Post-hoc calibration of the heads' probabilities (fitted by ``merclip calibrate``; identity = none).

    Single-label heads (sentiment, MELD emotion): temperature scaling, softmax(logits * scale) with
    scale = 1/T; the arg-max is unchanged. Multi-label emotion: Platt scaling shared by every label,
    sigmoid(logits * scale + bias), one pair for any label set (labels are text a user may change);
    ``map_threshold`` moves the decision threshold with it so that the same labels pass."""

    emotion_scale: float = 1.0
    emotion_bias: float = 0.0
    sentiment_scale: float = 1.0

    @property
    def identity(self) -> bool:
        return self == Calibration()

    def map_threshold(self, threshold: float) -> float:
        """The calibrated probability a multi-label decision threshold on the raw sigmoid becomes."""
        if self.identity or not 0.0 < threshold < 1.0:
            return threshold
        logit = math.log(threshold / (1.0 - threshold))
        return 1.0 / (1.0 + math.exp(-(logit * self.emotion_scale + self.emotion_bias)))

    def to_dict(self) -> dict:
        return {"emotion_scale": self.emotion_scale, "emotion_bias": self.emotion_bias,
                "sentiment_scale": self.sentiment_scale}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict | None) -> Calibration:
        data = data or {}
        try:
            values = {k: float(data.get(k, getattr(cls(), k))) for k in ("emotion_scale", "emotion_bias",
                                                                         "sentiment_scale")}  # fmt: skip
        except (TypeError, ValueError) as err:
            raise MerClipError(f"calibration values must be numbers ({err})") from None
        if not all(math.isfinite(v) for v in values.values()) or values["emotion_scale"] <= 0 \
                or values["sentiment_scale"] <= 0:  # fmt: skip
            raise MerClipError(f"calibration scales must be finite and positive, got {values}")
        return cls(**values)


def model_config(cfg, emotion_labels=None) -> MerClipConfig:
    """The MER-CLIP network config described by ``cfg`` (a ``merclip.config.Config``)."""
    from .face import face_setting

    return MerClipConfig(
        arch=cfg.model.arch,
        variant=cfg.model.variant,
        modalities=cfg.model.modalities,
        attend=cfg.model.attend,
        decoder_heads=cfg.model.decoder_heads,
        prompt_context=cfg.labels.prompt_context,
        text_context_length=cfg.model.text_context_length,
        emotion_mode=cfg.model.emotion_mode,
        emotion_labels=tuple(emotion_labels or cfg.labels.emotion),
        sentiment_labels=cfg.labels.sentiment,
        emotion_query=cfg.labels.emotion_query,
        sentiment_query=cfg.labels.sentiment_query,
        face=face_setting(cfg).mode,
        face_margin=cfg.capture.face_margin,
    )
