"""Deployable exports (``mecca export --format torch|openvino``, issue 16): a self-describing
folder that loads without Ray; other versions and corrupt files are refused, naming the file."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mecca_rllib.cli import main
from mecca_rllib.data.errors import DataError
from mecca_rllib.inference import InferenceNet, is_export, load_export, openvino_installed, save_export
from mecca_rllib.inference.export import MANIFEST, WEIGHTS, read_manifest
from mecca_rllib.policies.checkpoints import EXPORT_META, load_rl_module
from mecca_rllib.session import InteractiveSession

REPO = Path(__file__).resolve().parents[1]
SCAN = (18, 26, 14)
CLICKS = [[[9, 13, 7], [5, 9, 4], [13, 17, 10]], [[10, 11, 8]]]


@pytest.fixture(scope="module")
def module(make_tiny_module):
    return make_tiny_module(hint_kernel=4)


@pytest.fixture(scope="module")
def torch_export(module, tmp_path_factory) -> Path:
    return save_export(module, tmp_path_factory.mktemp("exp") / "torch")


@pytest.fixture()
def scan(tmp_path) -> Path:
    affine = np.diag([1.2, 0.9, 2.5, 1.0])
    image = np.random.default_rng(0).normal(size=SCAN).astype(np.float32)
    image[5:13, 8:18, 4:10] += 2
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "scan.nii.gz")
    (tmp_path / "clicks.json").write_text(json.dumps(CLICKS))
    return tmp_path


def session_result(source, **kwargs):
    session = source if isinstance(source, InteractiveSession) else InteractiveSession(source, **kwargs)
    session.start(np.random.default_rng(1).normal(size=(12, 20, 18)).astype(np.float32),
                  roi=[[1, 11], [2, 18], [1, 17]])
    session.click([[5, 9, 8], [6, 10, 9]])
    return session.step()


def test_torch_export_is_self_describing(torch_export, module):
    manifest = json.loads((torch_export / MANIFEST).read_text())
    assert manifest["format"] == "mecca-rllib-export" and manifest["format_version"] == 1
    assert manifest["backend_format"] == "torch"
    assert manifest["training_shape"] == [8, 16, 16] and manifest["hint_kernel"] == 4
    assert manifest["hint_channels"] == 1 and manifest["model_config"]["width"] == 4
    assert set(manifest["files"]) == {WEIGHTS, EXPORT_META}
    assert is_export(torch_export) and read_manifest(torch_export)["weights"] == WEIGHTS
    # It is still an RLModule export too (training tools read it as before).
    assert sorted(load_rl_module(torch_export).state_dict()) == sorted(module.state_dict())


def test_export_loads_as_a_pure_torch_net_with_the_same_results(torch_export, module):
    net = load_export(torch_export)
    assert isinstance(net, InferenceNet) and not hasattr(net, "value_head")
    session = InteractiveSession.from_export(torch_export)
    assert isinstance(session.module, InferenceNet) and session.hint_kernel == 4
    assert isinstance(InteractiveSession.from_checkpoint(torch_export).module, InferenceNet)
    a, b = session_result(session), session_result(module)
    np.testing.assert_array_equal(a.roi_probability, b.roi_probability)
    np.testing.assert_array_equal(a.roi_confidence, b.roi_confidence)


def test_other_version_and_corrupt_exports_are_refused_naming_the_file(torch_export, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(torch_export, bad)
    manifest = json.loads((bad / MANIFEST).read_text())
    (bad / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(DataError, match=r"manifest\.json: export format version 99 is not supported"):
        InteractiveSession.from_export(bad)
    (bad / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match=r"manifest\.json: corrupt export manifest"):
        load_export(bad)
    (bad / MANIFEST).write_text(json.dumps(manifest))
    data = bytearray((bad / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"weights\.pt: corrupt export file"):
        InteractiveSession.from_checkpoint(bad)
    (bad / WEIGHTS).write_bytes(bytes(data[:100]))
    with pytest.raises(DataError, match=r"weights\.pt: corrupt export file"):
        load_export(bad)
    # The CLI prints it as one line naming the file.
    assert main(["export", str(bad), "--out", str(tmp_path / "again")]) == 2


def test_cli_export_formats_and_positional_checkpoint(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "a")]) == 0
    assert "torch format" in capsys.readouterr().out
    assert read_manifest(tmp_path / "a")["backend_format"] == "torch"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--format", "torch", "--out", str(tmp_path / "b")]) == 0
    assert main(["export", "--out", str(tmp_path / "c")]) == 2
    assert "give the checkpoint" in capsys.readouterr().err


def test_openvino_export_without_openvino_names_the_extra(module, tmp_path, monkeypatch):
    from mecca_rllib.inference import backends

    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    with pytest.raises(ValueError, match=r"pip install mecca-rllib\[openvino\]"):
        save_export(module, tmp_path / "ov", format="openvino")
    assert not (tmp_path / "ov").exists()


@pytest.mark.skipif(not openvino_installed(), reason="OpenVINO is not installed (pip install mecca-rllib[openvino])")
def test_openvino_export_runs_from_its_ir(module, tmp_path):
    out = save_export(module, tmp_path / "ov", format="openvino")
    manifest = read_manifest(out)
    assert manifest["backend_format"] == "openvino" and manifest["openvino"]["policy"] == "policy.xml"
    assert {"policy.xml", "policy.bin", "confidence.xml", "confidence.bin"} <= set(manifest["files"])
    session = InteractiveSession.from_export(out, backend="openvino")
    assert session.module.openvino_ir["policy"] == out / "policy.xml"
    a, b = session_result(session), session_result(module)
    assert np.mean((a.roi_probability > 0.5) == (b.roi_probability > 0.5)) >= 0.995
    assert np.abs(a.roi_confidence - b.roi_confidence).max() <= 0.02


NO_RAY_SCRIPT = textwrap.dedent("""
    import sys, time
    start = time.perf_counter()
    from mecca_rllib.cli import main
    rc = main(sys.argv[1:])
    took = time.perf_counter() - start
    assert rc == 0, rc
    leaked = sorted(m for m in sys.modules if m == "ray" or m.startswith(("ray.", "ray_")))
    assert not leaked, leaked[:5]
    print(f"cold start + segment: {took:.2f} s, no ray")
