"""Continuous real speech through every kind of file users make: the words the session logs, per container.

Muxes a speech recording (default ``../shared/media/lj-reading.flac``: 222 s of one speaker reading, 564
words) with the packaged sample clip's face video into each file kind of ``tests/media_util.FILE_KINDS``
(MP4 with video 0.5/1/2 s ahead, audio ahead, MKV, WebM VP9/Opus 48 kHz, MOV 44.1-kHz stereo PCM, a
variable frame rate, audio starting 1 s late), replays each with the real entry point
(``merclip-live --source FILE --model tiny --no-ui --fast --log``, the real tiny.en) and compares the CSV's
words with those of the same file's audio track replayed alone (its packets copied, not re-encoded, so any
difference is the windowing's): WER, word counts, empty windows, late items. With ``--reference`` (tiny.en's
offline transcript of the speech file) every run, and the speech file replayed alone, is scored against it
too: the issue asks that a muxed file's WER stays within 0.01 of the audio-only run's. BENCHMARKS.md
("Nothing lost: real media") holds the numbers.

Usage: python scripts/media_conformance.py [--speech FILE] [--reference TXT] [--out runs/media] [--kinds a,b]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the file builders the conformance tests use

from media_util import FILE_KINDS, audio_track_only, build, file_name, file_order, speech  # noqa: E402


def words_of(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def session(path: Path, out: Path) -> dict:
    """Replay ``path`` through merclip-live; what its CSV holds."""
    log = out / f"{path.stem}.csv"
    log.unlink(missing_ok=True)
    start = time.monotonic()
    live = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"]
    run = subprocess.run([*live, "--source", str(path), "--model", "tiny", "--no-ui", "--fast", "--log", str(log)],
                         capture_output=True, text=True)  # fmt: skip
    if run.returncode != 0:
        raise SystemExit(f"{path.name}: merclip-live failed:\n{run.stderr}")
    rows = list(csv.DictReader(open(log, newline="")))
    return {
        "words": words_of(" ".join(r["transcript"] for r in rows)),
        "windows": len(rows),
        "empty_windows": sum(not r["transcript"].strip() for r in rows),
        "late_items": max((int(r["late_items"]) for r in rows), default=0),
        "wall_s": round(time.monotonic() - start, 1),
    }


def main() -> None:
    import jiwer

    shared = ROOT.parent / "shared" / "media"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech", default=str(shared / "lj-reading.flac"))
    parser.add_argument("--reference", default=str(shared / "lj-reading.reference.txt"))
    parser.add_argument("--out", default="runs/media")
    parser.add_argument("--kinds", default=",".join(FILE_KINDS), help="comma-separated file kinds")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    alone = session(Path(args.speech), out)
    results = {"audio only": {k: v for k, v in alone.items() if k != "words"} | {"n_words": len(alone["words"])}}
    reference = words_of(Path(args.reference).read_text()) if Path(args.reference).is_file() else None

    def vs_offline(words: list[str]) -> dict:
        return {"wer_vs_offline": round(jiwer.wer(" ".join(reference), " ".join(words)), 4)} if reference else {}

    results["audio only"] |= vs_offline(alone["words"])
    wave = speech(args.speech)
    for kind in args.kinds.split(","):
        how = FILE_KINDS[kind][0]
        path = build(out / file_name(kind), wave, **how)
        video_lead, audio_lead = file_order(path)
        got = session(path, out)
        # the same audio track alone (packets copied, not re-encoded): any difference is the windowing's
        track = session(audio_track_only(path, out / file_name(kind, audio_only=True)), out)
        results[kind] = {
            "video_lead_s": round(video_lead, 2),
            "audio_lead_s": round(audio_lead, 2),
            "n_words": len(got["words"]),
            "n_words_track_alone": len(track["words"]),
            "wer_vs_track_alone": round(jiwer.wer(" ".join(track["words"]), " ".join(got["words"])), 4),
            **vs_offline(got["words"]),
            "track_alone_wer_vs_offline": vs_offline(track["words"]).get("wer_vs_offline"),
            **{k: v for k, v in got.items() if k != "words"},
        }
        print(kind, results[kind], flush=True)
    (out / "media_conformance.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
