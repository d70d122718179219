import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from merclip.export.onnx_export import ExportOptions, export_bundle
from merclip.export.parity import check_parity
from merclip.export.runtime import Bundle, choose_providers
from merclip.model import MerClipConfig, build_model, build_prompts

from merclip.errors import MerClipError


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(tiny_model, ExportOptions(out=out))
    return out


def test_fp32_parity_within_1e4(tiny_model, exported):
    bundle = Bundle.load(exported, providers="cpu")
    parity = check_parity(tiny_model, bundle, count=12)
    assert parity.max_abs_diff <= 1e-4
    assert parity.top_emotion_agreement == 1.0


def test_manifest_contract(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["format"] == "merclip-bundle/1"
    assert manifest["mode"] == "trained" and manifest["random_weights"] is True
    pre = manifest["preprocess"]
    assert pre["window_samples"] == 32000 and pre["mel"]["n_mels"] == 224 and pre["image_size"] == 224
    assert len(manifest["embeddings"]["emotion"]) == 6
    assert all(len(e["sha256"]) == 64 for e in manifest["parts"].values())


def test_new_labels_through_label_graph_match_torch(tiny_model, exported, tokenizer):
    bundle = Bundle.load(exported, providers="cpu")
    labels = ["calm and content", "furious about being ignored", "A sense of quiet dread."]
    bundle.set_labels(emotion=labels)
    prompts = build_prompts(tiny_model.cfg, tokenizer, emotion_labels=labels)
    with torch.no_grad():
        want = tiny_model.embed_labels(prompts.emotion).numpy()
    assert np.abs(bundle._emotion - want).max() <= 1e-4
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 100, 80, 3), dtype=np.uint8)
    assert bundle.predict(frames, None, "hello").emotion.shape == (1, 3)


def _tamper(src, dst, file, offset=-100):
    import shutil

    shutil.copytree(src, dst)
    data = bytearray((dst / file).read_bytes())
    data[offset] ^= 0xFF
    (dst / file).write_bytes(bytes(data))


def test_tampered_bundle_is_refused_naming_the_file(exported, tmp_path):
    _tamper(exported, tmp_path / "b", "vision.onnx")
    with pytest.raises(MerClipError, match=r"vision\.onnx does not match its checksum"):
        Bundle.load(tmp_path / "b")


def test_wrong_format_and_not_a_bundle_are_refused(exported, tmp_path):
    import shutil

    shutil.copytree(exported, tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["format"] = "merclip-bundle/0"
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MerClipError, match="re-export"):
        Bundle.load(tmp_path / "b")
    with pytest.raises(MerClipError, match="no manifest.json"):
        Bundle.load(tmp_path)
    with pytest.raises(MerClipError, match="bundle not found"):
        Bundle.load(tmp_path / "nothing")


def test_shape_mismatch_is_refused(exported, tmp_path):
    import shutil

    from merclip.export.manifest import sha256_file, write_manifest

    shutil.copytree(exported, tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["preprocess"]["image_size"] = 336
    write_manifest(tmp_path / "b", manifest)
    assert sha256_file(tmp_path / "b" / "vision.onnx") == manifest["parts"]["vision"]["sha256"]
    with pytest.raises(MerClipError, match="vision.onnx does not match the manifest"):
        Bundle.load(tmp_path / "b")


def test_runtime_never_imports_torch(exported):
    code = (
        "import sys, numpy as np\n"
        "from merclip.export.runtime import Bundle\n"
        f"b = Bundle.load({str(exported)!r})\n"
        "p = b.predict(np.zeros((2, 64, 64, 3), np.uint8), np.zeros(b.window_samples, np.float32), 'hi there')\n"
        "assert p.emotion.shape == (1, 6)\n"
        "print('torch' in sys.modules, 'open_clip' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_providers_report_and_refusal():
    chosen, why = choose_providers("auto", "fp32", None)
    assert chosen[-1] == "CPUExecutionProvider"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "cuda: not in this onnxruntime build" in why
        with pytest.raises(MerClipError, match="provider cuda is not available"):
            choose_providers("cuda", "fp32", None)


@pytest.mark.parametrize("variant", ["concat_fc", "no_cmd"])
def test_variants_export_with_parity(variant, tmp_path):
    torch.manual_seed(0)
    model = build_model(MerClipConfig(variant=variant, modalities="VL"))
    export_bundle(model, ExportOptions(out=tmp_path / variant))
    bundle = Bundle.load(tmp_path / variant, providers="cpu")
    assert check_parity(model, bundle, count=6).max_abs_diff <= 1e-4
    if variant == "concat_fc":
        with pytest.raises(MerClipError, match="labels are fixed"):
            bundle.set_labels(emotion=["a", "b"])


def test_zero_shot_and_int8_bundles(tiny_model, tmp_path):
    export_bundle(tiny_model, ExportOptions(out=tmp_path / "zs", mode="zero-shot"))
    zs = Bundle.load(tmp_path / "zs")
    assert zs.mode == "zero-shot" and "random weights" in zs.describe()
    assert check_parity(tiny_model, zs, count=6).max_abs_diff <= 1e-4
    export_bundle(tiny_model, ExportOptions(out=tmp_path / "q", precision="int8"))
    q = Bundle.load(tmp_path / "q")
    parity = check_parity(tiny_model, q, count=12)
    assert parity.mean_abs_diff < 0.05  # int8 is approximate; agreement is reported, not exact


def test_export_cli_end_to_end(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "merclip.cli",
            "export",
            "--onnx",
            "--model",
            "tiny",
            "--weights",
            "random",
            "--out",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "parity torch vs onnxruntime (fp32" in out.stderr
    assert (tmp_path / "b" / "manifest.json").is_file()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "merclip.cli",
            "export",
            "--onnx",
            "--checkpoint",
            str(tmp_path / "missing.safetensors"),
            "--out",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: checkpoint not found")
