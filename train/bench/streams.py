"""Many streams (`merclip bench --server [URL] --streams 1,4,16`): synthetic streams against one
`merclip serve`.

Each stream is a full client session in this process (``stream/session.build_session`` with a
``RemoteEngine``, as `merclip-live --server` builds its own: windowing, the request, the reading); its
source is the synthetic one, replayed as fast as possible with backpressure (no window dropped), so the
numbers are the service's capacity: windows per second over all streams, window end -> reading latency at
that load (p50/p95), and the mean size of the batches the server ran. Words are a fixed sentence per window
(the text graph runs; Whisper is not part of the served model). Without a URL a local service is started
on the loopback interface and stopped at the end. Bounded: ``--windows`` per stream and ``RUN_CAP_S`` per
stream count.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from merclip.model.reading import ReadingSetting
from merclip.stream.remote import ClientAuth, RemoteEngine, mean_batch
from merclip.stream.session import SessionOptions, build_session
from merclip.stream.sources import SyntheticSource
from merclip.stream.speech import TranscriptUpdate, WindowText

from merclip.config import Config

from .bundles import bench_bundle
from .measure import machine
from .options import BenchOptions

# A run with this many streams stops after this long, whatever is left.
RUN_CAP_S = 300.0
SENTENCE = "well I think this is going rather nicely, thank you"


class FixedWords:
    """Every window says the same sentence, final at once (no re-run of a window)."""

    def push(self, index, t_start_s, t_end_s, audio):
        words = WindowText(index, SENTENCE)
        return TranscriptUpdate(words, (words,), 0.0)

    def finish(self, t_start_s=None, audio=None):
        return TranscriptUpdate(None)


def drive(url: str, streams: int, windows: int, frames: int, auth: ClientAuth = ClientAuth()) -> dict:
    """``streams`` sessions at once, ``windows`` each, as fast as the service answers."""
    engines = [RemoteEngine.connect(url, auth) for _ in range(streams)]
    opts = SessionOptions(ReadingSetting(frames_per_window=frames), backpressure=True)
    sessions = [
        build_session(SyntheticSource(duration_s=2.0 * windows, realtime=False), engine, FixedWords(), opts)
        for engine in engines
    ]
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


def serve_bench(opts: BenchOptions, cfg: Config, server: str, counts: tuple[int, ...],
                progress: Callable[[str], None] = lambda s: None) -> dict:  # fmt: skip
    """``opts.windows`` windows on each of ``counts`` streams at once against ``server`` ("local": a service
    of our own, started here on the loopback interface for ``opts.model`` and stopped at the end)."""
    import torch
    from merclip.model import MerClipConfig, build_model
    from merclip.stream.served import ServeOptions, start_service, stop_service

    serve_opts = replace(ServeOptions.from_config(cfg), address="", host="127.0.0.1", port=_free_port())
    url, started = server, False
    # a service of our own listens on loopback only; another one is reached as merclip-live would ([runtime])
    auth = ClientAuth() if url == "local" else ClientAuth.from_config(cfg.runtime)
    try:
        if url == "local":
            torch.manual_seed(0)
            progress(f"building {opts.model} (random weights) and its bundle")
            # synthetic streams have no faces: the whole-frame model
            bundle = bench_bundle(opts, "fp32", build_model(MerClipConfig(arch=opts.model, face="off")))
            s = serve_opts
            progress(f"starting a local service ({s.replicas} replica(s), {s.num_cpus:g} CPU each, "
                     f"batches <= {s.max_batch} within {s.batch_wait_ms:g} ms)")  # fmt: skip
            url = start_service(
                bundle.folder, serve_opts, opts.providers, precision=opts.precision, cache_dir=cfg.runtime.cache_dir
            )
            started = True
        runs = []
        for n in counts:
            progress(f"{n} stream(s) x {opts.windows} windows")
            runs.append(drive(url, n, opts.windows, opts.frames, auth))
    finally:
        if started:
            stop_service(joined=False)
    base = runs[0]
    for r in runs:
        r["throughput_ratio"] = r["windows_per_s"] / base["windows_per_s"]
        r["p95_ratio"] = r["latency_ms"]["p95"] / base["latency_ms"]["p95"]
    return {"machine": machine(), "model": opts.model, "frames": opts.frames, "server": server,
            "serve": serve_opts.__dict__ if started else None, "runs": runs}  # fmt: skip
