"""Who may use `merclip serve`, and how windows reach it: TLS, a shared token, no open listening by accident.

Every request carries four face crops and two seconds of a voice: biometric data of the people watched. A
service that other machines can reach must therefore encrypt (TLS, done by Ray Serve's HTTP proxy, i.e.
uvicorn and Python's ``ssl``: no cryptography of ours) and must know its clients (one shared token, sent as
``Authorization: Bearer``, compared in constant time before a request's body is read). A ``--host`` other
than loopback without both is refused unless the user says ``--insecure``; then the service says so at start
and `merclip doctor` says so while it runs (a small file per running service in the cache folder).

No Ray here: these checks run before a cluster starts, and the client and the doctor use them too.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import ipaddress
import json
import os
import socket
import ssl
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from merclip.errors import MerClipError

TOKEN_ENV = "MERCLIP_TOKEN"
# A shared secret that can be guessed is no secret: `openssl rand -hex 32` gives 64 characters.
MIN_TOKEN_CHARS = 16
MAKE_TOKEN = "make one: openssl rand -hex 32 > token && chmod 600 token"
# A refused client (a scanner, a camera with an old token) is said at most this often per address.
REFUSAL_LOG_EVERY_S = 60.0
# Addresses remembered for that; beyond it the quiet ones are forgotten (a scan from many addresses).
MAX_REFUSED_ADDRESSES = 4096


# ---- the token ---------------------------------------------------------------------------------------------
def read_token(path: str = "", flag: str = "--token-file") -> str:
    """The shared token: the content of ``path`` (one line), else ``$MERCLIP_TOKEN``, else "" (none). Never
    a command-line value: other users see a process's arguments in `ps`."""
    if path:
        source = f"{flag} {path}"
        try:
            with open(Path(path).expanduser(), "rb") as f:
                raw = f.read(4096)
            text = raw.decode("utf-8")
        except OSError as err:
            raise MerClipError(f"{source}: {err.strerror or err}") from None
        except UnicodeDecodeError:
            raise MerClipError(f"{source} is not a text file holding a token ({MAKE_TOKEN})") from None
    else:
        source, text = TOKEN_ENV, os.environ.get(TOKEN_ENV, "")
        if not text.strip():
            return ""
    token = text.strip()
    if not token:
        raise MerClipError(f"{source} is empty ({MAKE_TOKEN})")
    if len(token) < MIN_TOKEN_CHARS or not all(33 <= ord(c) < 127 for c in token):
        raise MerClipError(f"{source}: a token is one word of at least {MIN_TOKEN_CHARS} printable ASCII "
                           f"characters ({MAKE_TOKEN})")  # fmt: skip
    return token


def token_digest(token: str) -> bytes:
    """What a replica keeps instead of the token itself (Ray stores a deployment's arguments)."""
    return hashlib.sha256(token.encode()).digest()


