"""`merclip serve`: the monitor's model on Ray Serve, shared by many streams.

One Serve deployment (``MonitorModel``) holds an exported bundle, loaded once per replica, behind Ray
Serve's HTTP ingress (so clients need no Ray: ``stream/remote.py`` speaks plain HTTP). Windows from all
streams that reach a replica within ``batch_wait_ms`` are scored together (``@serve.batch``): every frame of
every window through the vision graph in one call, every voice through the audio graph in one, every
transcript through the text graph in one, then ``engine.read_encoded`` — the local engine's own
"features -> reading" step — fuses them, one call per set of modalities present.

The deployment is stateless: streaming ASR, smoothing, the baseline and the CSV stay on the client, so any
replica can take any window and a replica that dies costs only the windows it held (Ray Serve starts a new
one). This module imports Ray; nothing on the plain live path imports it.

Routes, under the route prefix (default ``/merclip``): ``GET /info`` (labels, threshold, preprocessing,
the bundle's identity: what a client needs before its first window), ``POST /window`` (one window, see
``stream/wire.py``).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from merclip.model.preprocess import normalize_frames
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from merclip import __version__
from merclip.config import Config
from merclip.errors import MerClipError

from .engine import Encoded, read_encoded
from .wire import WindowReply, WindowRequest, check_request_size, decode_request, encode_reply

log = logging.getLogger(__name__)

APP_NAME = "merclip"
# Requests a replica accepts beyond the batch it is running, so the next batch fills meanwhile.
QUEUE_BATCHES = 2


@dataclass(frozen=True)
class ServeOptions:
    """Where and how the service runs (config.toml ``[serve]``, flags of `merclip serve`)."""

    address: str = ""  # "" = start a local Ray cluster; "auto" or host:port = join that cluster
    host: str = "127.0.0.1"
    port: int = 8000
    route: str = "/merclip"
    replicas: int = 1
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica (fractions share a GPU: 0.25 = four replicas on one)
    max_batch: int = 16  # windows per batch
    batch_wait_ms: float = 10.0  # how long a batch waits to fill after its first window

    @classmethod
    def from_config(cls, cfg: Config) -> ServeOptions:
        s = cfg.serve
        return cls(s.address, s.host, s.port, s.route, s.replicas, s.num_cpus, s.num_gpus, s.max_batch,
                   s.batch_wait_ms)  # fmt: skip

    def url(self, host: str | None = None) -> str:
        shown = host or ("localhost" if self.host in ("0.0.0.0", "::") else self.host)
        return f"http://{shown}:{self.port}{self.route}"


def service_info(bundle, use_audio: bool) -> dict:
    """What a client needs before its first window, and the identity of the model it talks to."""
    m = bundle.manifest
    ident = json.dumps([m.get("parts"), m.get("created_utc"), bundle.emotion_labels, bundle.sentiment_labels],
                       sort_keys=True)  # fmt: skip
    return {
        "service": "merclip",
        "version": __version__,
        "model_id": hashlib.sha256(ident.encode()).hexdigest()[:16],
        "describe": bundle.describe(),
        "mode": bundle.mode,
        "random_weights": bundle.random_weights,
        "emotion_labels": bundle.emotion_labels,
        "sentiment_labels": bundle.sentiment_labels,
        "emotion_threshold": bundle.emotion_threshold,
        "multi_label": bundle.multi_label,
        "neutral_label": bundle.neutral_label,
        "labels_fixed": bool(m["labels"].get("fixed")),
        "face": bundle.face.to_json(),
        "image_size": bundle.image_size,
        "window_samples": bundle.window_samples,
        "sample_rate": bundle.sample_rate,
        "use_audio": use_audio,
        "providers": bundle.provider_report,
    }


def score_batch(bundle, requests: list[WindowRequest], use_audio: bool = True) -> list[WindowReply]:
    """Many windows (from any streams) -> their readings, each graph run once for the whole batch."""
    start = time.perf_counter()
    d = bundle.embed_dim
    counts = [len(r.images) for r in requests]
    vision = None
    if sum(counts):
        images = np.concatenate([r.images for r in requests if len(r.images)])
        vision = bundle.encode_frames(normalize_frames(images, bundle.image_mean, bundle.image_std))
    voiced = [i for i, r in enumerate(requests) if r.audio is not None and use_audio]
    audio = bundle.encode_audio(np.stack([requests[i].audio for i in voiced])) if voiced else None
    worded = [i for i, r in enumerate(requests) if r.transcript.strip()]
    text = bundle.encode_text([requests[i].transcript for i in worded]) if worded else None
    encoded, offset = [], 0
    for i, n in enumerate(counts):
        v = vision[offset : offset + n].reshape(1, n, d) if n else None
        offset += n
        a = audio[voiced.index(i)][None] if i in voiced else None
        t = tuple(x[worded.index(i)][None] for x in text) if i in worded else None
        encoded.append(Encoded(v, a, t))
    results = read_encoded(bundle, encoded)
    ms = (time.perf_counter() - start) * 1000
    return [WindowReply(r.emotions, r.sentiment, r.modalities, r.agreement, ms, len(requests)) for r in results]


@serve.deployment(name="MonitorModel")
class MonitorModel:
    """A replica: one loaded bundle, windows scored in batches."""

    def __init__(self, bundle_dir: str, providers: str, threads: int, labels: dict, max_batch: int,
                 batch_wait_s: float):  # fmt: skip
        from merclip.export.runtime import Bundle

        self.bundle = Bundle.load(bundle_dir, providers=providers, threads=threads)
        if labels:
            self.bundle.set_labels(**labels)
        # zero-shot CLIP has no meaning for spectrograms (as in the local engine)
        self.use_audio = self.bundle.mode != "zero-shot"
        self.info = service_info(self.bundle, self.use_audio)
        self._batch.set_max_batch_size(max_batch)
        self._batch.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)  # replaced in __init__ by the configured values
    async def _batch(self, requests: list[WindowRequest]) -> list[WindowReply]:
        # in a thread: the replica's event loop keeps taking requests, so the next batch fills meanwhile
        return await asyncio.to_thread(score_batch, self.bundle, requests, self.use_audio)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/info"):
            return JSONResponse(self.info)
        if request.method == "POST" and path.endswith("/window"):
            b = self.bundle
            try:
                length = request.headers.get("content-length", "")
                if length.isdigit():  # a body too big to be a window is refused before it is read
                    check_request_size(int(length))
                window = decode_request(await request.body(), b.image_size, b.window_samples)
            except MerClipError as err:
                return Response(str(err), status_code=400)
            reply = await self._batch(window)
            return Response(encode_reply(reply, b.emotion_labels, b.sentiment_labels), media_type="application/json")
        return Response("merclip service: GET info, POST window", status_code=404)


def _quiet_ray() -> dict:
    """Ray prints a lot by default; the service's own lines are what a user needs."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # "Started Serve", "Application ... ready"
    return {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
            "configure_logging": True}  # fmt: skip


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, before Ray starts.

    Ray Serve's HTTP proxy binds with SO_REUSEPORT, so a second `merclip serve` on the same port would
    listen beside the first and the kernel would split clients between two models without a word. A plain
    bind (SO_REUSEADDR, so a port a stopped service left in TIME_WAIT still counts as free, but no
    SO_REUSEPORT) fails when anything listens there."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]  # fmt: skip
    except socket.gaierror as err:
        raise MerClipError(f"cannot listen on {host}: {err.strerror or err}: check --host") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise MerClipError(f"port {port} on {host} is in use (another merclip serve?): choose --port") from None
            raise MerClipError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def start_service(bundle_dir: str | Path, opts: ServeOptions, providers: str = "auto", threads: int = 0,
                  labels: dict | None = None, num_cpus: int | None = None) -> str:  # fmt: skip
    """Start (or join, ``opts.address``) a Ray cluster and deploy the monitor; returns its URL.
    ``num_cpus``: CPUs of a local cluster (None: the machine's)."""
    import ray

    if not ray.is_initialized():
        if opts.address:
            ray.init(address=opts.address, **_quiet_ray())
        else:  # "local": a cluster of our own, even where `ray start` left one running (that is --address)
            ray.init(address="local", num_cpus=num_cpus, **_quiet_ray())
    serve.start(http_options={"host": opts.host, "port": opts.port})
    # onnxruntime takes every core by default: a replica keeps to the CPUs it was given
    threads = threads or max(1, int(opts.num_cpus))
    app = MonitorModel.options(
        num_replicas=opts.replicas,
        max_ongoing_requests=QUEUE_BATCHES * opts.max_batch,
        ray_actor_options={"num_cpus": opts.num_cpus, "num_gpus": opts.num_gpus},
    ).bind(str(Path(bundle_dir).resolve()), providers, threads, labels or {}, opts.max_batch,
           opts.batch_wait_ms / 1000)  # fmt: skip
    serve.run(app, name=APP_NAME, route_prefix=opts.route)
    return opts.url()


