"""Many streams on one service: `merclip serve` (Ray Serve) and `merclip-live --server`, as a user runs them.

One local Ray cluster (2 CPUs) serves the tiny bundle for the whole module; the tests run streams through
it and compare with the local engine, kill its replica, take it down and bring it back.
"""

import csv
import io
import math
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from merclip.model.reading import ReadingSetting
from merclip.stream.csvlog import SessionLog
from merclip.stream.engine import BundleEngine
from merclip.stream.pipeline import LiveSession
from merclip.stream.readout import ReadoutRule, interpret
from merclip.stream.remote import OFFLINE_NOTE, RemoteEngine, mean_batch
from merclip.stream.sources import SyntheticSource
from merclip.stream.ui import UiState, render
from merclip.stream.windowing import Windower
from rich.console import Console
from scripted import OneWindowLate

LIVE = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def words_of(stream: int, index: int, final: bool) -> str:
    """Words for some windows, none for others; a window's final words differ from the ones first shown on
    every other window (so the final reading re-runs the model)."""
    if (index + stream) % 3 == 0:
        return ""
    return f"window {index} of stream {stream}" + ("" if final or index % 2 else " and")


def words(stream: int) -> OneWindowLate:
    return OneWindowLate(lambda i: words_of(stream, i, False), lambda i: words_of(stream, i, True))


class Recording:
    """The engine in between: what each call got and gave, for the comparison with the local engine."""

    def __init__(self, engine):
        self.engine = engine
        self.emotion_labels, self.sentiment_labels = engine.emotion_labels, engine.sentiment_labels
        self.calls = []

    def run(self, window, transcript):
        result = self.engine.run(window, transcript)
        self.calls.append((window, transcript, result))
        return result


@pytest.fixture(scope="module")
def service(tiny_bundle):
    """A local Ray cluster with 2 CPUs serving the tiny bundle; shut down after the module."""
    import ray  # the dev extra installs it: no skip, a missing Ray fails here
    from merclip.stream.served import ServeOptions, start_service, stop_service

    opts = ServeOptions(port=_free_port(), num_cpus=1.0, max_batch=16, batch_wait_ms=20.0)
    url = start_service(tiny_bundle, opts, providers="cpu", num_cpus=2)
    try:
        yield url, opts
    finally:
        stop_service(joined=False)
        assert not ray.is_initialized()


def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/info", timeout=2).read()
            return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"service at {url} did not come back")


def _session(engine, stream: int, seconds: float, realtime: bool = False, **source):
    src = SyntheticSource(duration_s=seconds, realtime=realtime, **source)
    return LiveSession(src, Windower(), engine, words(stream), backpressure=not realtime)


def _log_session(session, engine, path, on_reading=None):
    """Run a session as merclip-live does: readings interpreted, final ones to the CSV."""
    rule = ReadoutRule(True, 0.6, "neutral", 0.4)
    log = SessionLog(path, engine.emotion_labels, engine.sentiment_labels, ReadingSetting())
    finals = []

    def take(reading):
        reading = interpret(reading, rule)
        if reading.final:
            log.write(reading)
            finals.append(reading)
        if on_reading is not None:
            on_reading(reading)

    try:
        stats = session.run(take)
    finally:
        log.close()
    return stats, finals


def _rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert all(len(r) == len(rows[0]) for r in rows[1:]), "a torn row"
    return rows[0], rows[1:]


def test_the_served_cluster_reports_no_usage_stats(service):
    """README, Privacy: Ray's release wheels report no usage from a cluster ray.init() starts, which is how
    `merclip serve` starts its own; the cluster's head says so in its log."""
    import ray

    log = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "dashboard.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "Usage reporting is" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    assert "Usage reporting is disabled." in log.read_text()


