"""``mecca data ...`` through the CLI entry point."""
import numpy as np
import pytest

from mecca_rllib.cli import main
from mecca_rllib.data import open_source


def test_phantoms_cache_and_preview_commands(tmp_path, capsys):
    phantoms, cache = tmp_path / "phantoms", tmp_path / "cache"
    assert main(["data", "phantoms", "--out", str(phantoms), "--n", "3",
                 "--shape", "8", "16", "16", "--spacing", "2", "1", "1"]) == 0
    assert len(list((phantoms / "images").glob("*.nii.gz"))) == 3
    assert main(["data", "cache", str(phantoms), "--out", str(cache), "--shape", "8", "12", "12",
                 "--variants", "2", "--quiet"]) == 0
    source = open_source(cache, (8, 12, 12), split="all")
    assert len(source) == 3 and source.get(0, np.random.default_rng(0))[0].shape == (8, 12, 12)
    for dataset in (phantoms, cache):
        png = tmp_path / f"{dataset.name}.png"
        assert main(["data", "preview", str(dataset), "--out", str(png), "--cases", "2"]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "wrote" in capsys.readouterr().out


def test_preview_of_a_missing_folder_fails_cleanly(tmp_path, capsys):
    assert main(["data", "preview", str(tmp_path / "nope"), "--out", str(tmp_path / "p.png")]) == 2
    assert "nope: dataset folder not found" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_data_requires_a_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["data"])
