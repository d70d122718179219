"""`merclip serve` as README's "Many streams" runs it for other machines: HTTPS (Ray Serve's own) and a token,
run as a user runs it (the command, in its own process) with a CA and certificates made by the test.

One service for the module (a Ray cluster starts in ~15 s); its last test stops it with SIGTERM and reads the
process table. A second, short-lived service requires client certificates.
"""

import csv
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from merclip.stream.remote import ClientAuth, RemoteEngine

from merclip.cli import live_main

SERVE = [sys.executable, "-m", "merclip.cli", "serve"]
LIVE = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"]
CLIENT = ["--source", "synthetic", "--fast", "--no-ui", "--no-asr", "--duration", "8"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_under(pid: int) -> set[int]:
    """Every process descended from ``pid``, from /proc (what `merclip serve` started: Ray's cluster)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child in [c for c, pp in parent.items() if pp == p and c not in found]:
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_serve(bundle, *flags) -> types.SimpleNamespace:
    """`merclip serve` in its own process; returns once it prints its address (its stderr kept in .lines)."""
    import ray  # noqa: F401  the dev extra installs it: no skip, a missing Ray fails here

    port = _free_port()
    proc = subprocess.Popen([*SERVE, "--bundle", str(bundle), "--providers", "cpu", "--port", str(port), *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 180
    while not any("serving at" in line for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("merclip serve did not start:\n" + "".join(lines))
        time.sleep(0.2)
    return types.SimpleNamespace(proc=proc, lines=lines, port=port, url=f"https://localhost:{port}/merclip")


def stop_serve(service, sig=signal.SIGINT) -> float:
    if service.proc.poll() is None:
        service.proc.send_signal(sig)
    start = time.monotonic()
    service.proc.wait(timeout=60)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def secure(tiny_bundle, pki):
    service = start_serve(tiny_bundle, "--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
                          "--token-file", pki.token_file)  # fmt: skip
    try:
        yield service
    finally:
        stop_serve(service)


def _get(url: str, headers: dict | None = None, data: bytes | None = None, context=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    return urllib.request.urlopen(request, timeout=10, context=context)


def _rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_it_says_where_it_serves_and_how_to_connect(secure):
    (line,) = [x for x in secure.lines if "serving at" in x]
    assert f"serving at https://127.0.0.1:{secure.port}/merclip" in line
    assert "--server-ca CA.pem" in line and "--token-file TOKEN" in line


def test_served_readings_over_tls_with_the_token_equal_the_local_engines(secure, tiny_bundle, pki, tmp_path):
    served = subprocess.run([*LIVE, *CLIENT, "--server", secure.url, "--server-ca", pki.ca, "--token-file",
                             pki.token_file, "--log", str(tmp_path / "served.csv")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    local = subprocess.run([*LIVE, *CLIENT, "--bundle", str(tiny_bundle), "--log", str(tmp_path / "local.csv")],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert served.returncode == 0 and local.returncode == 0, served.stderr + local.stderr
    header, rows = _rows(tmp_path / "served.csv")
    local_header, local_rows = _rows(tmp_path / "local.csv")
    assert header == local_header and len(rows) == len(local_rows) == 4
    probs = [i for i, h in enumerate(header) if h.startswith(("emotion_", "sentiment_"))]
    for got, want in zip(rows, local_rows, strict=True):
        assert all(abs(float(got[i]) - float(want[i])) <= 1e-4 + 1e-9 for i in probs)
        assert got[header.index("modalities")] == want[header.index("modalities")]
    assert f"served by {secure.url}" in served.stderr


def test_without_the_token_every_request_gets_401_and_no_body_is_parsed(secure, pki):
    ca = ClientAuth(ca_file=pki.ca).ssl_context()
    malformed = b"not an npz"  # with the token: 400, "not a window request"
    for headers in ({}, {"Authorization": "Bearer " + "0" * 64}, {"Authorization": f"Basic {pki.token}"}):
        for route, data in (("window", malformed), ("info", None)):
            with pytest.raises(urllib.error.HTTPError) as err:
                _get(f"{secure.url}/{route}", headers, data, ca)
            assert err.value.code == 401 and b"a valid token is needed" in err.value.read(), (headers, route)
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(f"{secure.url}/window", {"Authorization": f"Bearer {pki.token}"}, malformed, ca)
    assert err.value.code == 400 and b"not a window request" in err.value.read()
    # six refusals from this address: one line in the service's log, with the address, never a token
    deadline = time.monotonic() + 15
    while not any("HTTP 401" in x for x in secure.lines) and time.monotonic() < deadline:
        time.sleep(0.2)
    said = [x for x in secure.lines if "HTTP 401" in x]
    assert len(said) == 1 and "refused a request without a valid token from 127.0.0.1" in said[0], said
    assert not any(pki.token in x or "0" * 64 in x for x in secure.lines)


def test_plain_http_to_the_tls_port_fails_cleanly(secure, pki, capsys):
    start = time.monotonic()
    with pytest.raises((OSError, urllib.error.URLError)):
        _get(f"http://localhost:{secure.port}/merclip/info", {"Authorization": f"Bearer {pki.token}"})
    assert time.monotonic() - start < 10  # refused, not left hanging
    code = live_main([*CLIENT, "--server", f"http://localhost:{secure.port}/merclip", "--token-file", pki.token_file])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"it speaks TLS: use https://localhost:{secure.port}/merclip" in err[0]
    ok = _get(
        f"{secure.url}/info", {"Authorization": f"Bearer {pki.token}"}, context=ClientAuth(ca_file=pki.ca).ssl_context()
    )
    assert ok.status == 200  # the service goes on


@pytest.mark.parametrize(
    ("flags", "said"),
    [(["--server-ca", "other_ca"], "its certificate is not signed by the CA in --server-ca"),
     ([], "its certificate is not signed by the system's CAs (no --server-ca)"),
     (["--server-ca", "ca", "127.0.0.1"], "its certificate is not valid for the name 127.0.0.1"),
     (["--server-ca", "ca", "no token"], "it requires a token")],
)  # fmt: skip
def test_a_client_the_service_would_not_trust_or_serve_is_refused_at_start(flags, said, secure, pki, monkeypatch,
                                                                             capsys):  # fmt: skip
    from merclip.stream import devices

    monkeypatch.setattr(devices, "check_devices", lambda *a: pytest.fail("a device was opened"))
    monkeypatch.delenv("MERCLIP_TOKEN", raising=False)
    url = secure.url.replace("localhost", "127.0.0.1") if "127.0.0.1" in flags else secure.url
    args = ["--camera", "0", "--no-ui", "--no-asr", "--server", url]
    if "--server-ca" in flags:
        args += ["--server-ca", getattr(pki, flags[1])]
    if "no token" not in flags:
        args += ["--token-file", pki.token_file]
    assert live_main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot use the merclip service at {url}: ")
    assert said in lines[0], lines


def test_sigterm_stops_it_as_ctrl_c_does_and_leaves_no_ray_process(secure):
    """Last in this module: it stops the module's service. `docker stop`, `systemctl stop`, `timeout`."""
    ray_processes = _processes_under(secure.proc.pid)
    assert len(ray_processes) >= 5  # GCS, raylet, Serve's controller, proxy, the replica...
    signalled = time.monotonic()
    stop_serve(secure, signal.SIGTERM)
    assert secure.proc.returncode == 143
    after = secure.lines[[i for i, x in enumerate(secure.lines) if "serving at" in x][0] + 1 :]
    assert [x for x in after if "HTTP 401" not in x] == ["service stopped (SIGTERM)\n"], after
    while any(_alive(p) for p in ray_processes) and time.monotonic() - signalled < 10:
        time.sleep(0.2)
    assert not [p for p in ray_processes if _alive(p)], "Ray processes left 10 s after SIGTERM"


def test_a_service_that_requires_client_certificates_refuses_a_client_without_one(tiny_bundle, pki, capsys):
    service = start_serve(tiny_bundle, "--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
                          "--tls-client-ca", pki.ca, "--token-file", pki.token_file)  # fmt: skip
    try:
        ray_processes = _processes_under(service.proc.pid)
        assert "--client-cert CAMERA.pem --client-key CAMERA.key" in "".join(service.lines)
        code = live_main([*CLIENT, "--server", service.url, "--server-ca", pki.ca, "--token-file", pki.token_file])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "it may require a client certificate" in err[0], err
        auth = ClientAuth(pki.token, pki.ca, pki.client_cert, pki.client_key)
        assert RemoteEngine.connect(service.url, auth).info.image_size > 0  # with its certificate: served
    finally:
        stop_serve(service)
    assert service.proc.returncode == 130 and service.lines[-1] == "service stopped (Ctrl-C)\n"
    assert not [p for p in ray_processes if _alive(p)]
