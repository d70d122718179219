"""Nothing leaves the user's machine: the runtimes the monitor loads collect usage data unless told not to.

Each case runs the library's own code in a fresh process with an empty home: once bare, to show what the
library does by itself (so the guard is needed and the check can fail), once through merclip.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# The libraries skip their telemetry on CI machines they recognise; the checks run as on a user's machine.
CI_MARKERS = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "CIRCLECI", "APPVEYOR", "BUILDKITE",
              "CODEBUILD_BUILD_ID", "TF_BUILD", "TRAVIS", "TEAMCITY_VERSION", "ORT_RUNNING_UNIT_TESTS")  # fmt: skip
TELEMETRY_VARIABLES = ("ORT_DISABLE_TELEMETRY",)


def _run(code: str, home) -> str:
    env = {k: v for k, v in os.environ.items() if k not in CI_MARKERS + TELEMETRY_VARIABLES}
    home.mkdir()
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "HOME": str(home)})
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip()


def _read_one_window(bundle, load_args: str) -> str:
    """Code that loads ``bundle`` as the monitor does, reads one window and prints the backend it ran on."""
    return (
        "import numpy as np\n"
        "from merclip.export.runtime import Bundle\n"
        f"b = Bundle.load({str(bundle)!r}, {load_args})\n"
        "b.predict(np.zeros((2, 64, 64, 3), np.uint8), np.zeros(b.window_samples, np.float32), 'hi there')\n"
        "print(b.plan.backend)\n"
    )


def _files(home) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_onnxruntime_keeps_no_device_id_and_sends_nothing_when_the_monitor_runs_a_bundle(tiny_bundle, tmp_path):
    """onnxruntime 1.2x+ writes a device id under ~/.cache/Microsoft and uploads process and session events
    (1DS) when imported, unless ORT_DISABLE_TELEMETRY is set before it is."""
    _run("import onnxruntime", tmp_path / "bare")
    assert any("deviceid" in f for f in _files(tmp_path / "bare"))  # what plain onnxruntime does
    assert _run(_read_one_window(tiny_bundle, "providers='cpu'"), tmp_path / "ours") == "onnxruntime"
    assert _files(tmp_path / "ours") == []


def test_openvino_is_loaded_without_its_usage_telemetry(tiny_bundle, tmp_path):
    """Importing openvino imports its model converter, which writes ~/intel/openvino_ga_cid and sends an
    "import" event to Google Analytics unless the user ran OpenVINO's opt-out."""
    pytest.importorskip("openvino")
    _run("import openvino", tmp_path / "bare")
    assert "intel/openvino_ga_cid" in _files(tmp_path / "bare")
    code = _read_one_window(tiny_bundle, "providers='openvino', precision='fp32'")
    code += "from openvino.tools.ovc import telemetry_utils\nprint(telemetry_utils.tm.__name__)\n"
    assert _run(code, tmp_path / "ours").split() == ["openvino", "openvino.tools.ovc.telemetry_stub"]
    assert _files(tmp_path / "ours") == []


def test_a_user_who_sets_the_variable_keeps_their_choice(tmp_path):
    code = "import os, merclip\nprint(os.environ['ORT_DISABLE_TELEMETRY'])\n"
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "0"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.strip() == "0"


def test_doctor_says_whether_the_runtimes_report_usage(monkeypatch):
    from merclip.stream.doctor import check_telemetry

    from merclip.config import Config

    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "1")
    check = check_telemetry(Config())
    assert check.ok and check.detail.startswith("off: onnxruntime")
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "0")
    check = check_telemetry(Config())
    assert not check.ok and not check.blocking
    assert "ORT_DISABLE_TELEMETRY=0" in check.detail and check.fix == "unset ORT_DISABLE_TELEMETRY"
