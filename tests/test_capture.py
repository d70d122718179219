"""Live devices with scripted fakes: a camera read as fast as it delivers (no backlog) and thinned to the asked
fps, a camera that drops out and is reconnected with back-off, a microphone whose stream ends and is opened
again, each outage said once and counted. The same paths against real servers: tests/test_real_devices.py."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from merclip.stream.capture import camera_name, camera_target, is_url
from merclip.stream.device_source import Backoff, DeviceSource
from merclip.stream.record import RecordingSource
from merclip.stream.records import AudioBlock, Frame, SourceEvent

from merclip.errors import MerClipError


class Camera:
    """Delivers a frame every 1/``rate_fps`` s; ``read`` blocks until the next one, as a webcam or a stream does.
    After ``frames`` frames the stream ends (a read fails)."""

    def __init__(self, rate_fps: float, frames: int | None = None):
        self.gap, self.left = 1.0 / rate_fps, frames
        self.next_at = time.monotonic()

    def read(self):
        if self.left is not None:
            if self.left <= 0:
                return False, None
            self.left -= 1
        self.next_at += self.gap
        time.sleep(max(0.0, self.next_at - time.monotonic()))
        return True, np.zeros((8, 8, 3), np.uint8)

    def release(self):
        pass


class Mic:
    """0.1-s blocks from a thread; after ``blocks`` blocks its stream ends by itself (``active`` turns False),
    as PortAudio's does when the sound server goes away."""

    def __init__(self, on_audio, blocks: int | None = None):
        self.left, self.stop = blocks, threading.Event()
        self.active = True

        def run():
            while not self.stop.wait(0.1):
                if self.left is not None and self.left <= 0:
                    self.active = False
                    return
                if self.left is not None:
                    self.left -= 1
                on_audio(np.full(1600, 0.1, np.float32))

        threading.Thread(target=run, daemon=True).start()

    def close(self):
        self.stop.set()


def drain(source: DeviceSource, seconds: float) -> list:
    items, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            items.append(source._queue.get(timeout=0.05))
        except Exception:
            continue
    return items


@pytest.mark.parametrize("camera_fps", [30.0, 15.0])
def test_camera_read_as_it_delivers_and_thinned_to_the_asked_fps(camera_fps):
    source = DeviceSource(camera="0", microphone=None, fps=15, open_camera=lambda *a: Camera(camera_fps))
    source.start()
    items = drain(source, 2.0)
    source.close()
    times = [i.t_s for i in items if isinstance(i, Frame)]
    assert 26 <= len(times) <= 32, len(times)  # ~15 fps whether the camera sends 30 or exactly 15
    assert max(np.diff(times)) < 0.12  # a 15-fps camera loses no frame to arrival jitter


def test_a_dropped_camera_reconnects_with_back_off_said_once_and_counted(caplog):
    opened: list[float] = []

    def open_camera(*args):
        opened.append(time.monotonic())
        if len(opened) == 1:
            return Camera(15, frames=8)  # ~0.5 s of frames, then the stream ends
        if len(opened) < 5:
            raise MerClipError("cannot open camera http://cam/video: no video stream there")
        return Camera(15)

    caplog.set_level(logging.WARNING)
    source = DeviceSource(camera="http://cam/video", microphone=None, fps=15, open_camera=open_camera, retry_s=0.8)
    source.start()
    items = drain(source, 3.5)
    source.close()
    waits = np.diff(opened[1:5])
    assert list(np.round(waits, 1)) == [0.5, 0.8, 0.8], "0.25 s, then doubling up to retry_s"
    events = [i for i in items if isinstance(i, SourceEvent)]
    assert [e.status for e in events][:1] == ["lost"] and events[-1].status == "ok"
    assert "reconnecting" in events[0].message and "http://cam/video" in events[0].message
    frames = [i for i in items if isinstance(i, Frame)]
    assert frames[-1].t_s > events[-1].t_s, "frames again after the reconnection"
    said = [r.message for r in caplog.records if "cam/video" in r.message]
    assert len(said) == 2 and "reconnecting" in said[0] and "delivering again" in said[1]  # once each way
    (note,) = source.outage_notes()
    assert note.startswith("camera http://cam/video stopped once (") and "s without frames in all" in note


def test_a_microphone_whose_stream_ended_is_opened_again(caplog):
    mics: list[Mic] = []

    def open_microphone(device, rate, block_s, on_audio):
        mics.append(Mic(on_audio, blocks=5 if not mics else None))  # the first one's server goes away
        return mics[-1]

    caplog.set_level(logging.WARNING)
    source = DeviceSource(camera=None, microphone="", open_microphone=open_microphone, retry_s=0.5)
    source.start()
    items = drain(source, 2.5)
    source.close()
    assert len(mics) == 2 and not mics[0].active
    statuses = [i.status for i in items if isinstance(i, SourceEvent)]
    assert statuses[0] == "lost" and statuses[-1] == "ok"
    blocks = [i for i in items if isinstance(i, AudioBlock)]
    assert blocks[-1].t_s > 1.5, "audio resumes"
    assert source.outages == {"V": 0, "A": 1}
    said = [r.message for r in caplog.records]  # said once each way (before the 1-s watchdog would say it)
    assert said == ["microphone (default) stopped (its device or sound server went away): reopening",
                    f"microphone (default) delivering again after {said[-1].split()[-2]} s"]  # fmt: skip


