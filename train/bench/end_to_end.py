"""End to end: `merclip-live` itself on the sample clip at real-time pace, in a fresh process; from its JSON
lines, window-end-to-reading latency, dropped windows, the transcript's WER and word-to-screen delay."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .measure import stats_ms
from .options import BenchOptions
from .speech import SAMPLE_TRANSCRIPT, reference_words, word_delays, word_error_rate


def end_to_end(bundle_dir: Path, opts: BenchOptions, overlap: bool = True, precision: str | None = None) -> dict:
    """`merclip-live` on the sample clip at real-time pace, in a fresh process (as users run it; the bench
    process itself has torch's spinning worker threads from the eager timings)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(
            f'[asr]\nmodel = "{opts.asr_model}"\nmode = "{opts.asr_mode}"\n'
            f'[runtime]\noverlap = {str(overlap).lower()}\nproviders = "{opts.providers}"\n'
            f'precision = "{precision or opts.precision}"\n'
        )
        cmd = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())",
               "--source", "sample", "--bundle", str(bundle_dir), "--config", str(config), "--no-ui",
               "--frames", str(opts.frames)]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"end-to-end run failed: {run.stderr.strip()[-500:]}")
    readings = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    shown = [r for r in readings if not r.get("final")] or readings  # the first reading of each window
    finals = [r for r in readings if r.get("final", True)]
    delays = word_delays(readings, reference_words(opts.asr_model))
    return {
        "latency": stats_ms([r["latency_ms"] / 1000 for r in shown]),
        "readings": len(finals),
        "dropped": readings[-1]["dropped_windows"],
        "asr_ms_median": float(np.median([r["asr_ms"] for r in shown])),
        "model_ms_median": float(np.median([r["model_ms"] for r in shown])),
        "wer": word_error_rate(SAMPLE_TRANSCRIPT, " ".join(r["transcript"] for r in finals)),
        "word_to_screen_s": {
            "median": float(np.median(delays)) if delays else float("nan"),
            "p95": float(np.percentile(delays, 95)) if delays else float("nan"),
            "max": float(max(delays)) if delays else float("nan"),
            "words": len(delays),
        },
        "command": "merclip-live " + " ".join(cmd[3:]),
        "asr": {"model": opts.asr_model, "mode": opts.asr_mode},
        "overlap": overlap,
    }
