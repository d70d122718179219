"""`merclip doctor`, devices before models, `merclip-live --list-devices`: all with faked devices and network."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from merclip.stream import bundles, device_source, devices, doctor, weights
from merclip.stream.devices import Camera, Microphone

from merclip.cli import live_main, main
from merclip.errors import MerClipError

LIVE = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home (no bundle cache, no Hugging Face cache), no ./config.toml, no network."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(weights, "online", lambda timeout_s=1.5: (False, "huggingface.co unreachable"))
    return home


def no_devices(monkeypatch, portaudio: bool = True):
    monkeypatch.setattr(devices, "list_cameras", lambda: [])
    monkeypatch.setattr(devices, "list_microphones", lambda: ([], "" if portaudio else devices.PORTAUDIO_FIX))


def _no_camera(*args):
    raise MerClipError("cannot open camera 0 (is it connected and free?)")  # as device_source.opencv_camera says it


def _no_mic(*args):
    raise MerClipError("no microphone (default): Error querying device -1")


def _forbid_export(cfg, folder):
    raise AssertionError("no export may start")


class _Mic:
    """A microphone that calls back with 0.1-s blocks from its own thread, as PortAudio does."""

    def __init__(self, device, rate, block_s, on_audio):
        import threading

        import numpy as np

        self.stop = threading.Event()

        def run():
            while not self.stop.wait(block_s):
                on_audio(np.zeros(int(rate * block_s), np.float32), 0.02)

        threading.Thread(target=run, daemon=True).start()

    def close(self):
        self.stop.set()


class _Camera:
    def read(self):
        import numpy as np

        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self):
        pass


# ---- merclip doctor --------------------------------------------------------------------------------------------
def test_doctor_here_no_devices_no_gpu_offline_exits_1_with_fixes(home, monkeypatch, capsys):
    no_devices(monkeypatch, portaudio=False)
    monkeypatch.setattr(doctor, "available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(doctor, "gpu_name", lambda: "")
    started = time.monotonic()
    assert main(["doctor"]) == 1
    assert time.monotonic() - started < 5
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line[:1] in "✓✗"]
    assert len(lines) == 11
    assert "✓ telemetry     off: onnxruntime" in out  # merclip keeps the runtimes from reporting usage
    assert "✓ serve         [serve] 127.0.0.1:8000: plain HTTP, no token" in out  # loopback: fine as it is
    assert "✗ cameras" in out and "✗ microphones" in out and "✗ model" in out
    assert "apt-get install libportaudio2" in out  # PortAudio missing is named with its system package
    assert "would run on CPU" in out
    assert "not ready" in out.splitlines()[-1]

    assert main(["doctor", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ready"] is False
    by_name = {c["name"]: c for c in report["checks"]}
    assert not by_name["cameras"]["ok"] and by_name["cameras"]["fix"]
    assert by_name["config"]["ok"]


def test_doctor_with_devices_and_a_gpu_exits_0(home, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(devices, "list_cameras", lambda: [Camera(0, 1280, 720, 30.0)])
    monkeypatch.setattr(devices, "list_microphones", lambda: ([Microphone(3, "USB mic", 1, 48000.0, True)], ""))
    monkeypatch.setattr(device_source, "sounddevice_microphone", _Mic)
    monkeypatch.setattr(doctor, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(doctor, "gpu_name", lambda: "NVIDIA H100 80GB HBM3")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    config = tmp_path / "c.toml"
    config.write_text(f'[runtime]\nbundle = "{bundle}"\n[log]\npath = "{tmp_path / "logs"}"\n')
    assert main(["doctor", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "✗" not in out.split("ready")[0].replace("✗ speech", "")
    assert "camera 0: 1280x720 @ 30 fps" in out and "USB mic" in out
    # the microphone a session would use is heard and measured
    assert re.search(r"first audio after 0\.\d\d s, a block every 0\.1\d s, 20 ms old on arrival", out), out
    assert "would run on cuda on NVIDIA H100 80GB HBM3" in out


def test_doctor_says_when_serve_would_listen_open_or_is_insecure(home, monkeypatch, capsys, tmp_path):
    no_devices(monkeypatch)
    monkeypatch.delenv("MERCLIP_TOKEN", raising=False)
    config = tmp_path / "c.toml"
    config.write_text('[serve]\nhost = "0.0.0.0"\n')
    main(["doctor", "--config", str(config), "--json"])
    serve = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}["serve"]
    assert not serve["ok"] and not serve["blocking"] and "`merclip serve` refuses this" in serve["detail"]
    assert "serve.tls_cert, serve.tls_key and serve.token_file" in serve["fix"]
    config.write_text('[serve]\nhost = "0.0.0.0"\ninsecure = true\n')
    main(["doctor", "--config", str(config), "--json"])
    serve = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}["serve"]
    assert (
        not serve["ok"]
        and "insecure = true: the faces and voices sent would cross the network in clear" in (serve["detail"])
    )


def test_doctor_names_a_service_running_here_with_insecure(home, monkeypatch, capsys):
    from merclip.stream.access import ServerSecurity, announce, running_services

    from merclip.cache_dir import cache_path

    no_devices(monkeypatch)
    folder = cache_path(None, "serve")  # ~/.cache/merclip/serve in the test's home
    path = announce(folder, "http://vm:8000/merclip", "0.0.0.0", ServerSecurity(insecure=True), exposed=True)
    (folder / "999999999.json").write_text(json.dumps({"pid": 999999999, "insecure": True, "url": "gone"}))
    main(["doctor", "--json"])
    serve = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}["serve"]
    assert not serve["ok"] and f"(pid {os.getpid()}) runs with --insecure at http://vm:8000/merclip" in serve["detail"]
    assert "without TLS and a token" in serve["detail"]
    assert [s["pid"] for s in running_services(folder)] == [os.getpid()]  # a stopped one's file is gone
    path.unlink()
    main(["doctor", "--json"])
    assert {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}["serve"]["ok"]


def test_doctor_reports_a_broken_config(home, monkeypatch, capsys, tmp_path):
    no_devices(monkeypatch)
    config = tmp_path / "bad.toml"
    config.write_text("[capture\n")
    assert main(["doctor", "--config", str(config), "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert not checks["config"]["ok"] and "not valid TOML" in checks["config"]["detail"]


def test_doctor_on_this_machine_parses_and_is_quick(tmp_path):
    """The real checks, no fakes: whatever this machine has, --json parses and the doctor answers in seconds."""
    env = {**os.environ, "HOME": str(tmp_path)}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "merclip.cli", "doctor", "--json"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=60)  # fmt: skip
    assert time.monotonic() - started < 20
    report = json.loads(run.stdout)
    assert run.returncode == (0 if report["ready"] else 1)
    assert {c["name"] for c in report["checks"]} >= {"cameras", "microphones", "runtime", "model", "speech"}


# ---- devices before models -------------------------------------------------------------------------------------
def test_missing_camera_ends_in_2s_naming_devices_before_any_export(home, monkeypatch, capsys):
    monkeypatch.setattr(device_source, "opencv_camera", _no_camera)
    monkeypatch.setattr(device_source, "sounddevice_microphone", _no_mic)
    monkeypatch.setattr(devices, "list_cameras", lambda: [Camera(2, 640, 480, 30.0)])
    monkeypatch.setattr(devices, "list_microphones", lambda: ([Microphone(1, "USB mic", 1, 48000.0, True)], ""))
    monkeypatch.setattr(bundles, "export_in_subprocess", _forbid_export)
    started = time.monotonic()
    assert live_main(["--camera", "0", "--no-ui"]) == 2
    assert time.monotonic() - started < 2
    err = capsys.readouterr().err
    assert "cannot open camera 0" in err and "cameras here: 2" in err and "1 (USB mic)" in err
    assert "exporting" not in err
    assert not (home / ".cache" / "merclip" / "bundles").exists()


def test_missing_microphone_with_allow_missing_goes_on_and_says_so(home, monkeypatch, tiny_bundle, capsys):
    monkeypatch.setattr(device_source, "opencv_camera", lambda *a: _Camera())
    monkeypatch.setattr(device_source, "sounddevice_microphone", _no_mic)
    code = live_main(["--camera", "0", "--allow-missing", "--bundle", str(tiny_bundle), "--no-ui", "--no-asr",
                      "--duration", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.startswith("missing: no microphone")


def test_camera_that_opens_but_never_delivers_is_refused(home, monkeypatch, capsys):
    class Dark:
        def read(self):
            return False, None

        def release(self):
            pass

    monkeypatch.setattr(device_source, "opencv_camera", lambda *a: Dark())
    monkeypatch.setattr(devices, "FIRST_FRAME_S", 0.2)
    no_devices(monkeypatch)
    monkeypatch.setattr(bundles, "export_in_subprocess", _forbid_export)
    assert live_main(["--camera", "0", "--no-ui", "--allow-missing"]) == 2  # nothing works: --allow-missing too
    err = capsys.readouterr().err
    assert "delivered no frame" in err and "cameras here: none" in err


def test_offline_without_cached_weights_fails_in_seconds_without_export(home, monkeypatch, capsys):
    monkeypatch.setattr(bundles, "export_in_subprocess", _forbid_export)
    started = time.monotonic()
    assert live_main(["--source", "synthetic", "--no-ui", "--no-asr"]) == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "needs its pretrained weights, which could not be downloaded" in err


def test_cached_weights_go_on_to_the_export(home, monkeypatch):
    snap = home / "hf" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    called = []

    def fake_export(cfg, folder):
        called.append(folder)
        raise MerClipError("export stopped by the test")

    monkeypatch.setattr(bundles, "export_in_subprocess", fake_export)
    assert live_main(["--source", "synthetic", "--no-ui", "--no-asr"]) == 2
    assert called, "cached weights: the export runs (offline is fine)"


def test_list_devices(home, monkeypatch, capsys):
    monkeypatch.setattr(devices, "list_cameras", lambda: [Camera(0, 640, 480, 15.0)])
    monkeypatch.setattr(devices, "list_microphones", lambda: ([], devices.PORTAUDIO_FIX))
    assert live_main(["--list-devices"]) == 0
    out = capsys.readouterr().out
    assert "camera 0: 640x480 @ 15 fps" in out and "libportaudio2" in out


def test_no_camera_here_real_process(tmp_path):
    """As a user runs it on this machine (no camera, empty cache): exit 2 in seconds, no export started."""
    if devices.list_cameras():
        pytest.skip("this machine has a camera")
    env = {**os.environ, "HOME": str(tmp_path)}
    started = time.monotonic()
    run = subprocess.run([*LIVE, "--camera", "0", "--no-ui"], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=60)  # fmt: skip
    wall = time.monotonic() - started
    assert run.returncode == 2, run.stderr
    assert "cameras here:" in run.stderr and "exporting" not in run.stderr
    assert not (tmp_path / ".cache" / "merclip" / "bundles").exists()
    assert wall < 10  # interpreter start included; the check itself is well under 2 s
