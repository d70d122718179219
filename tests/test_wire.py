"""The served window's wire format (stream/wire.py): what a client sends decodes as it was, and a body that
would grow past the size limit on loading is refused before anything is inflated."""

import io
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from merclip.stream.wire import MAX_REQUEST_BYTES, decode_request, encode_request

from merclip.errors import MerClipError

SIZE, SAMPLES = 32, 32000


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _bomb(megabytes: int) -> bytes:
    """A window whose images member deflates ``megabytes`` MB of zeros to a few hundred KB, written in
    chunks so that the test itself never holds the array."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (megabytes, 1024, 1024)}
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("transcript.npy", _npy(np.array("hi")), zipfile.ZIP_STORED)
        with archive.open("images.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            zeros = bytes(1 << 20)
            for _ in range(megabytes):
                member.write(zeros)
    return buf.getvalue()


def test_a_window_decodes_as_it_was_sent():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    audio = rng.standard_normal(SAMPLES).astype(np.float32)
    request = decode_request(encode_request(list(images), audio, "hello there"), SIZE, SAMPLES)
    assert np.array_equal(request.images, images) and np.array_equal(request.audio, audio)
    assert request.transcript == "hello there"
    # no face, no voice, no words: a window all the same
    empty = decode_request(encode_request([], None, ""), SIZE, SAMPLES)
    assert empty.images.shape == (0, SIZE, SIZE, 3) and empty.audio is None and empty.transcript == ""


def test_a_compressed_bomb_is_refused_before_it_inflates():
    body = _bomb(200)
    assert len(body) < 1 << 20 < MAX_REQUEST_BYTES  # small enough to pass the body's size check
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(MerClipError, match="'images.npy' is compressed"):
            decode_request(body, SIZE, SAMPLES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(body) and time.perf_counter() - start < 1.0  # the 200 MB were never allocated


def test_any_compressed_window_is_refused():
    buf = io.BytesIO()
    np.savez_compressed(buf, transcript=np.array("hi"), audio=np.zeros(SAMPLES, np.float32))
    with pytest.raises(MerClipError, match="compressed"):
        decode_request(buf.getvalue(), SIZE, SAMPLES)


def test_unexpected_members_and_non_archives_are_not_windows():
    buf = io.BytesIO()
    np.savez(buf, transcript=np.array("hi"), extra=np.zeros(3))
    with pytest.raises(MerClipError, match="unexpected member 'extra.npy'"):
        decode_request(buf.getvalue(), SIZE, SAMPLES)
    with pytest.raises(MerClipError, match="not a window request"):
        decode_request(b"not an npz", SIZE, SAMPLES)
    with pytest.raises(MerClipError, match="larger than a window can be"):
        decode_request(bytes(MAX_REQUEST_BYTES + 1), SIZE, SAMPLES)
