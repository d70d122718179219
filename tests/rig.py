"""Real device servers for the tests: a PulseAudio daemon whose default source is a virtual microphone, and an
HTTP MJPEG camera. Not fakes: `merclip-live` opens them through PortAudio (ALSA's pulse plugin) and OpenCV's
FFmpeg backend exactly as it opens a desktop microphone and a phone-as-webcam app.

- ``PulseServer``: ``pulseaudio`` as a user daemon on a private socket (a desktop's own sound server, if
  any, is never touched), with a null sink and, on its monitor, the default source ``merclip_mic``: what is
  played into the sink (``play``, ``Clapper``) is what the microphone hears.
- ``MjpegServer``: ``multipart/x-mixed-replace`` JPEG frames at a fixed rate on the wall clock, as an IP
  camera sends them; ``stop()``/``start()`` drop and restore the stream on the same port, ``flash()`` shows
  white frames at a chosen instant (the picture of a clapperboard).
"""

from __future__ import annotations

import array
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import termios
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

SINK = "merclip_speaker"
# The microphone: a source of its own on the sink's monitor (a monitor cannot be suspended, a source can)
SOURCE = "merclip_mic"
# ``.ci/run`` sets this: there, a server that cannot start fails its tests (locally they are skipped, saying why)
REQUIRED_ENV = "MERCLIP_REAL_DEVICES"


def _die_with_parent() -> None:
    """In the daemon's child process: killed when the test process dies, even by SIGKILL (a CI timeout), so
    no sound server outlives its tests."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def required() -> bool:
    return os.environ.get(REQUIRED_ENV, "") == "required"


class PulseServer:
    """A private PulseAudio daemon. ``env`` is what a client needs to use it (``PULSE_SERVER``)."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder or tempfile.mkdtemp(prefix="merclip-pulse-"))
        self.socket = self.folder / "native"
        self.env = {**os.environ, "PULSE_SERVER": f"unix:{self.socket}"}
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def missing() -> str:
        """Why no server can start here ("" when it can)."""
        need = [tool for tool in ("pulseaudio", "pactl", "pacat", "paplay") if shutil.which(tool) is None]
        if need:
            return f"{', '.join(need)} not installed (apt-get install pulseaudio pulseaudio-utils; .ci/run does)"
        return ""

    def start(self, timeout_s: float = 10.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        cmd = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--system=no",
               "--disallow-module-loading=no", f"--log-target=file:{self.folder / 'pulse.log'}",
               "-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
               "-L", f"module-null-sink sink_name={SINK} sink_properties=device.description=merclip-speaker",
               "-L", f"module-remap-source master={SINK}.monitor source_name={SOURCE} "
                     "source_properties=device.description=merclip-virtual-mic"]  # fmt: skip
        # its own runtime folder and home: no desktop session's files are read or written
        daemon_env = {**self.env, "XDG_RUNTIME_DIR": str(self.folder), "HOME": str(self.folder)}
        self.proc = subprocess.Popen(cmd, env=daemon_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.pactl("info", check=False).returncode == 0:
                self.pactl("set-default-sink", SINK)
                self.pactl("set-default-source", SOURCE)
                return
            time.sleep(0.1)
        logged = self.folder / "pulse.log"
        log = logged.read_text(errors="replace")[-800:] if logged.exists() else ""
        self.stop()
        raise RuntimeError(f"PulseAudio did not start: {log}")

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10,
                              check=check)  # fmt: skip

    def suspend(self, on: bool) -> None:
        """Suspend (or resume) the virtual microphone, as a desktop does when a device is taken away."""
        self.pactl("suspend-source", SOURCE, "1" if on else "0")

    def play(self, path: Path) -> subprocess.Popen:
        """Play a sound file into the microphone (``paplay``); returns the running player."""
        return subprocess.Popen(["paplay", "--device", SINK, str(path)], env=self.env)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)