def test_backoff_doubles_to_its_limit_and_resets():
    backoff = Backoff(2.0)
    assert [backoff.next() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    backoff.reset()
    assert backoff.next() == 0.25


def test_camera_forms_share_one_path():
    assert camera_target("0") == 0 and camera_target("/dev/video2") == "/dev/video2"
    assert camera_target("http://phone:8080/video") == "http://phone:8080/video"
    assert is_url("rtsp://cam/stream") and not is_url("/dev/video0") and not is_url("2")
    assert camera_name("rtsp://admin:s3cret@cam:554/live") == "camera rtsp://admin:***@cam:554/live"
    assert camera_name(0) == "camera 0"


class ScriptedMic:
    """The test calls the callback itself, at stream times it sets, with PortAudio's capture time (age)."""

    def __init__(self, on_audio):
        self.on_audio = on_audio

    def close(self):
        pass


def _scripted_microphone():
    mics: list[ScriptedMic] = []
    source = DeviceSource(camera=None, microphone="",
                          open_microphone=lambda d, r, b, cb: mics.append(ScriptedMic(cb)) or mics[-1])  # fmt: skip
    source.start()
    clock = [0.0]
    source.now = lambda: clock[0]
    sent = [0]

    def deliver(at: float, age_s: float | None, lost_s: float = 0.0) -> AudioBlock | None:
        """One 0.1-s block arriving at ``at`` (stream time), captured ``age_s`` before; ``lost_s`` of samples
        before it never came (the sound server skipped them)."""
        sent[0] += int(round(lost_s * 16000))
        clock[0] = at
        mics[0].on_audio(np.arange(sent[0], sent[0] + 1600, dtype=np.float32), age_s)
        sent[0] += 1600
        blocks = [i for i in drain_now(source) if isinstance(i, AudioBlock)]
        return blocks[-1] if blocks else None

    return source, deliver


def drain_now(source: DeviceSource) -> list:
    items = []
    while not source._queue.empty():
        items.append(source._queue.get_nowait())
    return items


def test_samples_lost_without_a_stall_leave_a_gap_where_they_were():
    """A sound server that skips 0.15 s of buffered audio (under the 0.25-s stall rule): back to back, every
    later block would sit 0.15 s early against the camera for the rest of the session."""
    source, deliver = _scripted_microphone()
    for k in range(10):
        deliver(0.2 + 0.1 * k, 0.1)  # captured at 0.1 + 0.1 k
    blocks = [deliver(1.2 + 0.15 + 0.1 * k, 0.1, lost_s=0.15 if k == 0 else 0.0) for k in range(12)]
    captured = [1.1 + 0.15 + 0.1 * k for k in range(12)]
    assert abs(blocks[0].t_s - 1.1) < 1e-6, "first back to back (one block could be jitter)"
    assert all(abs(b.t_s - c) < 0.002 for b, c in zip(blocks[-2:], captured[-2:], strict=True)), "then its capture time"
    assert source.drift_corrections == 1 and source.skipped_s == 0.0
    source.close()


def test_a_block_placed_too_late_comes_back_to_its_capture_time_skipping_what_has_no_room():
    """PulseAudio reports a stale capture time while it reconfigures an idle sink: the first block is anchored
    0.12 s late. Once the capture times say so for a second, the placement moves back, and the samples that
    have no room are skipped and counted, not laid over the ones before."""
    source, deliver = _scripted_microphone()
    first = deliver(2.0, 0.1)  # anchored at 1.9; really captured at 1.78
    blocks = [deliver(2.1 + 0.1 * k, 0.22) for k in range(12)]
    assert first.t_s == 1.9 and blocks[0].t_s == pytest.approx(2.0)
    assert source.drift_corrections == 1 and source.skipped_s == pytest.approx(0.12)
    fixed = blocks[-1]
    assert fixed.t_s == pytest.approx(2.1 + 0.1 * 11 - 0.22, abs=0.002) and len(fixed.samples) == 1600
    placed = [b for b in blocks if b is not None]
    ends = [b.t_s + len(b.samples) / 16000 for b in placed]
    assert all(nxt.t_s >= end - 1e-9 for nxt, end in zip(placed[1:], ends, strict=False)), "never laid over"
    assert source.outage_notes() == ["microphone (default) drifted from its capture clock: placed on it again 1 "
                                     "time; 0.12 s of audio had no room and was skipped"]  # fmt: skip
    # a recording keeps the times the session used (a replay must see the same windows)
    recording = RecordingSource(source, SimpleNamespace(put=lambda item: None))
    assert all(recording._place(b).t_s == b.t_s for b in placed)
    source.close()


def test_without_capture_times_blocks_in_pairs_stay_back_to_back():
    """Arrival times are no clock to follow (a host buffer of two blocks hands them over at once, the first
    one 0.1 s late): no drift correction without the device's capture time."""
    source, deliver = _scripted_microphone()
    placed = [deliver(0.2 * k + 0.2, None) for k in range(20) for _ in range(2)]
    assert [round(b.t_s, 3) for b in placed] == [round(0.1 + 0.1 * k, 3) for k in range(40)]
    assert source.drift_corrections == 0
    source.close()