""")


def test_segment_with_an_export_never_imports_ray(torch_export, scan, tmp_path):
    args = ["segment", str(scan / "scan.nii.gz"), "--checkpoint", str(torch_export),
            "--clicks", str(scan / "clicks.json"), "--out", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-c", NO_RAY_SCRIPT, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no ray" in proc.stdout
    print(proc.stdout.strip().splitlines()[-1])
    assert (tmp_path / "out" / "segmentation.nii.gz").is_file()


#: Asserts, in a fresh interpreter, that Tune knows both names.
REGISTERED = ("from ray.tune.registry import _global_registry, TRAINABLE_CLASS, ENV_CREATOR; "
              "assert _global_registry.contains(TRAINABLE_CLASS, 'MECCA'); "
              "assert _global_registry.contains(ENV_CREATOR, 'mecca_seg'); ")


def _run_fresh(code: str) -> None:
    """Run ``code`` in a fresh interpreter (warnings as errors); it must print ``ok``."""
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_light_import_and_lazy_names():
    _run_fresh("import sys, mecca_rllib; assert 'ray' not in sys.modules; "
               "import gymnasium; assert 'mecca_rllib/InteractiveSeg-v0' in gymnasium.registry; "
               "from mecca_rllib import MECCA, MECCAConfig; " + REGISTERED + "print('ok')")


@pytest.mark.parametrize("first", [
    "from ray import tune", "import ray.rllib",
    "from mecca_rllib.policies.checkpoints import build_module; build_module({'shape': (8, 16, 16)})",
])
def test_names_registered_when_ray_comes_after_the_package(first):
    _run_fresh(f"import mecca_rllib, sys; {first}; import gymnasium; " + REGISTERED
               + "assert not any(type(f).__name__ == '_RegisteringFinder' for f in sys.meta_path); print('ok')")
