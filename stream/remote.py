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
  up to ``RETRY_MAX_S`` seconds; when it answers with the same model, readings resume.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from merclip.model.face import FaceSetting
from merclip.model.preprocess import resize_center_crop

from merclip.errors import MerClipError

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

    @classmethod
    def from_json(cls, url: str, d: dict) -> ServiceInfo:
        return cls(url, str(d["model_id"]), str(d["describe"]), str(d["mode"]), bool(d["random_weights"]),
                   list(d["emotion_labels"]), list(d["sentiment_labels"]), float(d["emotion_threshold"]),
                   bool(d["multi_label"]), d.get("neutral_label"), bool(d["labels_fixed"]),
                   FaceSetting.from_json(d.get("face")), int(d["image_size"]), int(d["window_samples"]),
                   int(d["sample_rate"]), bool(d["use_audio"]),
                   [f"server {p}" for p in d.get("providers", [])])  # fmt: skip

    def describe(self) -> str:
        return f"{self.description} @ {self.url}"


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


def fetch_info(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> ServiceInfo:
    """GET ``URL/info``; a MerClipError (one line) when nothing usable answers."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise MerClipError(f"--server takes an http:// URL such as http://host:8000/merclip, got {url!r}")
    try:
        with urllib.request.urlopen(f"{url}/info", timeout=timeout_s) as reply:
            data = json.loads(reply.read())
        if data.get("service") != "merclip":
            raise ValueError("not a merclip service")
        return ServiceInfo.from_json(url, data)
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as err:
        raise MerClipError(f"cannot reach the merclip service at {url}: {_why(err)} "
                           "(is `merclip serve` running there?)") from None  # fmt: skip


class RemoteEngine:
    """An ``Engine`` whose model runs in a `merclip serve` service."""

    def __init__(self, info: ServiceInfo, timeout_s: float = REQUEST_TIMEOUT_S):
        self.info = info
        self.url = info.url
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
    def connect(cls, url: str, timeout_s: float = REQUEST_TIMEOUT_S) -> RemoteEngine:
        return cls(fetch_info(url), timeout_s)

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
            request = urllib.request.Request(f"{self.url}/window", data=self.request_body(window, transcript),
                                             headers={"Content-Type": "application/octet-stream"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                body = reply.read()
            result = decode_reply(body, self.emotion_labels, self.sentiment_labels)
        except (OSError, http.client.HTTPException, ValueError) as err:  # URLError and timeouts are OSErrors
            self._failures += 1
            if _is_down(err) or self._failures >= DOWN_AFTER:
                self._go_down(_why(err))
                return EngineResult({}, {}, "", 0.0, note=self.note)
            raise WindowLost(f"the service did not read it: {_why(err)}") from None
        self._failures = 0
        self.batch_sizes.append(result.batch_size)
        return EngineResult(result.emotions, result.sentiment, result.modalities,
                            (time.perf_counter() - start) * 1000, result.agreement)  # fmt: skip

    # ---- down and back ------------------------------------------------------------------------------
    def _go_down(self, why: str) -> None:
        if not self.down:
            log.warning("merclip service at %s unreachable (%s): retrying", self.url, why)
        self.down, self.note = True, OFFLINE_NOTE
        self._next_probe = time.monotonic() + self._retry_s
        self._retry_s = min(2 * self._retry_s, RETRY_MAX_S)

    def _probe(self) -> bool:
        """Whether the service is back (with the same model); probed at most once per back-off step."""
        if time.monotonic() < self._next_probe:
            return False
        try:
            info = fetch_info(self.url, CONNECT_TIMEOUT_S)
        except MerClipError:
            self._go_down("no answer")
            return False
        if info.model_id != self.info.model_id:  # other labels would not fit this session's CSV columns
            self._go_down("another model")
            self.note = OTHER_MODEL_NOTE
            return False
        log.warning("merclip service at %s is back", self.url)
        self.down, self.note, self._failures, self._retry_s = False, "", 0, 1.0
        return True


def mean_batch(batch_sizes: list[int]) -> float:
    """Mean size of the server's batches, from the size each answered window reports: a batch of b
    windows is reported b times, so the batches number sum(1/b)."""
    return len(batch_sizes) / sum(1 / b for b in batch_sizes) if batch_sizes else 0.0
