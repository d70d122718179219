"""Who may use `merclip serve`: the token, the refusal log, the listening rule and the TLS files, checked
without a cluster (tests/test_serve_secure.py runs them on Ray Serve)."""

import asyncio
import socket
import ssl
import types

import pytest
from merclip.stream import bundles, served
from merclip.stream.access import (
    RefusalLog,
    ServerSecurity,
    bearer_matches,
    read_token,
    require_client_certificates,
    token_digest,
)

from merclip.cli import main
from merclip.errors import MerClipError

TOKEN = "0123456789abcdef0123"


# ---- the token -------------------------------------------------------------------------------------------
def test_the_token_comes_from_its_file_else_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MERCLIP_TOKEN", raising=False)
    assert read_token("") == ""  # none asked for
    monkeypatch.setenv("MERCLIP_TOKEN", TOKEN)
    assert read_token("") == TOKEN
    path = tmp_path / "token"
    path.write_text("  " + TOKEN[::-1] + "\n")
    assert read_token(str(path)) == TOKEN[::-1]  # the file wins, trimmed


@pytest.mark.parametrize(
    ("content", "said"), [("", "is empty"), ("short", "at least 16"), ("two words here!!!", "one word")]
)
def test_a_token_that_is_no_secret_is_refused(content, said, tmp_path):
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(MerClipError, match=said) as err:
        read_token(str(path))
    assert "openssl rand" in str(err.value)


def test_only_the_bearer_token_matches():
    digest = token_digest(TOKEN)
    assert bearer_matches(f"Bearer {TOKEN}", digest) and bearer_matches(f"bearer  {TOKEN} ", digest)
    for header in (None, "", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer"):
        assert not bearer_matches(header, digest), header


def test_a_refused_address_is_said_once_a_minute_with_its_count():
    log = RefusalLog(every_s=60)
    assert "refused a request without a valid token from 10.0.0.7" in log.refuse("10.0.0.7", 0.0)
    assert [log.refuse("10.0.0.7", t) for t in (1.0, 2.0, 30.0)] == [None, None, None]  # counted, not said
    assert log.refuse("10.0.0.8", 31.0) is not None  # another address has its own minute
    assert log.next_due() == 60.0 and log.due(59.0) == []
    (line,) = log.due(60.0)  # said even if that client sends nothing more
    assert "3 requests without a valid token from 10.0.0.7 within 60 s" in line and "(5 refused in all)" in line
    assert log.due(200.0) == [] and log.next_due() is None
    assert "from 10.0.0.7" in log.refuse("10.0.0.7", 200.0)  # a minute after its last line: said at once


def test_a_scan_from_many_addresses_is_remembered_within_bounds():
    log = RefusalLog(every_s=60, max_addresses=100)
    for i in range(1000):
        log.refuse(f"10.0.{i // 256}.{i % 256}", float(i))
    assert log.total == 1000 and len(log._seen) <= 100


# ---- the replica's handler: the token before anything else ------------------------------------------------------
def _request(headers: list[tuple[bytes, bytes]], path: str = "/merclip/window", method: str = "POST"):
    from starlette.requests import Request

    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": headers,
             "client": ("10.1.2.3", 5555)}  # fmt: skip

    async def receive():
        raise AssertionError("the body was read")

    return Request(scope, receive)


def _replica():
    replica = object.__new__(served.MonitorModel.func_or_class)  # the handler alone: no bundle, no cluster
    replica.bundle = types.SimpleNamespace(image_size=32, window_samples=32000)
    replica.token, replica.refusals, replica._flush_at = token_digest(TOKEN), RefusalLog(), None
    return replica


@pytest.mark.parametrize("auth", [None, b"Bearer wrong-token-wrong-token", b"Basic " + TOKEN.encode()])
def test_without_the_token_a_request_gets_401_before_its_body_is_read(auth, capfd):
    replica = _replica()
    headers = [(b"content-length", b"999999999")]  # a body that would be refused as too big: 401 comes first
    if auth:
        headers.append((b"authorization", auth))

    async def call():
        return [await replica(_request(headers)), await replica(_request(headers, "/merclip/info", "GET"))]

    replies = asyncio.run(call())
    assert [r.status_code for r in replies] == [401, 401]
    assert replies[0].headers["www-authenticate"].startswith("Bearer")
    assert replica.refusals.total == 2
    err = capfd.readouterr().err  # the replica's stderr, which Ray forwards to `merclip serve`'s console
    assert err.count("HTTP 401") == 1 and "from 10.1.2.3" in err
    assert TOKEN not in err and "wrong-token" not in err


def test_with_the_token_the_request_goes_on_to_the_model():
    replica = _replica()
    reply = asyncio.run(replica(_request([(b"authorization", f"Bearer {TOKEN}".encode()),
                                          (b"content-length", b"999999999")])))  # fmt: skip
    assert reply.status_code == 400 and b"larger than a window can be" in reply.body  # past the token, to the size


# ---- where the service may listen ---------------------------------------------------------------------------
def test_loopback_needs_neither_tls_nor_token():
    assert ServerSecurity().check("127.0.0.1", 8000) == []
    assert ServerSecurity().check("localhost", 8000) == []