def stop_service(joined: bool) -> None:
    """Take the monitor down: the whole local cluster, or only our application on a joined one."""
    import ray

    try:
        if joined:
            serve.delete(APP_NAME)
        # a local cluster goes as a whole: its Serve actors with it (serve.shutdown() first only makes Ray
        # print a retry warning on stdout for its controller)
    finally:
        ray.shutdown()


def apply_serve_flags(args, cfg: Config) -> Config:
    from merclip.config import override

    from .cli import model_flags

    return override(
        cfg,
        model=model_flags(args),
        runtime={"bundle": args.bundle, "providers": args.providers},
        serve={"address": args.address, "host": args.host, "port": args.port, "replicas": args.replicas,
               "num_cpus": args.num_cpus, "num_gpus": args.num_gpus, "max_batch": args.max_batch,
               "batch_wait_ms": args.batch_wait_ms},
    )  # fmt: skip


def cmd_serve(args) -> int:
    from rich.console import Console

    from merclip.config import load_config

    from .cli import apply_label_config, check_flag_conflicts, resolve_bundle

    check_flag_conflicts(args)
    cfg = apply_serve_flags(args, load_config(args.config))
    console = Console(stderr=True, soft_wrap=True)
    opts = ServeOptions.from_config(cfg)
    if not opts.address:  # a local cluster's proxy listens here; a joined cluster's may be elsewhere, or ours
        check_port_free(opts.host, opts.port)  # before the bundle: an export would be wasted
    bundle = resolve_bundle(cfg, console)  # the bundle the live CLI would run: --bundle, or --model exported
    apply_label_config(bundle, cfg)
    labels = {"emotion": bundle.emotion_labels, "sentiment": bundle.sentiment_labels}
    if bundle.manifest["labels"]["fixed"]:
        labels = {}
    console.print(f"starting {'a local Ray cluster' if not opts.address else 'on Ray cluster ' + opts.address}: "
                  f"{opts.replicas} replica(s) of {bundle.describe()}, {opts.num_cpus:g} CPU / {opts.num_gpus:g} GPU "
                  f"each, batches of up to {opts.max_batch} windows within {opts.batch_wait_ms:g} ms",
                  markup=False, highlight=False)  # fmt: skip
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            url = start_service(bundle.folder, opts, cfg.runtime.providers, cfg.runtime.threads, labels)
        except (ConnectionError, RuntimeError, ValueError) as err:  # Ray's own errors for a bad address/port
            raise MerClipError(f"cannot start the service: {str(err).splitlines()[0][:200]}") from None
        console.print(f"serving at {url}  —  clients: merclip-live --camera 0 --server {opts.url()}"
                      "   (Ctrl-C stops)", markup=False, highlight=False)  # fmt: skip
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            stop_service(joined=bool(opts.address))
        except Exception as err:  # nothing left to stop (the start failed): say it, do not hide the real error
            log.info("stopping the service: %s", err)
    console.print("service stopped", markup=False)
    return 0
