"""`merclip-live --server`'s faults against a plain HTTP server (no Ray): a connection that dies loses one
window, a service that is not there is down (DESIGN §8, Faults)."""

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from merclip.stream.engine import WindowLost
from merclip.stream.pipeline import LiveSession
from merclip.stream.records import Window
from merclip.stream.remote import DOWN_AFTER, OFFLINE_NOTE, RemoteEngine
from merclip.stream.sources import SyntheticSource
from merclip.stream.windowing import Windower
from scripted import OneWindowLate

INFO = {"service": "merclip", "model_id": "m1", "describe": "fake", "mode": "trained", "random_weights": True,
        "emotion_labels": ["happy", "sad"], "sentiment_labels": ["positive", "negative"],
        "emotion_threshold": 0.6, "multi_label": True, "neutral_label": "neutral", "labels_fixed": False,
        "face": None, "image_size": 32, "window_samples": 32000, "sample_rate": 16000, "use_audio": True}  # fmt: skip
REPLY = {"emotion": [0.7, 0.3], "sentiment": [0.6, 0.4], "modalities": "AT", "agreement": None, "model_ms": 1.0,
         "batch_size": 1}  # fmt: skip


class Handler(BaseHTTPRequestHandler):
    """Answers like `merclip serve`, except that the POSTs numbered in ``server.faults`` die: ``reset``
    (RST, no reply) or ``close`` (closed without a reply)."""

    server: "FakeService"

    def log_message(self, *args):
        pass

    def _send(self, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(INFO)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            n = self.server.posts
            self.server.posts += 1
        fault = self.server.faults.get(n)
        if fault == "reset":  # linger 0: close sends RST, as a proxy whose replica died might
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        if fault:
            self.close_connection = True
            self.connection.close()
            return
        self._send(REPLY)


class FakeService(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, faults: dict[int, str]):
        super().__init__(("127.0.0.1", 0), Handler)
        self.faults, self.posts, self.lock = faults, 0, threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}/merclip"


@pytest.fixture
def fake_service() -> Iterator[callable]:
    servers = []

    def start(faults: dict[int, str]) -> FakeService:
        srv = FakeService(faults)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _window(index: int) -> Window:
    return Window(index, 2.0 * index, 2.0 * index + 2.0, (), (), np.zeros(32000, np.float32), False)


@pytest.mark.parametrize("fault", ["reset", "close"])
def test_a_dropped_connection_loses_its_window_not_the_service(fake_service, fault):
    srv = fake_service({1: fault})
    engine = RemoteEngine.connect(srv.url)
    assert engine.run(_window(0), "hello").emotions["happy"] == pytest.approx(0.7)
    with pytest.raises(WindowLost):
        engine.run(_window(1), "hello")
    assert not engine.down and engine.note == ""
    # the next window is read at once, with no probe in between
    result = engine.run(_window(2), "hello")
    assert result.emotions["happy"] == pytest.approx(0.7) and not result.note and srv.posts == 3


def test_failures_in_a_row_mark_the_service_down(fake_service):
    srv = fake_service(dict.fromkeys(range(DOWN_AFTER), "reset"))
    engine = RemoteEngine.connect(srv.url)
    for i in range(DOWN_AFTER - 1):
        with pytest.raises(WindowLost):
            engine.run(_window(i), "hello")
    result = engine.run(_window(DOWN_AFTER - 1), "hello")
    assert engine.down and result.note == OFFLINE_NOTE and not result.emotions


def test_a_refused_connection_marks_the_service_down_at_once(fake_service):
    srv = fake_service({})
    engine = RemoteEngine.connect(srv.url)
    srv.shutdown()
    srv.server_close()  # nothing listens on the port any more
    result = engine.run(_window(0), "hello")
    assert engine.down and result.note == OFFLINE_NOTE


def test_a_session_counts_the_lost_window_and_reads_the_next(fake_service):
    srv = fake_service({1: "reset"})
    engine = RemoteEngine.connect(srv.url)
    words = OneWindowLate(lambda k: f"window {k}")  # final words as shown: one request per window
    session = LiveSession(SyntheticSource(duration_s=8.0, video=False), Windower(), engine, words, backpressure=True)
    finals = []
    stats = session.run(lambda r: finals.append(r) if r.final else None)
    dropped = [r.dropped_windows for r in finals[1:]]  # what the CSV's dropped_windows column says
    assert stats.windows == 4 and stats.dropped == 1 and stats.engine_errors == 0
    assert [r.window for r in finals] == [0, 2, 3]
    assert all(r.emotions and not r.notes for r in finals) and dropped == [1, 1] and not engine.down
