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
``stream/wire.py``). With a token (``stream/access.py``) every route first checks ``Authorization``: a
request without the token is answered 401 before its body is read, and never reaches the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import signal
import socket
import sys
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

from .access import RefusalLog, ServerSecurity, bearer_matches, token_digest
from .engine import Encoded, read_encoded
from .wire import WindowReply, WindowRequest, check_request_size, decode_request, encode_reply

log = logging.getLogger(__name__)
NO_SECURITY = ServerSecurity()

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

    def url(self, tls: bool = False) -> str:
        # a wildcard is no address to connect to: this machine's name is (the one a certificate would carry)
        shown = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        return f"{'https' if tls else 'http'}://{shown}:{self.port}{self.route}"


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
        "reading": bundle.reading.to_json(),
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


def _access_log() -> logging.Logger:
    """The replica's log of refused requests, on the worker's own stderr: Ray Serve sends a replica's
    ``sys.stderr`` and loggers to its log files, while Ray forwards the worker's stderr to `merclip serve`'s
    console (``log_to_driver``), where the operator is."""
    logger = logging.getLogger("merclip.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.__stderr__)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


UNAUTHORIZED = Response("merclip service: a valid token is needed (Authorization: Bearer TOKEN)\n", status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="merclip"'})  # fmt: skip


@serve.deployment(name="MonitorModel")
class MonitorModel:
    """A replica: one loaded bundle, windows scored in batches."""

    token: bytes | None = None  # the token's digest; None: no token asked for
    refusals: RefusalLog | None = None

    def __init__(self, bundle_dir: str, providers: str, threads: int, labels: dict, max_batch: int,
                 batch_wait_s: float, token: bytes | None = None, precision: str = "auto",
                 cache_dir: str | None = None):  # fmt: skip
        from merclip.export.runtime import Bundle

        # the runtime as `merclip serve` chose it for this machine (a first-load bf16 check is in cache_dir)
        self.bundle = Bundle.load(bundle_dir, providers=providers, threads=threads, precision=precision,
                                  cache_dir=cache_dir)  # fmt: skip
        if labels:
            self.bundle.set_labels(**labels)
        # zero-shot CLIP has no meaning for spectrograms (as in the local engine)
        self.use_audio = self.bundle.mode != "zero-shot"
        self.info = service_info(self.bundle, self.use_audio)
        self._batch.set_max_batch_size(max_batch)
        self._batch.set_batch_wait_timeout_s(batch_wait_s)
        self.token = token
        self.refusals = RefusalLog()
        self._flush_at: float | None = None

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)  # replaced in __init__ by the configured values
    async def _batch(self, requests: list[WindowRequest]) -> list[WindowReply]:
        # in a thread: the replica's event loop keeps taking requests, so the next batch fills meanwhile
        return await asyncio.to_thread(score_batch, self.bundle, requests, self.use_audio)

    async def __call__(self, request: Request) -> Response:
        # the token first, from the headers alone: a stranger's body is never read, let alone parsed
        if self.token is not None and not bearer_matches(request.headers.get("authorization"), self.token):
            return self._refuse(request)
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

    def _refuse(self, request: Request) -> Response:
        """401, counted per client address and said at most once a minute per address (never the token)."""
        line = self.refusals.refuse(request.client.host if request.client else "an unknown address", time.monotonic())
        if line:
            _access_log().warning(line)
        self._schedule_flush()
        return UNAUTHORIZED

    def _schedule_flush(self) -> None:
        """Say the refusals counted since an address's last line once it is a minute old, even when that
        address sends nothing more."""
        due = self.refusals.next_due()
        if due is None or (self._flush_at is not None and self._flush_at <= due):
            return
        self._flush_at = due
        asyncio.get_running_loop().call_later(max(0.0, due - time.monotonic()), self._flush)

    def _flush(self) -> None:
        self._flush_at = None
        for line in self.refusals.due(time.monotonic()):
            _access_log().warning(line)
        self._schedule_flush()


def _quiet_ray() -> dict:
    """Ray prints a lot by default; the service's own lines are what a user needs. Workers' stderr still
    reaches this console (``log_to_driver``): Serve keeps its own logs in its files, and what a replica
    writes there is the refused-requests log (``_access_log``) or a crash."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in a log file
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # "Started Serve", "Application ... ready"
    return {"include_dashboard": False, "log_to_driver": True, "logging_level": logging.ERROR,
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


def connect_cluster(opts: ServeOptions, security: ServerSecurity = NO_SECURITY, num_cpus: int | None = None) -> None:
    """Start a local Ray cluster (or join ``opts.address``). ``num_cpus``: a local cluster's CPUs (None: all)."""
    import ray

    if ray.is_initialized():
        return
    options = _quiet_ray()
    if security.tls_client_ca:  # see access.require_client_certificates: Ray alone would not ask for them
        options["runtime_env"] = {"worker_process_setup_hook": "merclip.stream.access.require_client_certificates"}
    if opts.address:
        ray.init(address=opts.address, **options)
    else:  # "local": a cluster of our own, even where `ray start` left one running (that is --address)
        ray.init(address="local", num_cpus=num_cpus, **options)


def start_service(bundle_dir: str | Path, opts: ServeOptions, providers: str = "auto", threads: int = 0,
                  labels: dict | None = None, num_cpus: int | None = None,
                  security: ServerSecurity = NO_SECURITY, precision: str = "auto",
                  cache_dir: str | None = None) -> str:  # fmt: skip
    """Start (or join, ``opts.address``) a Ray cluster and deploy the monitor; returns its URL."""
    connect_cluster(opts, security, num_cpus)
    http = {"host": opts.host, "port": opts.port}
    if security.tls:  # Ray Serve's own HTTPS: its proxy's uvicorn with Python's ssl
        http.update(ssl_certfile=security.tls_cert, ssl_keyfile=security.tls_key,
                    ssl_ca_certs=security.tls_client_ca or None)  # fmt: skip
    serve.start(http_options=http)
    if opts.address:
        _check_proxy_settings(http)
    # onnxruntime takes every core by default: a replica keeps to the CPUs it was given
    threads = threads or max(1, int(opts.num_cpus))
    app = MonitorModel.options(
        num_replicas=opts.replicas,
        max_ongoing_requests=QUEUE_BATCHES * opts.max_batch,
        ray_actor_options={"num_cpus": opts.num_cpus, "num_gpus": opts.num_gpus},
    ).bind(str(Path(bundle_dir).resolve()), providers, threads, labels or {}, opts.max_batch,
           opts.batch_wait_ms / 1000, token_digest(security.token) if security.token else None, precision,
           cache_dir)  # fmt: skip
    serve.run(app, name=APP_NAME, route_prefix=opts.route)
    return opts.url(security.tls)


def _check_proxy_settings(http: dict) -> None:
    """On a joined cluster where Serve already runs, its proxies keep the HTTP settings they started with
    (Ray only logs that ours are ignored): refuse rather than say https:// where plain HTTP is served."""
    try:
        from ray.serve.context import _get_global_client

        running = _get_global_client().http_config
    except (ImportError, AttributeError):  # a Ray without this accessor: nothing to compare
        return
    differs = [k for k, v in http.items() if getattr(running, k, v) != v]
    if differs:
        raise MerClipError(f"Ray Serve already runs on this cluster with other HTTP settings ({', '.join(differs)}), "
                           "which its proxies keep: stop it (`serve shutdown`) or use the same settings")  # fmt: skip


def stop_service(joined: bool) -> None:
    """Take the monitor down: the whole local cluster, or only our application on a joined one. A local
    cluster's processes are gone when this returns."""
    import ray

    workers = [] if joined else _processes_under(os.getpid())
    try:
        if joined:
            serve.delete(APP_NAME)
        # a local cluster goes as a whole: its Serve actors with it (serve.shutdown() first only makes Ray
        # print a retry warning on stdout for its controller)
    finally:
        ray.shutdown()
        _reap(workers)


# ---- the local cluster's processes -------------------------------------------------------------------------
# ray.shutdown() ends the processes this driver started (raylet, GCS, ...); the workers (Serve's controller,
# proxy, replicas) are the raylet's children and end on their own once it is gone, measured within ~2 s.
WORKERS_EXIT_S = 8.0


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ... starttime at index 19)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _is_ray(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"ray::" in command or b"/ray/" in command  # workers (ray::Name), raylet, GCS, Ray's Python daemons


def _processes_under(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every Ray process descended from ``pid`` (Linux; [] where there is no /proc);
    other children of the caller (a test runner's, a bench's) are none of this function's business."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            fields = _stat(child)
            if fields:
                if _is_ray(child):
                    found.append((child, fields[19]))
                todo.append(child)
    return found


def _reap(processes: list[tuple[int, str]], grace_s: float = WORKERS_EXIT_S) -> None:
    """Wait until these processes have ended; kill any still there after ``grace_s`` (checked to be the same
    process by its start time), so that a stopped service leaves nothing running."""

    def running(pid: int, started: str) -> bool:
        fields = _stat(pid)
        return fields is not None and fields[19] == started and fields[0] != "Z"

    deadline = time.monotonic() + grace_s
    left = list(processes)
    while left:
        left = [(p, t) for p, t in left if running(p, t)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid, _ in left:
        log.warning("a Ray process (pid %d) outlived the cluster: killed", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
