"""``mecca segment`` and ``mecca export`` on a tiny checkpoint (no training run)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mecca_rllib import session_commands
from mecca_rllib.cli import main
from mecca_rllib.session import InteractiveSession

NET_SHAPE = (8, 16, 16)
SCAN_SHAPE = (18, 26, 14)
OUTPUTS = ("segmentation.nii.gz", "probability.nii.gz", "confidence.nii.gz", "advice.nii.gz")


@pytest.fixture(scope="module")
def exported(tiny_checkpoint) -> Path:
    """An exported module folder, as ``mecca export`` writes it."""
    return tiny_checkpoint


@pytest.fixture(scope="module")
def algorithm_checkpoint(tmp_path_factory, make_tiny_module) -> Path:
    """The module inside an Algorithm checkpoint's folder layout (as ``save_to_path`` writes it)."""
    root = tmp_path_factory.mktemp("algo") / "checkpoint_000001"
    make_tiny_module(NET_SHAPE).save_to_path(root / "learner_group" / "learner" / "rl_module" / "default_policy")
    return root


@pytest.fixture()
def scan(tmp_path) -> tuple[Path, np.ndarray]:
    """A NIfTI with an anisotropic, oblique affine and a bright blob."""
    affine = np.array([[0.0, -1.2, 0.3, 40.0], [0.1, 0.0, 2.5, -12.0], [0.9, 0.0, 0.0, 7.0], [0, 0, 0, 1]])
    grid = np.indices(SCAN_SHAPE).astype(np.float32)
    centre = (np.array(SCAN_SHAPE) / 2)[:, None, None, None]
    image = np.exp(-(((grid - centre) / 4.0) ** 2).sum(0)) + np.random.default_rng(0).normal(0, 0.05, SCAN_SHAPE)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), path)
    return path, affine


def write_clicks(path: Path, steps) -> Path:
    path.write_text(json.dumps(steps))
    return path


CLICKS = [[[9, 13, 7], [5, 9, 4], [13, 17, 10]], [[10, 11, 8]]]


def run_segment(image, checkpoint, clicks, out, *extra) -> int:
    return main(["segment", str(image), "--checkpoint", str(checkpoint), "--clicks", str(clicks),
                 "--out", str(out), *extra])  # fmt: skip


def test_segment_writes_niftis_with_the_input_affine_and_header(tmp_path, scan, exported, capsys):
    image, affine = scan
    clicks = write_clicks(tmp_path / "clicks.json", CLICKS)
    out = tmp_path / "out"
    assert run_segment(image, exported, clicks, out) == 0
    assert "step 2" in capsys.readouterr().out

    ref = nib.load(image)
    loaded = {}
    for name in OUTPUTS:
        img = nib.load(out / name)
        assert img.shape == SCAN_SHAPE
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-6)
        assert img.header.get_xyzt_units() == ref.header.get_xyzt_units()
        loaded[name] = np.asarray(img.dataobj)
    seg, prob = loaded["segmentation.nii.gz"], loaded["probability.nii.gz"]
    assert seg.dtype == np.uint8 and prob.dtype == np.float32
    # The default "hold" readout only adds voxels at p = 0.5 that were foreground before
    # (resampled: near 0.5, as they count 0.55 and p never moves by less than 0.1).
    assert (seg >= (prob > 0.5)).all() and (seg <= (prob > 0.45)).all()
    assert run_segment(image, exported, clicks, out, "--readout", "threshold", "--overwrite") == 0
    seg, prob = (np.asarray(nib.load(out / name).dataobj) for name in ("segmentation.nii.gz", "probability.nii.gz"))
    np.testing.assert_array_equal(seg, (prob > 0.5).astype(np.uint8))
    conf = loaded["confidence.nii.gz"]
    assert conf.min() > 0 and conf.max() <= 1

    advice = json.loads((out / "advice.json").read_text())
    assert [r["rank"] for r in advice] == list(range(1, len(advice) + 1)) and advice
    for r in advice:  # the advertised centroid lies in its advice region, in voxels and mm
        voxels = np.argwhere(loaded["advice.nii.gz"] == r["rank"])
        np.testing.assert_allclose(r["centroid_voxel"], voxels.mean(0), atol=1e-3)
        np.testing.assert_allclose(r["centroid_mm"], affine[:3, :3] @ voxels.mean(0) + affine[:3, 3], atol=1e-3)
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clicks.json", "out", "scan.nii.gz"]