def test_batched_scoring_equals_the_local_engine_window_by_window(tiny_bundle):
    """The server's batch step (any mix of modality sets) gives the local engine's numbers."""
    from merclip.export.runtime import Bundle
    from merclip.stream.remote import ServiceInfo
    from merclip.stream.served import score_batch, service_info
    from merclip.stream.wire import decode_request

    bundle = Bundle.load(tiny_bundle, providers="cpu")
    info = ServiceInfo.from_json("http://x", service_info(bundle, True))
    client = RemoteEngine(info)
    from dataclasses import replace

    va = _windows(SyntheticSource(duration_s=4))
    silent = np.zeros_like(va[0].audio)
    cases = [  # (window, words) -> the modalities the reading uses
        (va[0], "", "VA"),
        (va[1], "I am so happy today", "LVA"),
        (replace(va[0], frames=()), "what a day", "LA"),
        (replace(va[1], audio=silent), "fine", "LV"),
        (replace(va[0], has_audio=False), "", "V"),
        (replace(va[1], frames=(), audio=silent), "really", "L"),
        (replace(va[0], frames=(), has_audio=False), "", ""),
        (replace(va[1], frames=()), "", "A"),
    ]
    windows = [w for w, _, _ in cases]
    texts = [t for _, t, _ in cases]
    requests = [decode_request(client.request_body(w, t), info.image_size, info.window_samples)
                for w, t in zip(windows, texts, strict=True)]  # fmt: skip
    replies = score_batch(bundle, requests)
    local = BundleEngine(bundle)
    assert {r.batch_size for r in replies} == {len(windows)}
    for window, text, reply in zip(windows, texts, replies, strict=True):
        expected = local.run(window, text)
        assert reply.modalities == expected.modalities
        _close(reply, expected)
    assert [r.modalities for r in replies] == [m for _, _, m in cases]


def _windows(source):
    w = Windower()
    out = []
    for item in source:
        out.extend(w.push(item))
    return out + list(w.flush())


def _close(got, want, tol=1e-4):
    for name in ("emotions", "sentiment"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) <= tol for k in a), (name, a, b)
    assert (math.isnan(got.agreement) and math.isnan(want.agreement)) or abs(got.agreement - want.agreement) <= tol


def test_eight_streams_share_batches_and_read_as_the_local_engine(service, tiny_bundle, tmp_path):
    url, _ = service
    from merclip.export.runtime import Bundle

    streams, seconds = 8, 12.0
    engines = [Recording(RemoteEngine.connect(url)) for _ in range(streams)]
    # some streams without a camera or a microphone: the batch holds every modality set
    kinds = [{}, {}, {"video": False}, {"audio": False}, {}, {}, {"video": False}, {}]
    results, threads = {}, []
    for k in range(streams):
        session = _session(engines[k], k, seconds, **kinds[k])

        def run(k=k, session=session):
            results[k] = _log_session(session, engines[k], tmp_path / f"stream{k}.csv")

        threads.append(threading.Thread(target=run))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    local = BundleEngine(Bundle.load(tiny_bundle, providers="cpu"))
    for k in range(streams):
        stats, finals = results[k]
        header, rows = _rows(tmp_path / f"stream{k}.csv")
        # every window of every stream has its row, none dropped, in order
        assert stats.windows == seconds / 2 and stats.dropped == 0
        assert [int(r[0]) for r in rows] == list(range(int(seconds / 2)))
        heard = kinds[k].get("audio", True)  # no microphone, no words
        assert [r.transcript for r in finals] == [words_of(k, i, True) if heard else "" for i in range(len(rows))]
        # window by window, served readings (first and final words) equal the local engine's
        for window, text, result in engines[k].calls:
            expected = local.run(window, text)
            assert result.modalities == expected.modalities
            _close(result, expected)
        assert len(engines[k].calls) > len(rows) or not heard  # final words that changed were re-scored
    sizes = [b for e in engines for b in e.engine.batch_sizes]
    assert mean_batch(sizes) > 1.0, sizes


