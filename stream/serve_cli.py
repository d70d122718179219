"""`merclip serve` from the command line: flags and config -> checks -> the service -> a signal stops it.

Everything a user can get wrong is refused before Ray starts (a few seconds, one line): a host open to
other machines without TLS and a token (``access.ServerSecurity.check``), unusable TLS files or token, a
port already served. Ctrl-C and SIGTERM (``docker stop``, ``systemctl stop``, ``timeout``) stop it alike:
one line, the local cluster shut down with all its processes, exit 128 + the signal (130, 143).
"""

from __future__ import annotations

import contextlib
import signal
import threading

from merclip.cache_dir import cache_path
from merclip.config import Config
from merclip.errors import MerClipError

from . import served
from .access import ServerSecurity, announce, is_loopback


def apply_serve_flags(args, cfg: Config) -> Config:
    from merclip.config import override

    from .cli import model_flags

    return override(
        cfg,
        model=model_flags(args),
        runtime={"bundle": args.bundle, "providers": args.providers},
        serve={"address": args.address, "host": args.host, "port": args.port, "replicas": args.replicas,
               "num_cpus": args.num_cpus, "num_gpus": args.num_gpus, "max_batch": args.max_batch,
               "batch_wait_ms": args.batch_wait_ms, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
               "tls_client_ca": args.tls_client_ca, "token_file": args.token_file,
               "insecure": True if args.insecure else None},
    )  # fmt: skip


def client_hint(url: str, sec: ServerSecurity) -> str:
    """The command a camera machine runs to use this service."""
    flags = [f"--server {url}"]
    if sec.tls:
        flags.append("--server-ca CA.pem")
    if sec.tls_client_ca:
        flags.append("--client-cert CAMERA.pem --client-key CAMERA.key")
    if sec.token:
        flags.append("--token-file TOKEN")
    return "merclip-live --camera 0 " + " ".join(flags)


def cmd_serve(args) -> int:
    from merclip.model.reading import ignored_asks
    from rich.console import Console

    from merclip.config import load_config

    from .bundles import apply_label_config, resolve_bundle
    from .cli import check_flag_conflicts

    check_flag_conflicts(args)
    cfg = apply_serve_flags(args, load_config(args.config))
    console = Console(stderr=True, soft_wrap=True)
    opts = served.ServeOptions.from_config(cfg)
    security = ServerSecurity.from_config(cfg.serve)  # TLS files loaded, the token read: one line if not
    for line in security.check(opts.host, opts.port):  # refuses an open host without TLS and a token
        console.print(line, style="yellow", markup=False, highlight=False)
    if not opts.address:  # a local cluster's proxy listens here; a joined cluster's may be elsewhere, or ours
        served.check_port_free(opts.host, opts.port)  # before the bundle: an export would be wasted
    bundle = resolve_bundle(cfg, console)  # the bundle the live CLI would run: --bundle, or --model exported
    apply_label_config(bundle, cfg)
    labels = {"emotion": bundle.emotion_labels, "sentiment": bundle.sentiment_labels}
    if bundle.manifest["labels"]["fixed"]:
        labels = {}
    for line in ignored_asks(cfg.asked("capture"), bundle.reading, "this bundle's model"):  # its clients read that way
        console.print(line, style="yellow", markup=False, highlight=False)
    console.print(f"starting {'a local Ray cluster' if not opts.address else 'on Ray cluster ' + opts.address}: "
                  f"{opts.replicas} replica(s) of {bundle.describe()}, {opts.num_cpus:g} CPU / {opts.num_gpus:g} GPU "
                  f"each, batches of up to {opts.max_batch} windows within {opts.batch_wait_ms:g} ms; clients read "
                  f"{bundle.reading.describe()} (--frames may lower the frames)",
                  markup=False, highlight=False)  # fmt: skip
    stop = threading.Event()
    signalled: list[int] = []

    def on_signal(signum, frame):
        signalled.append(signum)
        stop.set()

    stopping = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, on_signal) for sig in stopping}
    announced = None
    try:
        try:
            served.connect_cluster(opts, security)
            # ray.init took SIGTERM over: its own Python handlers (exit at once, or drain the node for up to
            # 30 s) and, in C, Ray's crash handler, which prints "*** SIGTERM received ... PC: @ 0x..." and
            # kills the process without shutting the cluster down. SIGTERM is a request to stop: ours again.
            for sig in stopping:
                signal.signal(sig, on_signal)
            if not stop.is_set():
                url = served.start_service(bundle.folder, opts, cfg.runtime.providers, cfg.runtime.threads, labels,
                                           security=security, precision=cfg.runtime.precision,
                                           cache_dir=cfg.runtime.cache_dir)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as err:  # Ray's own errors for a bad address/port
            raise MerClipError(f"cannot start the service: {str(err).splitlines()[0][:200]}") from None
        if not stop.is_set():
            try:  # for `merclip doctor`; a cache folder that cannot take it costs only that
                announced = announce(cache_path(cfg.runtime.cache_dir, "serve"), url, opts.host, security,
                                     exposed=not is_loopback(opts.host))  # fmt: skip
            except (MerClipError, OSError) as err:
                served.log.info("merclip doctor will not see this service: %s", err)
            console.print(f"serving at {url}  —  clients: {client_hint(url, security)}   (Ctrl-C stops)",
                          markup=False, highlight=False)  # fmt: skip
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if announced is not None:
            with contextlib.suppress(OSError):
                announced.unlink()
        try:
            served.stop_service(joined=bool(opts.address))
        except Exception as err:  # nothing left to stop (the start failed): say it, do not hide the real error
            served.log.info("stopping the service: %s", err)
    name = "Ctrl-C" if signalled[0] == signal.SIGINT else "SIGTERM"
    console.print(f"service stopped ({name})", markup=False, highlight=False)
    return 128 + signalled[0]