class Clapper:
    """Raw 16-kHz audio written into the microphone on the wall clock (``pacat`` at 20 ms of latency): silence,
    and a 10-ms click wherever ``click()`` asks. Silence is only written while ``pacat`` keeps up (its pipe
    holds under two chunks): what piles up while the stream connects (up to 2 s on an idle sink) would delay
    every click by as much. So a click is heard within ~20 ms of the instant it was asked for (measured with
    ``parec`` at 10 ms of latency: 12-18 ms)."""

    RATE = 16000
    CHUNK = 160  # 10 ms

    def __init__(self, pulse: PulseServer, latency_ms: int = 20, noise: float = 0.0):
        self.proc = subprocess.Popen(["pacat", "--playback", "--raw", "--format=s16le", f"--rate={self.RATE}",
                                      "--channels=1", f"--latency-msec={latency_ms}", f"--device={SINK}"],
                                     stdin=subprocess.PIPE, env=pulse.env, bufsize=0)  # fmt: skip
        self.noise = noise  # amplitude of a quiet hiss under everything (a room is never digital silence)
        self._rng = np.random.default_rng(0)
        self._clicks: list[float] = []
        self.played: list[float] = []  # time.monotonic() when each click was written
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="clapper")
        self._thread.start()

    def click(self, at: float) -> None:
        """Click at ``time.monotonic()`` ``at``."""
        with self._lock:
            self._clicks.append(at)

    def _run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = start + n * self.CHUNK / self.RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            n += 1
            chunk = (self.noise * 32767 * self._rng.standard_normal(self.CHUNK)).astype(np.int16)
            click = False
            with self._lock:
                if self._clicks and self._clicks[0] <= time.monotonic():
                    self._clicks.pop(0)
                    chunk[:], click = 20000, True
            if not click and self._queued() >= 2 * chunk.nbytes:
                continue  # pacat is not reading yet: no backlog of silence
            if click:
                self.played.append(time.monotonic())
            try:
                self.proc.stdin.write(chunk.tobytes())
            except (BrokenPipeError, OSError):
                return

    def _queued(self) -> int:
        """Bytes written to pacat's stdin that it has not read yet."""
        count = array.array("i", [0])
        fcntl.ioctl(self.proc.stdin.fileno(), termios.FIONREAD, count)
        return count[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.terminate()
        self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg_frames(video: Path, fps: float, seconds: float | None = None, width: int = 320) -> list[bytes]:
    """A video's frames at ``fps``, scaled to ``width`` and JPEG-encoded (what an IP camera sends)."""
    import av
    import cv2

    frames: list[bytes] = []
    next_t = 0.0
    with av.open(str(video)) as box:
        for frame in box.decode(video=0):
            t = float(frame.time or 0.0)
            if seconds is not None and t >= seconds:
                break
            if t + 1e-6 < next_t:
                continue
            next_t += 1.0 / fps
            bgr = frame.to_ndarray(format="bgr24")
            h, w = bgr.shape[:2]
            bgr = cv2.resize(bgr, (width, int(round(h * width / w))), interpolation=cv2.INTER_AREA)
            frames.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    return frames


def white_jpeg(like: bytes) -> bytes:
    import cv2

    shape = cv2.imdecode(np.frombuffer(like, np.uint8), cv2.IMREAD_COLOR).shape
    return cv2.imencode(".jpg", np.full(shape, 255, np.uint8))[1].tobytes()


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True  # restarted on the same port at once, as a camera that comes back
    daemon_threads = True


class MjpegServer:
    """An HTTP MJPEG camera at ``url``: every client gets the frame of the moment, ``fps`` times a second,
    the frames looping. ``stop()`` closes the listening socket and every stream (as a camera that is
    switched off or leaves the Wi-Fi); ``start()`` serves again on the same port."""

    BOUNDARY = "merclipframe"

    def __init__(self, frames: list[bytes], fps: float = 15.0, port: int | None = None):
        self.frames, self.fps = frames, fps
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/video.mjpg"
        self.t0 = time.monotonic()
        self._white = white_jpeg(frames[0])
        self._flash: tuple[float, float] | None = None
        self.flashed: list[float] = []  # time.monotonic() when each white frame was sent
        self._httpd: ThreadingHTTPServer | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._serving = threading.Event()

    def flash(self, at: float, seconds: float) -> None:
        """White frames for ``seconds`` from ``time.monotonic()`` ``at``."""
        self._flash = (at, at + seconds)

    def _frame(self, k: int) -> bytes:
        due = self.t0 + k / self.fps
        if self._flash is not None and self._flash[0] <= due < self._flash[1]:
            return self._white
        return self.frames[k % len(self.frames)]

    def start(self) -> MjpegServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the tests read the session, not the server
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={server.BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                with server._lock:
                    server._conns.add(self.connection)
                k = int((time.monotonic() - server.t0) * server.fps) + 1
                try:
                    while server._serving.is_set():
                        delay = server.t0 + k / server.fps - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        elif delay < -1.0 / server.fps:  # the client was slow: skip to now, as a camera does
                            k = int((time.monotonic() - server.t0) * server.fps)
                        jpeg = server._frame(k)
                        head = (f"--{server.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                f"Content-Length: {len(jpeg)}\r\n\r\n").encode()  # fmt: skip
                        self.wfile.write(head + jpeg + b"\r\n")
                        if jpeg is server._white:
                            server.flashed.append(time.monotonic())
                        k += 1
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass
                finally:
                    with server._lock:
                        server._conns.discard(self.connection)

        self._httpd = _Server(("127.0.0.1", self.port), Handler)
        self._serving.set()
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._serving.clear()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()
