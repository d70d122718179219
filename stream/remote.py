"""`merclip-live --server URL`: the engine interface over HTTP, to a `merclip serve` service.

``RemoteEngine`` is an ``Engine`` (``run(window, transcript)``) like ``BundleEngine``, so the pipeline, the
UI and the CSV do not change. It imports no Ray (only the standard library's HTTP client and numpy):
a camera client stays as light as the plain monitor.

Each window is one POST carrying its frames cropped to the model's image size, its voice and its words
(``stream/wire.py``). The service keeps no state between requests, so the final reading of a window whose
words changed re-sends the window; it has no ``prepare``: the encoders run on the server, batched with
other streams' windows, after the words are known.

Faults, as a user sees them:
- a window the service failed, did not answer in time (a replica killed with it in flight) or whose
  connection was reset or closed without a reply is lost: ``WindowLost``, which the pipeline counts in
  ``dropped_windows``;
- a service that refuses connections, answers 404 (application deleted) or fails ``DOWN_AFTER`` windows in a
  row is *down*: every window then gets an empty reading with the note "server unreachable — retrying" (the
  UI shows it, the CSV row's ``state`` says it) at once, and the service is probed again after 1, 2, 4 ...
  up to ``RETRY_MAX_S`` seconds; when it answers with the same model, readings resume;
- a service that stops accepting the token (401: restarted with another one) is down the same way, with
  the note "server refused the token — retrying", said once in the log.

Security (``stream/access.py``): ``https://`` is verified against ``--server-ca`` (else the system's CAs) and
the URL's host name; the token goes in ``Authorization: Bearer``. What fails at start is named in one line:
a refused token, an unknown CA, a certificate for another name, plain HTTP against TLS and the reverse.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from merclip.model.face import FaceSetting
from merclip.model.preprocess import resize_center_crop
from merclip.model.reading import ReadingSetting

from merclip.errors import MerClipError

from .access import is_loopback, read_token
from .engine import EngineResult, WindowLost, audible
from .records import Window
from .wire import decode_reply, encode_request

log = logging.getLogger(__name__)

# A window's reading is useless once several newer ones are on screen: give up on it after this long.
REQUEST_TIMEOUT_S = 10.0
# The info request is tiny: a service that takes longer than this to say hello is not there.
CONNECT_TIMEOUT_S = 3.0
# Failed windows in a row after which the service counts as down (one failure is a lost window).
DOWN_AFTER = 3
# Longest wait between two probes of a service that is down.
RETRY_MAX_S = 4.0

OFFLINE_NOTE = "server unreachable — retrying"
TOKEN_NOTE = "server refused the token — retrying"
OTHER_MODEL_NOTE = "server came back with another model — not used"


@dataclass(frozen=True)
class ServiceInfo:
    """What the service told us about its model: the parts of a ``Bundle`` the live CLI uses."""

    url: str
    model_id: str
    description: str
    mode: str
    random_weights: bool
    emotion_labels: list[str]
    sentiment_labels: list[str]
    emotion_threshold: float
    multi_label: bool
    neutral_label: str | None
    labels_fixed: bool
    face: FaceSetting
    image_size: int
    window_samples: int
    sample_rate: int
    use_audio: bool
    provider_report: list[str] = field(default_factory=list)
    reading: ReadingSetting = field(default_factory=ReadingSetting)  # how the client reads (model/reading.py)

    @classmethod
    def from_json(cls, url: str, d: dict) -> ServiceInfo:
        return cls(url, str(d["model_id"]), str(d["describe"]), str(d["mode"]), bool(d["random_weights"]),
                   list(d["emotion_labels"]), list(d["sentiment_labels"]), float(d["emotion_threshold"]),
                   bool(d["multi_label"]), d.get("neutral_label"), bool(d["labels_fixed"]),
                   FaceSetting.from_json(d.get("face")), int(d["image_size"]), int(d["window_samples"]),
                   int(d["sample_rate"]), bool(d["use_audio"]),
                   [f"server {p}" for p in d.get("providers", [])],
                   ReadingSetting.from_json(d.get("reading"),
                                            window_s=int(d["window_samples"]) / int(d["sample_rate"])))  # fmt: skip

    def describe(self) -> str:
        return f"{self.description} @ {self.url}"


@dataclass(frozen=True)
class ClientAuth:
    """How this client trusts the service (``ca_file``) and proves itself to it (token, certificate)."""

    token: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @classmethod
    def from_config(cls, runtime) -> ClientAuth:
        """From ``[runtime]`` (flags applied): the token from ``token_file``, else ``$MERCLIP_TOKEN``."""
        return cls(read_token(runtime.token_file), runtime.server_ca, runtime.client_cert, runtime.client_key)

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the service's certificate and name; carries this client's certificate if given."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file and str(Path(self.ca_file).expanduser()) or None)
        except (OSError, ssl.SSLError) as err:
            why = err.reason if isinstance(err, ssl.SSLError) else err.strerror
            raise MerClipError(f"--server-ca {self.ca_file}: {why or err}: give the PEM certificate of the CA that "
                               "signed the service's certificate") from None  # fmt: skip
        if self.cert_file:
            try:
                context.load_cert_chain(Path(self.cert_file).expanduser(),
                                        Path(self.key_file).expanduser() if self.key_file else None)  # fmt: skip
            except (OSError, ssl.SSLError) as err:
                why = err.reason if isinstance(err, ssl.SSLError) else err.strerror
                raise MerClipError(f"--client-cert {self.cert_file}: {why or err}: give a PEM certificate and its "
                                   "unencrypted key (--client-key)") from None  # fmt: skip
        return context


class Transport:
    """One service's address, TLS context and headers; each request a new connection (a window every 2 s)."""

    def __init__(self, url: str, auth: ClientAuth = ClientAuth()):
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MerClipError(f"--server takes a URL such as https://host:8000/merclip, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.auth = auth
        self.context = auth.ssl_context() if self.tls else None
        self.headers = {"Authorization": f"Bearer {auth.token}"} if auth.token else {}

    def open(self, route: str, data: bytes | None = None, timeout_s: float = REQUEST_TIMEOUT_S):
        headers = dict(self.headers, **({"Content-Type": "application/octet-stream"} if data is not None else {}))
        request = urllib.request.Request(f"{self.url}/{route}", data=data, headers=headers)
        return urllib.request.urlopen(request, timeout=timeout_s, context=self.context)

    def in_clear(self) -> bool:
        """Whether faces and voices would cross a network unencrypted (http:// to another machine)."""
        try:
            return not self.tls and not is_loopback(self.host)
        except MerClipError:
            return not self.tls

    def speaks_tls(self) -> bool:
        """Whether the service's port answers a TLS handshake (what a plain-HTTP request there meets)."""
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE  # a diagnosis: nothing is sent
        try:
            with socket.create_connection((self.host, self.port), CONNECT_TIMEOUT_S) as raw:
                with probe.wrap_socket(raw, server_hostname=self.host):
                    return True
        except OSError:
            return False


class ServiceRefused(MerClipError):
    """The service answered 401: this client's token is missing or not the service's."""


def _is_down(err: Exception) -> bool:
    """Nothing listens there (vs. a service that is up but failed this window)."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code == 404
    reason = getattr(err, "reason", err)
    # A reset or a connection closed without a reply (RemoteDisconnected) is one request that died, e.g. with
    # its replica or proxy: that window is lost; the service is down only after DOWN_AFTER failures in a row.
    return isinstance(reason, ConnectionRefusedError | socket.gaierror)


def _why(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = getattr(err, "reason", err)
    return str(reason) or type(reason).__name__


# OpenSSL's verify codes for a certificate chain that does not end at a CA the client trusts.
_UNKNOWN_CA = {2, 18, 19, 20, 21}
_NAME_MISMATCH = {62, 64}  # a host name, an IP address
_EXPIRED = 10


def _cause(err: Exception, transport: Transport) -> str:
    """Why the service could not be used, as the fix a user needs (one line; "" when nothing answered)."""
    auth = transport.auth
    if isinstance(err, urllib.error.HTTPError) and err.code == 401:
        if not auth.token:
            return "it requires a token: give it with --token-file FILE (or MERCLIP_TOKEN)"
        return "it refused the token (HTTP 401): give the service's token with --token-file FILE (or MERCLIP_TOKEN)"
    # urllib wraps what happens while connecting (URLError.reason); an alert read after the handshake (TLS 1.3)
    # comes bare, and its own .reason is only OpenSSL's name for it
    reason = err if isinstance(err, ssl.SSLError) else getattr(err, "reason", err)
    if isinstance(reason, ssl.SSLCertVerificationError):
        if reason.verify_code in _NAME_MISMATCH:
            return (f"its certificate is not valid for the name {transport.host}: use a name it was made for "
                    "in the URL, or make it for this one (README: Many streams)")  # fmt: skip
        if reason.verify_code in _UNKNOWN_CA:
            given = f"the CA in --server-ca {auth.ca_file}" if auth.ca_file else "the system's CAs (no --server-ca)"
            return f"its certificate is not signed by {given}: give the CA that signed it with --server-ca FILE"
        if reason.verify_code == _EXPIRED:
            return "its certificate has expired: make a new one"
        return f"its certificate cannot be trusted: {reason.verify_message}"
    if isinstance(reason, ssl.SSLError) and reason.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                                              "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"):  # fmt: skip
        return "it speaks plain HTTP, not TLS: use http://, or start it with --tls-cert and --tls-key"
    # a connection closed without an answer: over TLS, the service refused this client's certificate (or its
    # absence) in the handshake, or with an alert right after it (TLS 1.3); over plain HTTP, it may speak TLS
    closed = isinstance(reason, http.client.RemoteDisconnected | ConnectionResetError | http.client.BadStatusLine |
                        ssl.SSLEOFError)  # fmt: skip
    alert = isinstance(reason, ssl.SSLError) and "ALERT" in str(reason.reason)
    if transport.tls and (closed or alert):
        return ("it closed the TLS connection without an answer: it may require a client certificate "
                "(--client-cert FILE --client-key FILE) or refuse this one")  # fmt: skip
    if closed and transport.speaks_tls():
        return f"it speaks TLS: use https://{transport.url.split('://', 1)[1]} (with --server-ca FILE)"
    return ""


def fetch_info(transport: Transport | str, timeout_s: float = CONNECT_TIMEOUT_S) -> ServiceInfo:
    """GET ``URL/info``; a MerClipError (one line naming the cause) when nothing usable answers."""
    if isinstance(transport, str):
        transport = Transport(transport)
    try:
        with transport.open("info", timeout_s=timeout_s) as reply:
            data = json.loads(reply.read())
        if data.get("service") != "merclip":
            raise ValueError("not a merclip service")
        return ServiceInfo.from_json(transport.url, data)
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as err:
        cause = _cause(err, transport)
        if not cause:
            raise MerClipError(f"cannot reach the merclip service at {transport.url}: {_why(err)} "
                               "(is `merclip serve` running there?)") from None  # fmt: skip
        refused = isinstance(err, urllib.error.HTTPError) and err.code == 401
        raise (ServiceRefused if refused else MerClipError)(f"cannot use the merclip service at {transport.url}: "
                                                            f"{cause}") from None  # fmt: skip


class RemoteEngine:
    """An ``Engine`` whose model runs in a `merclip serve` service."""

    def __init__(self, info: ServiceInfo, timeout_s: float = REQUEST_TIMEOUT_S, transport: Transport | None = None):
        self.info = info
        self.url = info.url
        self.transport = transport or Transport(info.url)
        self.timeout_s = timeout_s
        self.emotion_labels = info.emotion_labels
        self.sentiment_labels = info.sentiment_labels
        self.multi_label = info.multi_label
        self.batch_sizes: list[int] = []  # of every answered window: the server's batching, for `merclip bench`
        self.down = False
        self.note = ""
        self._failures = 0
        self._retry_s = 1.0
        self._next_probe = 0.0

    @classmethod
    def connect(cls, url: str, auth: ClientAuth = ClientAuth(), timeout_s: float = REQUEST_TIMEOUT_S) -> RemoteEngine:
        transport = Transport(url, auth)
        return cls(fetch_info(transport), timeout_s, transport)

    def request_body(self, window: Window, transcript: str) -> bytes:
        size = self.info.image_size
        crops = [resize_center_crop(f, size) for f in window.frames]
        voice = window.audio if self.info.use_audio and audible(window) else None
        return encode_request(crops, voice, transcript)

    def run(self, window: Window, transcript: str) -> EngineResult:
        if self.down and not self._probe():
            return EngineResult({}, {}, "", 0.0, note=self.note)
        start = time.perf_counter()
        try:
            with self.transport.open("window", self.request_body(window, transcript), self.timeout_s) as reply:
                body = reply.read()
            result = decode_reply(body, self.emotion_labels, self.sentiment_labels)
        except (OSError, http.client.HTTPException, ValueError) as err:  # URLError and timeouts are OSErrors
            self._failures += 1
            if isinstance(err, urllib.error.HTTPError) and err.code == 401:
                self._go_down("refused this client's token (HTTP 401)", TOKEN_NOTE)
                return EngineResult({}, {}, "", 0.0, note=self.note)
            if _is_down(err) or self._failures >= DOWN_AFTER:
                self._go_down(f"unreachable ({_why(err)})")
                return EngineResult({}, {}, "", 0.0, note=self.note)
            raise WindowLost(f"the service did not read it: {_why(err)}") from None
        self._failures = 0
        self.batch_sizes.append(result.batch_size)
        return EngineResult(result.emotions, result.sentiment, result.modalities,
                            (time.perf_counter() - start) * 1000, result.agreement)  # fmt: skip

    # ---- down and back ------------------------------------------------------------------------------
    def _go_down(self, why: str, note: str = OFFLINE_NOTE) -> None:
        if not self.down or note != self.note:  # said once per cause, not once per window
            log.warning("merclip service at %s %s: retrying", self.url, why)
        self.down, self.note = True, note
        self._next_probe = time.monotonic() + self._retry_s
        self._retry_s = min(2 * self._retry_s, RETRY_MAX_S)

    def _probe(self) -> bool:
        """Whether the service is back (with the same model); probed at most once per back-off step."""
        if time.monotonic() < self._next_probe:
            return False
        try:
            info = fetch_info(self.transport, CONNECT_TIMEOUT_S)
        except ServiceRefused:
            self._go_down("refused this client's token (HTTP 401)", TOKEN_NOTE)
            return False
        except MerClipError:
            self._go_down("unreachable (no answer)")
            return False
        if info.model_id != self.info.model_id:  # other labels would not fit this session's CSV columns
            self._go_down("came back with another model", OTHER_MODEL_NOTE)
            return False
        log.warning("merclip service at %s is back", self.url)
        self.down, self.note, self._failures, self._retry_s = False, "", 0, 1.0
        return True


def mean_batch(batch_sizes: list[int]) -> float:
    """Mean size of the server's batches, from the size each answered window reports: a batch of b
    windows is reported b times, so the batches number sum(1/b)."""
    return len(batch_sizes) / sum(1 / b for b in batch_sizes) if batch_sizes else 0.0
