"""The `merclip-live` command line: the monitor's flags and help (the monitor itself is in `merclip.stream`)."""

from __future__ import annotations

import argparse

from merclip import __version__
from merclip.flags import (
    FRAMES,
    TEXT,
    _asr_flags,
    _bundle_flags,
    _common,
    _number,
    _Parser,
    _precision_flag,
)

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
    parser.add_argument("--frames", type=FRAMES, help="frames per window (default: as many as the bundle's model "
                        "was trained on, e.g. 4, or 12 for --recipe paper; fewer keep a slow CPU real-time, and "
                        "that is said)")  # fmt: skip
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