def bearer_matches(authorization: str | None, digest: bytes) -> bool:
    """Whether an ``Authorization`` header carries the token whose digest is ``digest``. Equal-length
    digests compared with ``hmac.compare_digest``: the time taken says nothing about the token."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        presented = ""
    return hmac.compare_digest(hashlib.sha256(presented.strip().encode()).digest(), digest)


@dataclass
class _Refused:
    unsaid: int  # refusals since the last line for this address
    said_at: float  # when that line was logged (monotonic seconds)


class RefusalLog:
    """Requests refused for want of a valid token, counted per client address; a line for an address at
    most once per ``every_s``, carrying the count, so a flood of bad requests is one line a minute."""

    def __init__(self, every_s: float = REFUSAL_LOG_EVERY_S, max_addresses: int = MAX_REFUSED_ADDRESSES):
        self.every_s = every_s
        self.max_addresses = max_addresses
        self.total = 0
        self._seen: dict[str, _Refused] = {}

    def refuse(self, address: str, now: float) -> str | None:
        """Count a refusal; the line to log now, or None when this address was said less than a minute ago."""
        self.total += 1
        entry = self._seen.get(address)
        if entry is not None and now - entry.said_at < self.every_s:
            entry.unsaid += 1
            return None
        if len(self._seen) >= self.max_addresses:
            self._forget_quiet(now)
        self._seen[address] = _Refused(0, now)
        return self._line(address, 1 + (entry.unsaid if entry else 0), first=entry is None)

    def due(self, now: float) -> list[str]:
        """Lines for the addresses refused since their last line, once that line is a minute old."""
        lines = []
        for address, entry in self._seen.items():
            if entry.unsaid and now - entry.said_at >= self.every_s:
                lines.append(self._line(address, entry.unsaid, first=False))
                entry.unsaid, entry.said_at = 0, now
        return lines

    def next_due(self) -> float | None:
        """When ``due`` will next have a line (monotonic seconds), or None."""
        times = [e.said_at + self.every_s for e in self._seen.values() if e.unsaid]
        return min(times) if times else None

    def _forget_quiet(self, now: float) -> None:
        quiet = [a for a, e in self._seen.items() if not e.unsaid and now - e.said_at >= self.every_s]
        for address in quiet or list(self._seen)[: len(self._seen) // 2]:
            del self._seen[address]

    def _line(self, address: str, count: int, first: bool) -> str:
        what = "a request" if count == 1 else f"{count} requests"
        since = "" if first else f" within {self.every_s:.0f} s"
        return f"HTTP 401: refused {what} without a valid token from {address}{since} ({self.total} refused in all)"


# ---- where the service listens -------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (only this machine can connect)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise MerClipError(f"cannot listen on {host}: {err.strerror or err}: check --host") from None
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def private_file_warning(path: str, what: str) -> str:
    """A ``warning:`` line when a secret's file can be read by others than its owner, else ""."""
    if not path:
        return ""
    try:
        mode = stat.S_IMODE(os.stat(Path(path).expanduser()).st_mode)
    except OSError:
        return ""
    if not mode & 0o077:
        return ""
    return f"warning: {what} {path} can be read by others than its owner (mode {mode:o}): chmod 600 {path}"


