"""The real windows a bundle's precisions are compared on, and the check at a bundle's first load.

The windows are the packaged sample clip (a face and JFK's speech) cut as the live monitor cuts it: the
windower with the bundle's reading setting (window, hop, frames) and face crop, at four offsets (0 to 1.5 s)
so the frames and audio differ from window to window; each carries words of the known transcript spread over
the clip in proportion to their length: the utterance so far where the bundle reads that, else each word in
every window it overlaps. ``export/agreement.py`` reads each
window with every set of its modalities.

At first load (``merclip-live``, ``serve``, ``rescore``): where the runtime could choose bf16 (auto, a CPU
with AMX / AVX-512-BF16, OpenVINO installed) but the bundle carries no bf16 measurement (exported before
this check, or on a CPU without bf16), the check runs once and is cached under ``runtime.cache_dir``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from merclip.export.agreement import InputSource
from merclip.model.reading import ReadingSetting, join_text, reading_words, spread_words

from merclip.errors import MerClipError

from .records import AudioBlock, Frame
from .sources import FileSource, sample_path
from .windowing import Windower

log = logging.getLogger(__name__)

# What is said in the packaged sample clip (JFK, from the openai/whisper repository's test clip).
SAMPLE_TRANSCRIPT = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)
# Four cuts of the 11-s clip, 0.5 s apart (about a word): 21 windows whose frames, voice and words differ, up
# to 147 readings (7 modality sets each); a text-only model reads ~20 distinct ones (the clip has 22 words).
# Eight cuts doubled the cost (ViT-B-32: minutes at export on a busy 2-core machine) and added no distinct words.
OFFSETS_S = (0.0, 0.5, 1.0, 1.5)
INPUTS = f"the sample clip's windows at {len(OFFSETS_S)} offsets"


def sample_inputs(reading: ReadingSetting, face=None, with_audio: bool = True) -> list[tuple]:
    """(frames, audio, words) of every window of the sample clip at each offset in ``OFFSETS_S``, cut as
    ``reading`` says (window, hop, frame count); ``face``: the bundle's ``FaceSetting`` (None or off: whole
    frames). Words: the utterance so far where ``reading`` reads that, else each word in every window it
    overlaps (more distinct texts than each window's own words, same kind of input)."""
    from merclip.model.face import FaceTracker

    items = [i for i in FileSource(sample_path(), realtime=False) if isinstance(i, Frame | AudioBlock)]
    ends = [i.t_s + (len(i.samples) / 16000 if isinstance(i, AudioBlock) else 0.0) for i in items]
    duration = max(ends)
    spoken = spread_words(SAMPLE_TRANSCRIPT, 0.0, duration)
    out = []
    for offset in OFFSETS_S:
        windower = Windower(reading.window_s, reading.hop_s, reading.frames_per_window,
                            face=FaceTracker(face) if face is not None and face.on else None)  # fmt: skip
        windows = []
        for item, end in zip(items, ends, strict=True):
            if end - offset <= 0 or (isinstance(item, Frame) and item.t_s < offset):
                continue
            windows.extend(windower.push(replace(item, t_s=item.t_s - offset)))
        windows.extend(windower.flush())
        for w in windows:
            lo, hi = w.t_start_s + offset, w.t_end_s + offset
            if reading.context == "utterance":
                said = join_text(reading_words(spoken, hi, reading))
            else:
                said = " ".join(x.text for x in spoken if x.start_s < hi and lo < x.end_s)
            audio = w.audio if with_audio and w.has_audio else None
            out.append((list(w.frames) or None, audio, said or None))
    return out


def bundle_inputs(bundle) -> list[tuple]:
    """The sample windows as ``bundle`` reads them (its reading setting, face crop; no audio for zero-shot)."""
    return sample_inputs(bundle.reading, bundle.face, with_audio=bundle.mode != "zero-shot")


SAMPLE = InputSource(INPUTS, bundle_inputs)


def bf16_candidate(manifest: dict, providers: str, precision: str) -> bool:
    """Whether bf16 could be chosen automatically here, were its agreement known."""
    from merclip.export.backends import openvino_version
    from merclip.export.cpu import this_cpu

    return (providers in ("auto", "openvino") and precision == "auto" and manifest.get("precision") == "fp32"
            and this_cpu().bf16 and openvino_version() is not None)  # fmt: skip


def check_at_first_load(folder: str | Path, providers: str, precision: str, threads: int, cache_dir: str,
                        say=print) -> None:  # fmt: skip
    """Measure bf16 against fp32 on the sample clip when the runtime could choose bf16 but the bundle has no
    measurement (manifest or cache); the result goes to the cache. Any failure leaves fp32 in use."""
    from merclip.export.agreement import read_records, write_cached
    from merclip.export.manifest import read_manifest
    from merclip.export.measure import measure_bf16

    manifest = read_manifest(folder, verify=False)
    if not bf16_candidate(manifest, providers, precision) or "bf16" in read_records(manifest, cache_dir):
        return
    say(f"checking bf16 against fp32 on the sample clip, once for this bundle (cached in {cache_dir})…")
    start = time.perf_counter()
    try:
        agreement = measure_bf16(folder, SAMPLE, threads)
    except (MerClipError, OSError, RuntimeError, ValueError) as err:
        say(f"notice: the bf16 check failed ({str(err).splitlines()[0][:160]}): the model runs at fp32")
        return
    if agreement is None:  # OpenVINO could not run the bundle: Bundle.load says so itself
        return
    try:
        write_cached(manifest, cache_dir, {"bf16": agreement.to_json()})
    except OSError as err:
        say(f"notice: cannot cache the bf16 check in {cache_dir} ({err.strerror}): it runs again next start")
    say(f"{agreement.line()} ({time.perf_counter() - start:.0f} s)")
