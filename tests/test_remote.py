"""`merclip-live --server`'s faults against a small HTTP(S) server (no Ray): a connection that dies loses one
window, a service that is not there is down (DESIGN §8, Faults); what a client meets at start when TLS or
the token do not fit, and a token refused mid-session."""

import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from merclip.stream.engine import WindowLost
from merclip.stream.pipeline import LiveSession
from merclip.stream.records import Window
from merclip.stream.remote import DOWN_AFTER, OFFLINE_NOTE, TOKEN_NOTE, ClientAuth, RemoteEngine
from merclip.stream.sources import SyntheticSource
from merclip.stream.windowing import Windower
from scripted import OneWindowLate

from merclip.cli import live_main
from merclip.errors import MerClipError

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

    def _refused(self) -> bool:
        """401 unless the request carries the server's token (when it has one)."""
        if not self.server.token or self.headers.get("Authorization") == f"Bearer {self.server.token}":
            return False
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def do_GET(self):
        if not self._refused():
            self._send(INFO)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            n = self.server.posts
            self.server.posts += 1
        if self._refused():
            return
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

    def __init__(self, faults: dict[int, str], tls: ssl.SSLContext | None = None, token: str = ""):
        super().__init__(("127.0.0.1", 0), Handler)
        self.faults, self.posts, self.lock, self.token = faults, 0, threading.Lock(), token
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.url = f"{'https' if tls else 'http'}://localhost:{self.port}/merclip"

    def handle_error(self, request, client_address):
        pass  # a client that gives up on the TLS handshake is no news here


@pytest.fixture
def fake_service() -> Iterator[callable]:
    servers = []

    def start(faults: dict[int, str], tls: ssl.SSLContext | None = None, token: str = "") -> FakeService:
        srv = FakeService(faults, tls, token)
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


# ---- TLS and the token, as a client meets them --------------------------------------------------------------
def _server_tls(pki, client_ca: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_ca:
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_https_with_the_ca_and_the_token_reads_windows(fake_service, pki):
    srv = fake_service({}, _server_tls(pki), token=pki.token)
    engine = RemoteEngine.connect(srv.url, ClientAuth(pki.token, pki.ca))
    assert engine.run(_window(0), "hello").emotions["happy"] == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("no token", "it requires a token: give it with --token-file FILE (or MERCLIP_TOKEN)"),
        ("wrong token", "it refused the token (HTTP 401): give the service's token with --token-file FILE"),
        ("no CA", "its certificate is not signed by the system's CAs (no --server-ca): give the CA that signed "
                  "it with --server-ca FILE"),
        ("wrong CA", "its certificate is not signed by the CA in --server-ca"),
        ("wrong name", "its certificate is not valid for the name 127.0.0.1: use a name it was made for"),
        ("plain HTTP to TLS", "it speaks TLS: use https://localhost:"),
        ("TLS to plain HTTP", "it speaks plain HTTP, not TLS: use http://"),
        ("no client certificate", "it may require a client certificate (--client-cert FILE --client-key FILE)"),
    ],
)  # fmt: skip
def test_a_client_the_service_does_not_fit_is_told_why_in_one_line(case, said, fake_service, pki):
    tls = None if case == "TLS to plain HTTP" else _server_tls(pki, client_ca=case == "no client certificate")
    srv = fake_service({}, tls, token=pki.token)
    auth = {"no token": ClientAuth("", pki.ca), "wrong token": ClientAuth("x" * 32, pki.ca),
            "no CA": ClientAuth(pki.token), "wrong CA": ClientAuth(pki.token, pki.other_ca)}.get(
        case, ClientAuth(pki.token, pki.ca))  # fmt: skip
    url = {"wrong name": srv.url.replace("localhost", "127.0.0.1"),
           "plain HTTP to TLS": srv.url.replace("https:", "http:"),
           "TLS to plain HTTP": srv.url.replace("http:", "https:")}.get(case, srv.url)  # fmt: skip
    with pytest.raises(MerClipError) as err:
        RemoteEngine.connect(url, auth)
    assert str(err.value).startswith(f"cannot use the merclip service at {url}: ") and said in str(err.value)
    if case == "no client certificate":  # the same service, with this client's certificate
        good = ClientAuth(pki.token, pki.ca, pki.client_cert, pki.client_key)
        assert RemoteEngine.connect(url, good).run(_window(0), "hi").emotions