@dataclass(frozen=True)
class ServerSecurity:
    """TLS files, the token and ``--insecure``, as `merclip serve` runs with them (``[serve]`` + flags)."""

    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    token: str = field(default="", repr=False)
    token_file: str = ""
    insecure: bool = False

    @classmethod
    def from_config(cls, serve) -> ServerSecurity:
        """From the ``[serve]`` section (flags already applied); files checked, the token read."""

        def absolute(path: str) -> str:  # Ray's proxy runs in another process, maybe another folder
            return str(Path(path).expanduser().absolute()) if path else ""

        sec = cls(absolute(serve.tls_cert), absolute(serve.tls_key), absolute(serve.tls_client_ca),
                  read_token(serve.token_file), serve.token_file, serve.insecure)  # fmt: skip
        sec.check_tls_files()
        return sec

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def check_tls_files(self) -> None:
        """Load the certificate, key and client CA as the proxy will: a bad file is one line now, not a proxy
        that never comes up."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise MerClipError("--tls-cert and --tls-key go together (serve.tls_cert, serve.tls_key)")
        if self.tls_client_ca and not self.tls:
            raise MerClipError("--tls-client-ca needs --tls-cert and --tls-key: client certificates are part of TLS")
        if not self.tls:
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

        def passphrase():
            raise MerClipError(f"the TLS key {self.tls_key} is protected by a passphrase: merclip serve needs it "
                               "without (openssl pkey -in KEY -out PLAIN.key; chmod 600 PLAIN.key)")  # fmt: skip

        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key, password=passphrase)
        except OSError as err:
            if not isinstance(err, ssl.SSLError):
                raise MerClipError(f"--tls-cert/--tls-key: {err.filename or self.tls_cert}: {err.strerror}") from None
            raise MerClipError(f"cannot use {self.tls_cert} with the key {self.tls_key} ({err.reason or err}): "
                               "give a PEM certificate and its unencrypted PEM key") from None  # fmt: skip
        if self.tls_client_ca:
            try:
                ctx.load_verify_locations(self.tls_client_ca)
            except OSError as err:
                why = err.reason if isinstance(err, ssl.SSLError) else err.strerror
                raise MerClipError(f"--tls-client-ca {self.tls_client_ca}: {why or err}: give a PEM CA "
                                   "certificate") from None  # fmt: skip

    def missing(self) -> str:
        """What a service open to other machines lacks, as flags to add ("" = nothing)."""
        add = []
        if not self.tls:
            add.append("--tls-cert FILE --tls-key FILE")
        if not self.token:
            add.append(f"--token-file FILE (or {TOKEN_ENV})")
        return " and ".join(add)

    def exposure(self, host: str) -> str:
        """What listening on ``host`` would expose, for want of TLS or a token ("" = nothing: both are
        there, or only this machine can connect)."""
        if not self.missing() or is_loopback(host):
            return ""
        return " and ".join(
            ([] if self.tls else ["the faces and voices sent would cross the network in clear"])
            + ([] if self.token else ["anyone who can reach the port could use the model"])
        )

    def check(self, host: str, port: int) -> list[str]:
        """Refuse to listen beyond loopback without TLS and a token (unless ``insecure``); the ``warning:``
        lines to print at start otherwise."""
        lines = [w for w in (private_file_warning(self.tls_key, "the TLS key"),
                             private_file_warning(self.token_file, "the token file")) if w]  # fmt: skip
        exposed = self.exposure(host)
        if exposed and not self.insecure:
            raise MerClipError(f"--host {host} lets other machines in, and {exposed}: add {self.missing()} "
                               "(README: Many streams), or --insecure to run it so knowingly")  # fmt: skip
        if exposed:
            lines.append(f"warning: --insecure: listening on {host}:{port}, where {exposed}")
        return lines


def require_client_certificates() -> None:
    """Ray worker setup hook (``runtime_env``), set only with ``--tls-client-ca``.

    Ray Serve (2.60) hands ``HTTPOptions.ssl_ca_certs`` to uvicorn but no ``ssl_cert_reqs``, and uvicorn's
    default is ``CERT_NONE``: the CA is loaded and no client is ever asked for a certificate (measured: a client
    without one is served). In the proxy's process this makes each TLS context uvicorn builds with a CA require
    a client certificate signed by it; uvicorn and ``ssl`` still do all the work."""
    import uvicorn.config

    build = uvicorn.config.create_ssl_context
    if getattr(build, "requires_client_certificates", False):
        return
    signature = inspect.signature(build)

    @functools.wraps(build)
    def create_ssl_context(*args, **kwargs):
        context = build(*args, **kwargs)
        if signature.bind(*args, **kwargs).arguments.get("ca_certs"):
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    create_ssl_context.requires_client_certificates = True
    uvicorn.config.create_ssl_context = create_ssl_context


# ---- running services, for `merclip doctor` -----------------------------------------------------------------
def announce(folder: Path, url: str, host: str, sec: ServerSecurity, exposed: bool) -> Path:
    """Write what this running service is (and how safe) to ``folder/PID.json``; the caller removes it."""
    path = folder / f"{os.getpid()}.json"
    info = {"pid": os.getpid(), "url": url, "host": host, "tls": sec.tls,
            "client_certificates": bool(sec.tls_client_ca), "token": bool(sec.token),
            "insecure": exposed and bool(sec.missing()), "started": time.time()}  # fmt: skip
    path.write_text(json.dumps(info))
    return path


def running_services(folder: Path) -> list[dict]:
    """The services announced in ``folder`` whose process still runs (the files of the others removed)."""
    from .cache import pid_alive

    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            info = json.loads(path.read_text())
            alive = pid_alive(int(info["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if alive:
            found.append(info)
        else:
            path.unlink(missing_ok=True)
    return found