def test_segment_matches_the_python_session(tmp_path, scan, exported):
    image, _ = scan
    out = tmp_path / "out"
    assert run_segment(image, exported, write_clicks(tmp_path / "c.json", CLICKS), out) == 0
    session = InteractiveSession.from_checkpoint(exported)
    session.start(image)
    for step in CLICKS:
        session.click(step)
        result = session.step()
    np.testing.assert_array_equal(np.asarray(nib.load(out / "probability.nii.gz").dataobj), result.probability)


def test_world_mm_clicks_give_the_same_result(tmp_path, scan, exported):
    image, affine = scan
    mm = [[(affine[:3, :3] @ p + affine[:3, 3]).tolist() for p in np.array(step, float)] for step in CLICKS]
    assert run_segment(image, exported, write_clicks(tmp_path / "v.json", CLICKS), tmp_path / "vox") == 0
    assert run_segment(image, exported, write_clicks(tmp_path / "m.json", mm), tmp_path / "mm", "--mm") == 0
    for name in OUTPUTS:
        np.testing.assert_array_equal(
            np.asarray(nib.load(tmp_path / "vox" / name).dataobj),
            np.asarray(nib.load(tmp_path / "mm" / name).dataobj),
        )


def test_algorithm_checkpoint_export_and_roi(tmp_path, scan, algorithm_checkpoint, capsys):
    image, _ = scan
    clicks = write_clicks(tmp_path / "c.json", CLICKS)
    roi = ["--roi", "2", "16", "3", "24", "1", "13"]
    assert run_segment(image, algorithm_checkpoint, clicks, tmp_path / "a", *roi) == 0
    assert main(["export", "--checkpoint", str(algorithm_checkpoint), "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "mecca_module.json").is_file()
    assert run_segment(image, tmp_path / "exp", clicks, tmp_path / "b", *roi) == 0
    a = np.asarray(nib.load(tmp_path / "a" / "probability.nii.gz").dataobj)
    np.testing.assert_array_equal(a, np.asarray(nib.load(tmp_path / "b" / "probability.nii.gz").dataobj))
    conf = np.asarray(nib.load(tmp_path / "a" / "confidence.nii.gz").dataobj)
    outside = np.ones(SCAN_SHAPE, bool)
    outside[2:16, 3:24, 1:13] = False
    assert (a[outside] == 0).all() and (conf[outside] == 1).all() and (conf[~outside] < 1).all()


@pytest.mark.parametrize(
    "steps, message",
    [
        ([[[9, 13, 7], [18, 0, 0]]], "step 1: click (18.0, 0.0, 0.0) lies outside the volume"),
        ([[[9, 13, float("nan")]]], "step 1: click (9.0, 13.0, nan) has a NaN"),
        ([[[9, 13]]], "step 1, point 1"),
        ([], "non-empty list of steps"),
        ([[]], "step 1 has no clicks and no --roi"),
    ],
)
def test_bad_clicks_name_the_click(tmp_path, scan, exported, capsys, steps, message):
    image, _ = scan
    clicks = write_clicks(tmp_path / "clicks.json", steps)
    assert run_segment(image, exported, clicks, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err and "clicks.json" in err
    assert not (tmp_path / "out").exists()


def test_bad_image_and_checkpoint(tmp_path, scan, exported, capsys):
    image, _ = scan
    clicks = write_clicks(tmp_path / "clicks.json", CLICKS)
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 7), np.float32), np.eye(4)), flat)
    assert run_segment(flat, exported, clicks, tmp_path / "o") == 2
    assert "flat.nii.gz" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    assert run_segment(image, tmp_path / "junk", clicks, tmp_path / "o") == 2
    assert "not a MECCA checkpoint" in capsys.readouterr().err
    assert run_segment(tmp_path / "missing.nii.gz", exported, clicks, tmp_path / "o") == 2
    assert "missing.nii.gz" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"trained on shape \(8, 16, 16\), expected \(30, 55, 55\)"):
        InteractiveSession.from_checkpoint(exported, shape=(30, 55, 55))