def test_a_refused_client_opens_no_device(fake_service, pki, monkeypatch, capsys):
    """merclip-live asks the service first: a misfit is one line, exit 2, before the camera is touched."""
    from merclip.stream import devices

    monkeypatch.setattr(devices, "check_devices", lambda *a: pytest.fail("a device was opened"))
    srv = fake_service({}, _server_tls(pki), token=pki.token)
    code = live_main(["--camera", "0", "--no-ui", "--no-asr", "--server", srv.url, "--server-ca", pki.other_ca,
                      "--token-file", pki.token_file])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: cannot use the merclip service at"), lines


def test_client_security_flags_need_a_server(capsys):
    assert live_main(["--source", "synthetic", "--no-ui", "--token-file", "t"]) == 2
    assert "--token-file is for a service's client: give --server URL" in capsys.readouterr().err


def test_a_token_refused_mid_session_is_said_once_and_the_service_counts_as_down(fake_service, pki, caplog):
    srv = fake_service({}, _server_tls(pki), token=pki.token)
    engine = RemoteEngine.connect(srv.url, ClientAuth(pki.token, pki.ca))
    assert engine.run(_window(0), "hello").emotions
    srv.token = "restarted-with-another-token"
    with caplog.at_level(logging.WARNING, logger="merclip.stream.remote"):
        results = [engine.run(_window(i), "hello") for i in range(1, 5)]
        engine._next_probe = 0.0  # the back-off step is over: the next window probes /info, refused again
        results.append(engine.run(_window(5), "hello"))
    assert engine.down and all(r.note == TOKEN_NOTE and not r.emotions for r in results)
    said = [r.message for r in caplog.records if "token" in r.message]
    assert len(said) == 1 and "refused this client's token (HTTP 401)" in said[0], said
    assert srv.posts == 2  # the window refused; those while down are not sent
    srv.token = pki.token  # the service takes this token again
    engine._next_probe = 0.0
    assert engine.run(_window(6), "hello").emotions and not engine.down


def test_a_certificate_alert_read_after_the_handshake_is_told_as_one():
    """TLS 1.3 sends 'certificate required' after the handshake: urllib raises it bare, not wrapped in a
    URLError, when the reply is read (seen in CI); it is still told as the certificate it is."""
    from merclip.stream.remote import Transport, _cause

    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"  # what OpenSSL's error sets
    assert "it may require a client certificate" in _cause(alert, Transport("https://localhost:1/merclip"))


def test_labels_asked_of_a_client_are_said_to_be_the_services(fake_service, tmp_path):
    """Labels written in the config, at the packaged values too, or given by a flag reach `cfg` as asked; a
    client cannot set them (the service embeds its own), so it says so once. Unasked, it says nothing."""
    from merclip.stream.session import open_engine
    from rich.console import Console

    from merclip.config import Config, load_config, override

    srv = fake_service({})
    written = tmp_path / "c.toml"
    written.write_text(f"[labels]\nemotion = {json.dumps(list(Config().labels.emotion))}\n")
    for cfg, said in [(load_config(None), False), (load_config(written), True),
                      (override(load_config(None), labels={"sentiment": ("up", "down")}), True)]:  # fmt: skip
        console = Console(record=True, width=200)
        info, _ = open_engine(override(cfg, runtime={"server": srv.url}), console)
        assert info.emotion_labels == INFO["emotion_labels"]  # the service's, whatever was asked
        assert ("labels are the service's" in console.export_text()) == said