def test_eight_cli_clients_log_what_the_local_monitor_logs(service, tiny_bundle, tmp_path):
    """Eight `merclip-live --server` processes at once: each CSV has every window, equal to the local run's."""
    url, _ = service
    clients, seconds = 8, 12
    args = ["--source", "synthetic", "--fast", "--no-ui", "--duration", str(seconds), "--no-asr"]
    served = [subprocess.Popen([*LIVE, *args, "--server", url, "--log", str(tmp_path / f"served{k}.csv")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for k in range(clients)]  # fmt: skip
    local = subprocess.run([*LIVE, *args, "--bundle", str(tiny_bundle), "--log", str(tmp_path / "local.csv")],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert local.returncode == 0, local.stderr
    local_header, local_rows = _rows(tmp_path / "local.csv")
    probs = [i for i, h in enumerate(local_header) if h.startswith(("emotion_", "sentiment_"))]
    same = [i for i, h in enumerate(local_header)
            if h in ("window", "t_start_s", "transcript", "modalities", "top_emotion", "dropped_windows")]  # fmt: skip
    batches = []
    for k, client in enumerate(served):
        _, err = client.communicate(timeout=180)
        assert client.returncode == 0, err
        header, rows = _rows(tmp_path / f"served{k}.csv")
        assert header == local_header and len(rows) == len(local_rows) == seconds // 2
        for got, want in zip(rows, local_rows, strict=True):
            # 4-decimal cells: numbers within 1e-4 print at most one last digit apart
            assert all(abs(float(got[i]) - float(want[i])) <= 1e-4 + 1e-9 for i in probs)
            assert [got[i] for i in same] == [want[i] for i in same]
        # the session summary says how the service batched this stream's windows
        (line,) = [x for x in err.splitlines() if "in batches of" in x]
        batches.append(float(line.split("in batches of ")[1].split()[0]))
    assert max(batches) > 1.0, batches  # the clients' windows met in the service's batches


def test_a_bad_request_is_refused_and_the_service_goes_on(service):
    url, _ = service
    request = urllib.request.Request(f"{url}/window", data=b"not an npz")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 400 and b"not a window request" in err.value.read()
    # a deflated member could inflate without limit in the replica: refused, whatever its size
    body = io.BytesIO()
    np.savez_compressed(body, transcript=np.array("hi"), images=np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(f"{url}/window", data=body.getvalue()), timeout=10)
    assert err.value.code == 400 and b"is compressed" in err.value.read()
    _wait_ready(url, 5)


def test_a_body_announced_too_big_is_refused_before_it_is_read():
    import asyncio

    from merclip.stream.served import MonitorModel
    from merclip.stream.wire import MAX_REQUEST_BYTES
    from starlette.requests import Request

    replica = object.__new__(MonitorModel.func_or_class)  # the handler alone: no bundle, no cluster
    replica.bundle = types.SimpleNamespace(image_size=32, window_samples=32000)
    length = str(MAX_REQUEST_BYTES + 1).encode()
    scope = {"type": "http", "method": "POST", "path": "/merclip/window", "query_string": b"",
             "headers": [(b"content-length", length)]}  # fmt: skip

    async def receive():
        raise AssertionError("the body was read")

    reply = asyncio.run(replica(Request(scope, receive)))
    assert reply.status_code == 400 and b"larger than a window can be" in reply.body


def _kill_replica() -> None:
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if "MonitorModel" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            return
    raise AssertionError("no replica to kill")


def test_replica_killed_mid_session_costs_only_the_windows_sent_while_it_is_down(service, tmp_path):
    url, _ = service
    engine = RemoteEngine.connect(url)
    session = _session(engine, 0, 14.0, realtime=True)
    seen = []

    def on_reading(reading):
        seen.append(reading)
        if reading.window == 2 and reading.final:
            threading.Thread(target=_kill_replica).start()  # while window 3 and later are on their way

    stats, finals = _log_session(session, engine, tmp_path / "kill.csv", on_reading)
    header, rows = _rows(tmp_path / "kill.csv")
    windows = int(14.0 / 2)
    assert stats.windows == windows and stats.engine_errors == 0
    # what was lost is counted as dropped, in the CSV too; nothing else is missing
    assert len(rows) + stats.dropped == windows
    assert int(rows[-1][header.index("dropped_windows")]) == stats.dropped
    # only windows sent after the kill, while Ray Serve restarts the replica (2-6 s here, so how many
    # varies, and one may slip through to the new replica between two lost ones), none before it
    lost = sorted(set(range(windows)) - {int(r[header.index("window")]) for r in rows})
    assert len(lost) == stats.dropped and all(3 <= w < windows - 1 for w in lost)
    # Ray Serve started a new replica: the last windows were read
    assert all(r.modalities for r in finals) and finals[-1].window == windows - 1
    _wait_ready(url)


def test_service_down_mid_session_marks_rows_then_reconnects(service, tiny_bundle, tmp_path):
    from merclip.stream.served import start_service
    from ray import serve

    url, opts = service
    engine = RemoteEngine.connect(url)
    # as long as the outage needs: the session stops two read windows after the service is back (a restart
    # takes a few seconds alone and much longer beside other work, which a fixed length would not allow)
    session = _session(engine, 1, 300.0, realtime=True, video=False)
    back, read_after = threading.Event(), []
    screens = []

    def on_reading(reading):
        if reading.window == 1 and reading.final:

            def outage():
                serve.shutdown()  # nothing listens on the port any more
                time.sleep(4.0)
                start_service(tiny_bundle, opts, providers="cpu")
                back.set()

            threading.Thread(target=outage).start()
        if engine.down:
            console = Console(record=True, width=120)
            console.print(
                render(UiState("t", "m", "s", engine.emotion_labels, engine.sentiment_labels, 0.6), session.stats)
            )
            screens.append(console.export_text())
        if back.is_set() and reading.final and reading.modalities:
            read_after.append(reading.window)
            if len(read_after) == 2:
                session.stop()

    stats, finals = _log_session(session, engine, tmp_path / "down.csv", on_reading)
    header, rows = _rows(tmp_path / "down.csv")
    assert len(read_after) >= 2, "the service did not come back within the session"  # (stop() lets a window finish)
    assert stats.engine_errors == 0
    state = header.index("state")
    marked = [r for r in rows if r[state] == OFFLINE_NOTE]
    assert marked, "no row says the server was unreachable"
    assert int(marked[0][header.index("window")]) >= 2 and int(marked[-1][header.index("window")]) < read_after[0]
    # a marked row has the words and times, and no probabilities
    assert all(r[header.index("emotion_happy")] == "" and r[header.index("modalities")] == "" for r in marked)
    # the service came back and the last windows were read by it again
    assert finals[-1].modalities and not engine.down
    assert len(rows) + stats.dropped == stats.windows
    assert any(OFFLINE_NOTE in s for s in screens), "the UI did not say the server was unreachable"
    _wait_ready(url)


def test_unreachable_service_at_start_is_one_line_and_exit_2(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/merclip"
    run = subprocess.run([*LIVE, "--source", "synthetic", "--no-ui", "--server", url],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the merclip service at"), run.stderr


def test_the_live_path_never_imports_ray():
    code = ("import sys, merclip.cli, merclip.stream, merclip.stream.cli, merclip.stream.pipeline, "
            "merclip.stream.remote, merclip.stream.wire; merclip.cli.build_parser(); merclip.cli.build_live_parser(); "
            "assert 'ray' not in sys.modules, 'ray imported'")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_serve_help_tells_how_to_point_cameras_at_it():
    run = subprocess.run([sys.executable, "-m", "merclip.cli", "serve", "--help"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0
    for flag in (
        "--address",
        "--replicas",
        "--num-gpus",
        "--max-batch",
        "--batch-wait-ms",
        "--server https://",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--token-file",
        "--insecure",
        "MERCLIP_TOKEN",
    ):
        assert flag in run.stdout


def test_serve_says_how_its_clients_read_and_what_of_its_config_it_ignores(tiny_bundle, tmp_path, monkeypatch, capsys):
    """The service's start line says how every client reads (the bundle's setting: clients follow it), and a
    config asking for another reading gets one notice per value, as merclip-live and eval give."""
    from merclip.stream import served

    from merclip.cli import main
    from merclip.errors import MerClipError

    def connect(opts, security, num_cpus=None):
        raise MerClipError("(the test stops here, before Ray)")

    monkeypatch.setattr(served, "connect_cluster", connect)
    (tmp_path / "c.toml").write_text("[capture]\nframes_per_window = 6\n")
    code = main(["serve", "--bundle", str(tiny_bundle), "--port", str(_free_port()), "--config",
                 str(tmp_path / "c.toml")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "clients read 2-s windows every 2 s, 4 frames" in err
    assert err.count("notice: capture.frames_per_window = 6 ignored") == 1
