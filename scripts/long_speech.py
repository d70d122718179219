"""Write the 60-s speech recording BENCHMARKS.md scores streaming transcription on: JFK's sentence
(shared/media/jfk.flac, MIT) five times, at speeds 0.93-1.07 and after gaps of 0.3-1.7 s, so the window
boundaries cut it at different places each time, with light noise. Usage:
    python scripts/long_speech.py [../shared/media/jfk.flac] [jfk60.wav]
then: merclip bench --speech jfk60.wav --transcript "$(python scripts/long_speech.py --transcript)"
"""

from __future__ import annotations

import sys
import wave

import numpy as np

SENTENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
# (gap before, speed) of each repetition
PLAN = [(0.3, 1.0), (0.9, 0.93), (1.3, 1.07), (0.5, 0.97), (1.7, 1.04)]
RATE = 16000


def main(argv: list[str]) -> None:
    if argv[:1] == ["--transcript"]:
        print(" ".join([SENTENCE] * len(PLAN)))
        return
    from faster_whisper import decode_audio

    source = argv[0] if argv else "../shared/media/jfk.flac"
    out = argv[1] if len(argv) > 1 else "jfk60.wav"
    speech = decode_audio(source, RATE)
    parts = []
    for gap_s, speed in PLAN:
        n = int(len(speech) / speed)
        parts += [
            np.zeros(int(gap_s * RATE), np.float32),
            np.interp(np.arange(n) * speed, np.arange(len(speech)), speech),
        ]
    audio = np.concatenate(parts)
    audio = np.pad(audio, (0, max(0, 60 * RATE - len(audio))))[: 60 * RATE]
    audio = audio + 0.003 * np.random.default_rng(1).standard_normal(len(audio))
    with wave.open(out, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    print(f"wrote {out}: {len(audio) / RATE:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
