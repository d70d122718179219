"""A microphone on a real PulseAudio server, measured: how long after its stream starts the first block comes,
with PortAudio's default input latency and with ``capture.mic_latency_s``; how often blocks come and how old
PortAudio says they are; and where the session places a click, against when it was played.

Starts the test rig's private PulseAudio daemon (``tests/rig.py``: a null sink, a virtual microphone on its
monitor) and measures in two states of the sound server: *idle* (nothing else playing: PulseAudio renders an
idle sink in 2-s blocks) and *busy* (``pacat`` playing into it at 20 ms of latency, as when anything plays).
Each start-up is measured in a fresh process (``devices.probe_microphone``, what ``merclip doctor`` runs),
since PortAudio's first stream in a process is the slow one. BENCHMARKS.md ("Real devices") holds the numbers.

Usage: python scripts/device_latency.py [--runs 5] [--json out.json] [--monitor]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the rig the real-device tests use

import rig  # noqa: E402

PROBE = """
import json, sys
from dataclasses import asdict
from merclip.stream.devices import probe_microphone
print(json.dumps(asdict(probe_microphone("", float(sys.argv[1]), 1.0))))
"""


def startup(pulse: rig.PulseServer, latency_s: float, runs: int, busy: bool) -> dict:
    """``runs`` fresh processes opening the default microphone: first block, block interval, age on arrival."""
    clapper = rig.Clapper(pulse) if busy else None
    results = []
    try:
        time.sleep(1.0)
        for _ in range(runs):
            run = subprocess.run([sys.executable, "-c", PROBE, str(latency_s)], env=pulse.env, capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
            results.append(json.loads(run.stdout))
            time.sleep(2.5)  # an idle sink goes back to its 2-s blocks
    finally:
        if clapper is not None:
            clapper.close()
    start = [r["start_s"] for r in results]
    ages = [r["age_s"] for r in results if r["age_s"] is not None]
    return {
        "latency_asked_s": latency_s or "PortAudio default",
        "server": "busy" if busy else "idle",
        "first_block_s": [round(s, 3) for s in start],
        "first_block_median_s": round(float(np.median(start)), 3),
        "block_interval_s": round(float(np.median([r["block_s"] for r in results])), 3),
        "age_on_arrival_median_s": round(float(np.median(ages)), 3) if ages else None,
    }


def clicks(pulse: rig.PulseServer, latency_s: float, count: int = 6) -> dict:
    """Where ``DeviceSource`` places a click (its block's stream time plus the click's offset in it) against
    when the clapper wrote it: the capture path's latency as the session sees it (rig latency included)."""
    os.environ.update(pulse.env)  # before PortAudio is loaded: the ALSA default is this server
    from merclip.stream.device_source import DeviceSource
    from merclip.stream.records import AudioBlock

    clapper = rig.Clapper(pulse)
    source = DeviceSource(camera=None, microphone="", mic_latency_s=latency_s)
    source.start()
    time.sleep(3.0)
    for k in range(count):
        clapper.click(time.monotonic() + 0.2 + 0.05 * k)  # at varying places inside a block
        time.sleep(1.0)
    time.sleep(1.0)
    source.close()
    clapper.close()
    heard = []
    while not source._queue.empty():
        item = source._queue.get_nowait()
        if isinstance(item, AudioBlock) and (loud := np.flatnonzero(np.abs(item.samples) > 0.3)).size:
            t = source.clock_origin + item.t_s + loud[0] / 16000
            if not heard or t - heard[-1] > 0.5:
                heard.append(t)
    delays = [h - p for p, h in zip(clapper.played, heard, strict=False)]
    return {"latency_asked_s": latency_s, "click_placed_after_written_ms": [round(d * 1000, 1) for d in delays]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--monitor", action="store_true",
                        help="the sink's monitor itself as the default source (as issue #23 set it up)")  # fmt: skip
    args = parser.parse_args()
    pulse = rig.PulseServer()
    pulse.start()
    if args.monitor:
        pulse.pactl("set-default-source", f"{rig.SINK}.monitor")
    try:
        report = {"startup": [startup(pulse, latency, args.runs, busy) for busy in (False, True)
                              for latency in (0.0, 0.05)]}  # fmt: skip
        report["clicks"] = clicks(pulse, 0.05)
    finally:
        pulse.stop()
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