@pytest.mark.parametrize(
    ("tls", "token", "add"),
    [(False, False, "add --tls-cert FILE --tls-key FILE and --token-file FILE"),
     (True, False, "add --token-file FILE (or MERCLIP_TOKEN)"),
     (False, True, "add --tls-cert FILE --tls-key FILE (README")],
)  # fmt: skip
def test_an_open_host_without_tls_and_a_token_is_refused_naming_what_to_add(tls, token, add, pki):
    sec = ServerSecurity(pki.server_cert if tls else "", pki.server_key if tls else "", token=TOKEN if token else "")
    with pytest.raises(MerClipError) as err:
        sec.check("0.0.0.0", 8000)
    assert add in str(err.value) and "--insecure" in str(err.value)
    assert ServerSecurity(pki.server_cert, pki.server_key, token=TOKEN).check("0.0.0.0", 8000) == []


def test_insecure_is_said(pki):
    (line,) = ServerSecurity(token=TOKEN, insecure=True).check("0.0.0.0", 8000)
    assert line == ("warning: --insecure: listening on 0.0.0.0:8000, where the faces and voices sent would cross "
                    "the network in clear")  # fmt: skip


def test_a_key_others_can_read_is_warned_of(pki, tmp_path):
    key = tmp_path / "open.key"
    key.write_bytes(open(pki.server_key, "rb").read())
    key.chmod(0o644)
    (line,) = ServerSecurity(pki.server_cert, str(key), token=TOKEN).check("0.0.0.0", 8000)
    assert line == f"warning: the TLS key {key} can be read by others than its owner (mode 644): chmod 600 {key}"


@pytest.mark.parametrize(
    ("cert", "key", "said"),
    [("server_cert", "", "--tls-cert and --tls-key go together"),
     ("server_cert", "client_key", "KEY_VALUES_MISMATCH"),
     ("token_file", "server_key", "give a PEM certificate"),
     ("missing", "server_key", "No such file")],
)  # fmt: skip
def test_unusable_tls_files_are_one_line_before_ray(cert, key, said, pki):
    files = {**vars(pki), "missing": "/nonexistent/cert.pem", "": ""}
    with pytest.raises(MerClipError, match=said):
        ServerSecurity(files[cert], files[key]).check_tls_files()


def test_client_certificates_are_required_once_the_proxy_has_a_client_ca(pki, monkeypatch):
    """Ray Serve passes ``ssl_ca_certs`` to uvicorn without ``ssl_cert_reqs``, and uvicorn would then ask no
    client for a certificate; the worker setup hook makes the CA mean what it says."""
    import uvicorn.config

    monkeypatch.setattr(uvicorn.config, "create_ssl_context", uvicorn.config.create_ssl_context)  # restored after
    config = {"certfile": pki.server_cert, "keyfile": pki.server_key, "password": None,
              "ssl_version": ssl.PROTOCOL_TLS_SERVER, "cert_reqs": ssl.CERT_NONE, "ciphers": None}  # fmt: skip
    assert uvicorn.config.create_ssl_context(ca_certs=pki.ca, **config).verify_mode == ssl.CERT_NONE  # Ray's way
    require_client_certificates()
    require_client_certificates()  # a second worker setup in the same process changes nothing
    assert uvicorn.config.create_ssl_context(ca_certs=pki.ca, **config).verify_mode == ssl.CERT_REQUIRED
    assert uvicorn.config.create_ssl_context(ca_certs=None, **config).verify_mode == ssl.CERT_NONE


# ---- `merclip serve`: refused before Ray, or accepted with its warning -------------------------------------------
def _forbidden(*args, **kwargs):
    raise AssertionError("nothing may start")


def test_serve_on_an_open_host_alone_is_refused_before_anything_starts(monkeypatch, capsys):
    monkeypatch.delenv("MERCLIP_TOKEN", raising=False)
    monkeypatch.setattr(served, "connect_cluster", _forbidden)
    monkeypatch.setattr(bundles, "resolve_bundle", _forbidden)  # no export either
    assert main(["serve", "--model", "tiny", "--host", "0.0.0.0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --host 0.0.0.0 lets other machines in")
    assert "add --tls-cert FILE --tls-key FILE and --token-file FILE" in lines[0]


def test_serve_insecure_goes_on_and_says_so(tiny_bundle, monkeypatch, capsys):
    monkeypatch.delenv("MERCLIP_TOKEN", raising=False)
    started = []

    def connect(opts, security, num_cpus=None):
        started.append((opts.host, security))
        raise MerClipError("(the test stops here, before Ray)")

    monkeypatch.setattr(served, "connect_cluster", connect)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["serve", "--bundle", str(tiny_bundle), "--host", "0.0.0.0", "--port", str(port), "--insecure"])
    err = capsys.readouterr().err
    assert code == 2 and started and started[0][0] == "0.0.0.0" and started[0][1].insecure
    assert f"warning: --insecure: listening on 0.0.0.0:{port}, where the faces and voices sent would cross the " \
           "network in clear and anyone who can reach the port could use the model" in err  # fmt: skip


def test_tokens_are_never_command_line_values():
    from merclip.cli import build_live_parser, build_parser

    for parser in (build_parser()._subparsers._group_actions[0].choices["serve"], build_live_parser()):
        flags = {s for a in parser._actions for s in a.option_strings}
        assert "--token-file" in flags and not {"--token", "--bearer", "--password"} & flags
