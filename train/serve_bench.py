"""`merclip bench --server [URL] --streams 1,4,16`: many synthetic streams against one `merclip serve`.

Each stream is a full client session (``LiveSession`` with a ``RemoteEngine``: windowing, the request, the
reading) in this process; its source is the synthetic one, replayed as fast as possible with backpressure
(no window dropped), so the numbers are the service's capacity: windows per second over all streams,
window end -> reading latency at that load (p50/p95), and the mean size of the batches the server ran.
Words are a fixed sentence per window (the text graph runs; Whisper is not part of the served model).
Without a URL a local service is started on the loopback interface and stopped at the end. Bounded:
``--windows`` per stream and ``RUN_CAP_S`` per stream count.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from merclip.stream.pipeline import LiveSession
from merclip.stream.remote import ClientAuth, RemoteEngine, mean_batch
from merclip.stream.sources import SyntheticSource
from merclip.stream.speech import TranscriptUpdate, WindowText
from merclip.stream.windowing import Windower

from merclip.config import Config

from .bench import BenchOptions, _bundle, machine

# A run with this many streams stops after this long, whatever is left.
RUN_CAP_S = 300.0
SENTENCE = "well I think this is going rather nicely, thank you"


class FixedWords:
    """Every window says the same sentence, final at once (no re-run of a window)."""

    def push(self, index, t_start_s, t_end_s, audio):
        words = WindowText(index, SENTENCE)
        return TranscriptUpdate(words, (words,), 0.0)

    def finish(self):
        return TranscriptUpdate(None)


def drive(url: str, streams: int, windows: int, frames: int, auth: ClientAuth = ClientAuth()) -> dict:
    """``streams`` sessions at once, ``windows`` each, as fast as the service answers."""
    engines = [RemoteEngine.connect(url, auth) for _ in range(streams)]
    sessions = [
        LiveSession(SyntheticSource(duration_s=2.0 * windows, realtime=False), Windower(frames_per_window=frames),
                    engine, FixedWords(), backpressure=True)
        for engine in engines
    ]  # fmt: skip
    latencies: list[float] = []
    finals = [0] * streams
    deadline = time.monotonic() + RUN_CAP_S

    def run(k: int) -> None:
        def on_reading(reading) -> None:
            if reading.final:
                finals[k] += 1
                latencies.append(reading.latency_ms)

        sessions[k].run(on_reading, should_stop=lambda: time.monotonic() > deadline)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    sizes = [b for e in engines for b in e.batch_sizes]
    return {
        "streams": streams,
        "windows": sum(finals),
        "dropped": sum(s.stats.dropped for s in sessions),
        "wall_s": wall,
        "windows_per_s": sum(finals) / wall,
        "latency_ms": {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))},
        "mean_batch": mean_batch(sizes),
        "service_runtime": engines[0].info.provider_report,  # what runs each part there ("vision: OpenVINO bf16")
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd_serve_bench(args, cfg: Config) -> int:
    import torch
    from merclip.model import MerClipConfig, build_model
    from merclip.stream.served import ServeOptions, start_service, stop_service
    from rich.console import Console

    err = Console(stderr=True)
    frames = args.frames or cfg.capture.frames_per_window
    opts = BenchOptions(model=args.model, frames=frames, providers=args.providers or cfg.runtime.providers,
                        precision=args.precision or cfg.runtime.precision,
                        cache_dir=str(Path(cfg.runtime.cache_dir).expanduser() / "bench"))  # fmt: skip
    serve_opts = replace(ServeOptions.from_config(cfg), address="", host="127.0.0.1", port=_free_port())
    url, started = args.server, False
    # a service of our own listens on loopback only; another one is reached as merclip-live would ([runtime])
    auth = ClientAuth() if url == "local" else ClientAuth.from_config(cfg.runtime)
    try:
        if url == "local":
            torch.manual_seed(0)
            err.print(f"[dim]building {opts.model} (random weights) and its bundle…[/dim]")
            # synthetic streams have no faces: the whole-frame model
            bundle = _bundle(opts, "fp32", build_model(MerClipConfig(arch=opts.model, face="off")))
            s = serve_opts
            err.print(f"[dim]starting a local service ({s.replicas} replica(s), {s.num_cpus:g} CPU each, "
                      f"batches <= {s.max_batch} within {s.batch_wait_ms:g} ms)…[/dim]")  # fmt: skip
            url = start_service(
                bundle.folder, serve_opts, opts.providers, precision=opts.precision, cache_dir=cfg.runtime.cache_dir
            )
            started = True
        runs = []
        for n in args.streams:
            err.print(f"[dim]{n} stream(s) x {args.windows} windows…[/dim]")
            runs.append(drive(url, n, args.windows, frames, auth))
    finally:
        if started:
            stop_service(joined=False)
    base = runs[0]
    for r in runs:
        r["throughput_ratio"] = r["windows_per_s"] / base["windows_per_s"]
        r["p95_ratio"] = r["latency_ms"]["p95"] / base["latency_ms"]["p95"]
    result = {"machine": machine(), "model": opts.model, "frames": frames, "server": args.server,
              "serve": serve_opts.__dict__ if started else None, "runs": runs}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['machine']} · {opts.model}, {frames} frames/window · "
          f"{'local service' if started else url} · streams as fast as possible (backpressure)")  # fmt: skip
    print(f"{'streams':>7} {'windows/s':>10} {'ratio':>6} {'p50 ms':>8} {'p95 ms':>8} {'p95 ratio':>9} "
          f"{'mean batch':>10} {'dropped':>7}")  # fmt: skip
    for r in runs:
        lat = r["latency_ms"]
        print(f"{r['streams']:>7} {r['windows_per_s']:>10.2f} {r['throughput_ratio']:>6.2f} {lat['p50']:>8.0f} "
              f"{lat['p95']:>8.0f} {r['p95_ratio']:>9.2f} {r['mean_batch']:>10.2f} {r['dropped']:>7}")  # fmt: skip
    return 0
