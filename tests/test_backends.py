"""Which runtime and precision a bundle runs at, on CPUs with and without bf16/int8 units (faked capability
lists), the agreement gate that keeps a precision from being chosen unmeasured or inaccurate, and the
fallbacks when OpenVINO is absent, cannot be imported, or cannot compile a graph."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from merclip.export import agreement, backends, runtime
from merclip.export.agreement import Agreement, gate, read_records, write_cached
from merclip.export.backends import choose_plan
from merclip.export.cpu import CpuInfo, parse_cpuinfo, this_cpu
from merclip.export.runtime import Bundle

from merclip.cli import main
from merclip.errors import MerClipError

AMX_FLAGS = "avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8"
SAPPHIRE_RAPIDS = CpuInfo("Intel Xeon (AMX)", frozenset(AMX_FLAGS.split()))
ZEN4 = CpuInfo("AMD EPYC (Zen 4)", frozenset("avx2 avx512f avx512_vnni avx512_bf16".split()))
CASCADE_LAKE = CpuInfo("Intel Xeon (VNNI)", frozenset("avx2 avx512f avx512_vnni".split()))
HASWELL = CpuInfo("Intel Xeon (AVX2)", frozenset("avx2 fma".split()))
CPU_ONLY = {"CPUExecutionProvider"}
GOOD = {"top_emotion_agreement": 1.0, "mean_abs_dp": 0.002}
BAD = {"top_emotion_agreement": 0.9, "mean_abs_dp": 0.002}


def run_at(chosen) -> tuple[str, str]:
    return chosen.backend, chosen.precision


def plan(cpu, bundle="fp32", providers="auto", precision="auto", openvino="2026.4.1", records=None, eps=CPU_ONLY):
    return choose_plan(providers, precision, bundle, cpu, eps, openvino, records if records is not None else {})


# ---- the choice -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cpu, unit", [(SAPPHIRE_RAPIDS, "AMX"), (ZEN4, "AVX-512-BF16")])
def test_bf16_on_openvino_where_the_cpu_has_bf16_units_and_it_agrees(cpu, unit):
    chosen = plan(cpu, records={"bf16": GOOD})
    assert (chosen.backend, chosen.precision, chosen.why) == ("openvino", "bf16", "")
    assert chosen.name == "OpenVINO" and cpu.bf16_unit == unit


def test_a_cpu_without_bf16_units_stays_on_onnxruntime_fp32_without_a_complaint():
    for cpu in (CASCADE_LAKE, HASWELL):
        chosen = plan(cpu, records={"bf16": GOOD})
        assert (chosen.backend, chosen.precision, chosen.why) == ("onnxruntime", "fp32", "")
        assert chosen.name == "onnxruntime CPU"


def test_the_gate_keeps_bf16_off_unmeasured_or_below_the_thresholds():
    unmeasured = plan(SAPPHIRE_RAPIDS)
    assert unmeasured.precision == "fp32" and "not measured" in unmeasured.why
    failing = plan(SAPPHIRE_RAPIDS, records={"bf16": BAD})
    assert failing.precision == "fp32" and "top-emotion agreement with fp32 0.9000 < 0.98" in failing.why
    drifting = plan(SAPPHIRE_RAPIDS, records={"bf16": {"top_emotion_agreement": 1.0, "mean_abs_dp": 0.02}})
    assert drifting.precision == "fp32" and "mean |dp|" in drifting.why
    assert gate({"top_emotion_agreement": 0.98, "mean_abs_dp": 0.01}) == (True, "")  # the thresholds themselves pass
    assert not gate({"top_emotion_agreement": "nan", "mean_abs_dp": 0.0})[0]
    assert not gate({"mean_abs_dp": 0.0})[0]


def test_without_openvino_a_bf16_cpu_is_told_how_to_get_it():
    chosen = plan(SAPPHIRE_RAPIDS, openvino=None, records={"bf16": GOOD})
    assert chosen.backend == "onnxruntime" and "pip install 'merclip-live[openvino]'" in chosen.why
    with pytest.raises(MerClipError, match="OpenVINO is not installed"):
        plan(SAPPHIRE_RAPIDS, providers="openvino", openvino=None)


def test_a_gpu_keeps_its_place_first_even_on_an_amx_cpu():
    chosen = plan(SAPPHIRE_RAPIDS, records={"bf16": GOOD}, eps={"CUDAExecutionProvider", "CPUExecutionProvider"})
    assert chosen.backend == "onnxruntime" and chosen.providers[0] == "CUDAExecutionProvider"
    assert chosen.name == "onnxruntime CUDA"


def test_an_int8_bundle_runs_int8_on_onnxruntime():
    chosen = plan(CASCADE_LAKE, bundle="int8")
    assert (chosen.backend, chosen.precision) == ("onnxruntime", "int8")
    assert plan(SAPPHIRE_RAPIDS, bundle="int8", records={"bf16": GOOD}).precision == "int8"


def test_every_choice_can_be_forced_and_an_impossible_one_is_refused_in_one_line():
    assert run_at(plan(HASWELL, providers="openvino")) == ("openvino", "fp32")
    assert run_at(plan(SAPPHIRE_RAPIDS, providers="openvino", precision="fp32")) == ("openvino", "fp32")
    forced = plan(SAPPHIRE_RAPIDS, precision="bf16")  # unmeasured, but asked for: run, and say so
    assert run_at(forced) == ("openvino", "bf16") and "forced although" in forced.why
    assert run_at(plan(SAPPHIRE_RAPIDS, providers="cpu", records={"bf16": GOOD})) == ("onnxruntime", "fp32")
    assert run_at(plan(SAPPHIRE_RAPIDS, precision="fp32", records={"bf16": GOOD})) == ("onnxruntime", "fp32")
    refusals = [
        (dict(cpu=HASWELL, precision="bf16"), "no bf16 units"),
        (dict(cpu=SAPPHIRE_RAPIDS, precision="bf16", providers="cpu"), "bf16 runs on OpenVINO"),
        (dict(cpu=CASCADE_LAKE, precision="int8"), "int8 needs a bundle exported with"),
        (dict(cpu=SAPPHIRE_RAPIDS, bundle="int8", precision="bf16"), "holds int8 graphs"),
        (dict(cpu=SAPPHIRE_RAPIDS, bundle="int8", providers="openvino"), "OpenVINO runs fp32 bundles"),
        (dict(cpu=HASWELL, providers="cuda"), "provider cuda is not available"),
        (dict(cpu=HASWELL, providers="npu"), "providers must be one of"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(MerClipError, match=message):
            plan(**kwargs)


def test_cpu_flags_come_from_proc_cpuinfo_or_the_environment(monkeypatch):
    cpu = parse_cpuinfo("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\n"
                        "processor\t: 1\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n")  # fmt: skip
    assert cpu.model == "Some Xeon" and cpu.bf16 and cpu.isa == ["amx_bf16", "avx2"]
    assert "Some Xeon (amx_bf16 avx2)" == cpu.describe()
    monkeypatch.setenv("MERCLIP_CPU_FLAGS", "avx512_bf16 avx2")
    assert this_cpu().bf16 and this_cpu().bf16_unit == "AVX-512-BF16"
    monkeypatch.setenv("MERCLIP_CPU_FLAGS", "")
    assert not this_cpu().bf16 and this_cpu().isa == []


# ---- loading: the plan carried out, and its fallbacks ---------------------------------------------------------
def _predict(bundle):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    return bundle.predict(frames, (rng.standard_normal(bundle.window_samples) * 0.1).astype(np.float32), "so glad")


def test_an_absent_openvino_leaves_the_bundle_on_onnxruntime_fp32(tiny_bundle, monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "openvino_version", lambda: None)
    bundle = Bundle.load(tiny_bundle, cpu=SAPPHIRE_RAPIDS, cache_dir=tmp_path)
    assert bundle.plan.backend == "onnxruntime" and "merclip-live[openvino]" in bundle.runtime_line()
    assert bundle.notices == [] and _predict(bundle).emotion.shape == (1, 6)


def test_openvino_that_cannot_be_imported_is_one_notice_and_the_session_goes_on(tiny_bundle, monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "openvino_version", lambda: "2026.4.1")
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    reference = _predict(Bundle.load(tiny_bundle, providers="cpu"))
    bundle = Bundle.load(tiny_bundle, providers="openvino", precision="bf16", cpu=SAPPHIRE_RAPIDS)
    assert len(bundle.notices) == 1 and "OpenVINO is not usable here" in bundle.notices[0]
    assert (bundle.plan.backend, bundle.plan.precision) == ("onnxruntime", "fp32")
    assert all(line.endswith("onnxruntime CPU fp32") for line in bundle.provider_report)
    np.testing.assert_allclose(_predict(bundle).emotion, reference.emotion, atol=1e-6)  # fp32, as before


class _FakeCompiler:
    """OpenVINO stand-in: every graph "compiles" (to an onnxruntime session) except the fusion graph."""

    def __init__(self, precision, threads):
        import onnxruntime as ort

        self.ort = ort

    def compile(self, path):
        from merclip.export.ov_session import OpenVinoError

        if path.name == "fuse.onnx":
            raise OpenVinoError("cannot compile fuse.onnx: Check 'lhs_pass' failed")
        return self.ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_a_graph_openvino_cannot_compile_runs_on_onnxruntime_with_one_notice(tiny_bundle, monkeypatch):
    from merclip.export import ov_session

    monkeypatch.setattr(runtime, "openvino_version", lambda: "2026.4.1")
    monkeypatch.setattr(ov_session, "OpenVinoCompiler", _FakeCompiler)
    bundle = Bundle.load(tiny_bundle, providers="openvino", precision="bf16", cpu=SAPPHIRE_RAPIDS)
    assert bundle.plan.backend == "openvino"
    assert len(bundle.notices) == 1 and "could not compile fuse (" in bundle.notices[0]
    report = dict(line.split(": ", 1) for line in bundle.provider_report)
    assert report["fuse"] == "onnxruntime CPU fp32" and report["vision"] == "OpenVINO bf16"
    assert "fuse: onnxruntime CPU fp32" in bundle.runtime_line()
    assert _predict(bundle).sentiment.shape == (1, 2)


# ---- the real OpenVINO (installed with the dev extras) ---------------------------------------------------------
def test_openvino_runs_the_bundle_and_reads_like_onnxruntime(tiny_bundle):
    pytest.importorskip("openvino")
    reference = Bundle.load(tiny_bundle, providers="cpu")
    for precision, tolerance in (("fp32", 1e-4), ("bf16", 0.1)):
        cpu = SAPPHIRE_RAPIDS if precision == "bf16" else HASWELL
        bundle = Bundle.load(tiny_bundle, providers="openvino", precision=precision, cpu=cpu)
        assert bundle.plan.backend == "openvino" and not any("onnxruntime" in r for r in bundle.provider_report)
        got, want = _predict(bundle), _predict(reference)
        np.testing.assert_allclose(got.emotion, want.emotion, atol=tolerance)
        np.testing.assert_allclose(got.sentiment, want.sentiment, atol=tolerance)
        texts = bundle.encode_text(["hello", "a longer sentence"])
        assert texts[0].shape[0] == 2 and texts[1].dtype == bool  # batches and boolean outputs come through


def test_an_openvino_bundle_is_warmed_up_at_load_with_a_whole_window(tiny_bundle, monkeypatch):
    pytest.importorskip("openvino")
    seen = []
    real_predict = Bundle.predict

    def predict(self, frames=None, audio=None, text=None):
        seen.append((self.plan.backend, len(frames or ()), None if audio is None else len(audio), bool(text)))
        return real_predict(self, frames, audio, text)

    monkeypatch.setattr(Bundle, "predict", predict)
    Bundle.load(tiny_bundle, providers="cpu")  # onnxruntime: nothing to prepare
    assert seen == []
    bundle = Bundle.load(tiny_bundle, providers="openvino", precision="bf16", cpu=SAPPHIRE_RAPIDS)
    assert seen == [("openvino", bundle.frames_per_window, bundle.window_samples, True)]


def test_the_first_load_measures_bf16_once_and_caches_it(tiny_bundle, monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    from merclip.export.manifest import read_manifest
    from merclip.stream.precision import check_at_first_load

    monkeypatch.setenv("MERCLIP_CPU_FLAGS", AMX_FLAGS)
    said: list[str] = []
    check_at_first_load(tiny_bundle, "auto", "auto", 0, str(tmp_path), said.append)
    assert said[0].startswith("checking bf16 against fp32 on the sample clip") and "agreement bf16" in said[1]
    record = read_records(read_manifest(tiny_bundle), tmp_path)["bf16"]
    assert record["readings"] >= 100 and 0 <= record["mean_abs_dp"] < 0.05  # 21 windows x their modality sets
    assert record["passed"] == gate(record)[0] and "amx_bf16" in record["measured_on"]
    said.clear()
    check_at_first_load(tiny_bundle, "auto", "auto", 0, str(tmp_path), said.append)  # cached: not measured again
    check_at_first_load(tiny_bundle, "cpu", "auto", 0, str(tmp_path / "other"), said.append)  # bf16 not possible
    assert said == []
    bundle = Bundle.load(tiny_bundle, cache_dir=tmp_path)
    assert bundle.plan.precision == ("bf16" if record["passed"] else "fp32")


def test_the_agreement_windows_are_cut_as_the_bundle_reads_a_stream():
    from merclip.model.reading import ReadingSetting
    from merclip.stream.precision import SAMPLE_TRANSCRIPT, sample_inputs

    own = sample_inputs(ReadingSetting("window", 2.0, 2.0, 4))
    overlapping = sample_inputs(ReadingSetting("utterance", 2.0, 1.0, 2))
    assert len(overlapping) > 1.5 * len(own)  # a window every second instead of every two
    assert {len(frames) for frames, _, _ in own if frames} == {4}
    assert {len(frames) for frames, _, _ in overlapping if frames} == {2}
    said = SAMPLE_TRANSCRIPT.split()
    own_words = [len(text.split()) for _, _, text in own if text]
    utterance = [len(text.split()) for _, _, text in overlapping if text]
    assert max(own_words) < len(said) // 2  # a window's own words: a few
    assert max(utterance) > len(said) // 2  # the utterance so far grows across the clip


def test_cached_records_are_per_bundle_and_a_damaged_one_is_ignored(tiny_bundle, tmp_path):
    from merclip.export.manifest import read_manifest

    manifest = read_manifest(tiny_bundle)
    write_cached(manifest, tmp_path, {"bf16": GOOD})
    assert read_records(manifest, tmp_path) == {"bf16": GOOD}
    other = json.loads(json.dumps(manifest))
    other["parts"]["vision"]["sha256"] = "0" * 64  # other graphs: not this bundle's record
    assert read_records(other, tmp_path) == {}
    agreement.cache_file(manifest, tmp_path).write_text("{not json")
    assert read_records(manifest, tmp_path) == {}


# ---- export: every precision against fp32 on the sample clip, in the manifest -----------------------------------
def test_export_writes_each_precisions_agreement_into_the_manifest(tmp_path):
    env = {**os.environ, "MERCLIP_CPU_FLAGS": "avx2"}
    run = subprocess.run([sys.executable, "-m", "merclip.cli", "export", "--onnx", "--model", "tiny", "--weights",
                          "random", "--out", str(tmp_path / "b")], capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "agreement fp32 (onnxruntime" in run.stderr and "bf16: not measured here (this CPU has no bf16" in run.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    fp32 = manifest["agreement"]["fp32"]
    assert fp32["reference"] == "torch fp32" and fp32["readings"] >= 100 and fp32["passed"]
    assert fp32["top_emotion_agreement"] == 1.0 and fp32["max_abs_dp"] < 1e-4
    assert "bf16" not in manifest["agreement"]


def test_an_int8_bundle_is_compared_with_torch_fp32(tiny_model, tmp_path):
    from merclip.export.cli import measure_at_export
    from merclip.export.onnx_export import ExportOptions, export_bundle
    from merclip.stream.precision import SAMPLE
    from rich.console import Console

    export_bundle(tiny_model, ExportOptions(out=tmp_path / "q", precision="int8"))
    bundle = Bundle.load(tmp_path / "q", providers="cpu")
    records = measure_at_export(tiny_model, tmp_path / "q", bundle, SAMPLE, Console(stderr=True))
    record = records["int8"]
    assert record["reference"] == "torch fp32" and record["backend"].startswith("onnxruntime")
    assert record["readings"] >= 100 and 0 < record["mean_abs_dp"] < 0.05 and record["passed"] == gate(record)[0]
    assert json.loads((tmp_path / "q" / "manifest.json").read_text())["agreement"] == records


def test_a_manifest_with_a_malformed_agreement_is_refused(tiny_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["agreement"] = {"bf16": [1, 2]}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MerClipError, match="agreement.bf16 must be an object"):
        Bundle.load(copy)


def test_agreement_lines_name_the_numbers_and_the_verdict():
    record = Agreement("bf16", "openvino 2026.4.1 bf16", "onnxruntime fp32", "the sample clip", 147, 0.966, 1.0,
                       0.0043, 0.1, "Intel Xeon (amx_bf16)")  # fmt: skip
    assert "FAILS (top-emotion agreement with fp32 0.9660 < 0.98)" in record.line()
    assert record.to_json()["passed"] is False and record.to_json()["min_top_emotion_agreement"] == 0.98


# ---- doctor ---------------------------------------------------------------------------------------------------
@pytest.fixture
def quiet_doctor(tmp_path, monkeypatch):
    from merclip.stream import devices, doctor, weights

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(devices, "list_cameras", lambda: [])
    monkeypatch.setattr(devices, "list_microphones", lambda: ([], ""))
    monkeypatch.setattr(weights, "online", lambda timeout_s=1.5: (False, "offline"))
    monkeypatch.setattr(doctor, "available_providers", lambda: ["CPUExecutionProvider"])
    return doctor


def _runtime_check(capsys, config=None) -> dict:
    main(["doctor", "--json"] + (["--config", str(config)] if config else []))
    return {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}["runtime"]


def test_doctor_names_backend_precision_and_instruction_sets(quiet_doctor, monkeypatch, capsys, tiny_bundle, tmp_path):
    monkeypatch.setattr(quiet_doctor, "cpu_info", lambda: SAPPHIRE_RAPIDS)
    monkeypatch.setattr(quiet_doctor, "openvino_installed", lambda: "2026.4.1")
    monkeypatch.setattr(backends, "openvino_version", lambda: "2026.4.1")
    monkeypatch.setenv("MERCLIP_CPU_FLAGS", " ".join(SAPPHIRE_RAPIDS.flags))
    config = tmp_path / "c.toml"
    config.write_text(f'[runtime]\nbundle = "{tiny_bundle}"\ncache_dir = "{tmp_path / "cache"}"\n')
    check = _runtime_check(capsys, config)
    assert "OpenVINO 2026.4.1" in check["detail"] and "amx_bf16" in check["detail"]
    assert "bf16 (AMX) once its check against fp32 passes" in check["detail"]
    from merclip.export.manifest import read_manifest

    write_cached(read_manifest(tiny_bundle), tmp_path / "cache", {"bf16": GOOD})
    assert "would run on CPU, OpenVINO bf16 (AMX)" in _runtime_check(capsys, config)["detail"]
    monkeypatch.setattr(quiet_doctor, "openvino_installed", lambda: None)
    check = _runtime_check(capsys, config)
    assert "would run on CPU, onnxruntime fp32" in check["detail"] and "merclip-live[openvino]" in check["fix"]
    monkeypatch.setattr(quiet_doctor, "cpu_info", lambda: HASWELL)
    check = _runtime_check(capsys, config)
    assert "(avx2)" in check["detail"] and "would run on CPU, onnxruntime fp32" in check["detail"]
    assert "openvino" not in check["fix"]


def test_the_openvino_path_and_the_first_load_check_never_import_torch(tiny_bundle, tmp_path):
    pytest.importorskip("openvino")
    code = (
        "import sys, numpy as np\n"
        "from merclip.export.runtime import Bundle\n"
        "from merclip.stream.precision import check_at_first_load\n"
        f"check_at_first_load({str(tiny_bundle)!r}, 'auto', 'auto', 0, {str(tmp_path)!r}, lambda s: None)\n"
        f"b = Bundle.load({str(tiny_bundle)!r}, providers='openvino', precision='bf16')\n"
        "assert b.plan.backend == 'openvino'\n"
        "b.predict(np.zeros((2, 64, 64, 3), np.uint8), np.zeros(b.window_samples, np.float32), 'hi there')\n"
        "print('torch' in sys.modules, 'open_clip' in sys.modules)\n"
    )
    env = {**os.environ, "MERCLIP_CPU_FLAGS": AMX_FLAGS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False False"
    assert list((tmp_path / "agreement").glob("*.json"))  # the check ran (and was cached), torch-free


def test_the_runtime_comparison_script_times_every_runtime_present(tiny_bundle):
    pytest.importorskip("openvino")
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "cpu_runtimes.py")
    run = subprocess.run([sys.executable, script, str(tiny_bundle), "--part", "vision", "--frames", "2",
                          "--repeats", "1", "--threads", "1"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if "median" in line]
    assert [line.split()[0] for line in lines] == ["onnxruntime", "OpenVINO", "OpenVINO"]
    assert "fp32 graph, 2 frames" in run.stdout and "runtime bf16" in lines[2]
    assert float(lines[1].split("max rel. diff")[1]) < 1e-4  # OpenVINO f32 computes what onnxruntime does