def test_output_folder_is_atomic(tmp_path, scan, exported, monkeypatch, capsys):
    image, _ = scan
    clicks = write_clicks(tmp_path / "clicks.json", CLICKS)
    out = tmp_path / "out"
    real_save, calls = nib.save, []

    def interrupted(img, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user hits Ctrl-C after the first NIfTI
        real_save(img, path)

    monkeypatch.setattr(nib, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_segment(image, exported, clicks, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clicks.json", "scan.nii.gz"]
    monkeypatch.setattr(nib, "save", real_save)

    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert run_segment(image, exported, clicks, out) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert run_segment(image, exported, clicks, out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, "advice.json", "overlay.png"])


def test_read_clicks_converts_world_mm_and_reads_click_sides():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_clicks(Path(tmp) / "c.json", [
            [[10.0, 20.0, 30.0], {"point": [2.0, 4.0, 5.0], "foreground": False}], []])
        affine = np.diag([2.0, 4.0, 5.0, 1.0])
        affine[:3, 3] = [2, 4, 5]
        steps = session_commands.read_clicks(path, world_to_voxel=np.linalg.inv(affine))
        (points, sides), (empty, no_sides) = steps
        np.testing.assert_allclose(points, [[4, 4, 5], [0, 0, 0]])
        assert sides.tolist() == [True, False]
        assert empty.shape == (0, 3) and no_sides.shape == (0,)
        bad = write_clicks(Path(tmp) / "bad.json", [[{"point": [1, 2, 3], "foreground": "no"}]])
        with pytest.raises(ValueError, match="step 1, point 1"):
            session_commands.read_clicks(bad)


def test_nan_image_names_the_cli_flag_and_the_flag_cleans_it(tmp_path, scan, exported, capsys):
    image, affine = scan
    data = np.asarray(nib.load(image).dataobj).astype(np.float32)
    data[0, 0, :2] = np.nan
    nan_image = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), nan_image)
    clicks = write_clicks(tmp_path / "clicks.json", CLICKS)
    assert run_segment(nan_image, exported, clicks, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "nan.nii.gz" in err and "2 NaN/Inf" in err and "--nonfinite clean" in err
    assert "nonfinite='clean'" not in err  # the Python keyword is not what a CLI user has
    assert not (tmp_path / "o").exists()
    assert run_segment(nan_image, exported, clicks, tmp_path / "o", "--nonfinite", "clean") == 0
    assert (tmp_path / "o" / "segmentation.nii.gz").is_file()


def test_python_callers_are_told_the_keyword(tmp_path, scan, exported):
    from mecca_rllib.data.errors import NonFiniteError

    image, affine = scan
    data = np.asarray(nib.load(image).dataobj).astype(np.float32)
    data[1, 1, 1] = np.inf
    path = tmp_path / "inf.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    session = InteractiveSession.from_checkpoint(exported)
    with pytest.raises(NonFiniteError, match=r"inf\.nii\.gz: 1 NaN/Inf voxel.*nonfinite='clean'"):
        session.start(path)
    session.start(path, nonfinite="clean")
    assert np.isfinite(session.volume.array).all()


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_segment_takes_a_backend(tmp_path, scan, exported, backend, capsys):
    image, _ = scan
    clicks = write_clicks(tmp_path / "c.json", CLICKS)
    assert run_segment(image, exported, clicks, tmp_path / backend, "--backend", backend) == 0
    assert "step 2:" in capsys.readouterr().out
    assert (tmp_path / backend / "segmentation.nii.gz").is_file()


def test_segment_with_an_unavailable_backend_names_the_extra(tmp_path, scan, exported, capsys, monkeypatch):
    from mecca_rllib.inference import backends

    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    image, _ = scan
    clicks = write_clicks(tmp_path / "c.json", CLICKS)
    assert run_segment(image, exported, clicks, tmp_path / "o", "--backend", "openvino") == 2
    assert "pip install mecca-rllib[openvino]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
