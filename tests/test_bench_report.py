"""The Markdown report: paper-shaped tables with our numbers beside the paper's, and plots."""
import re

import numpy as np
import pytest

from mecca_rllib.bench.protocol import MethodResult
from mecca_rllib.bench.report import PAPER_TABLE1, load_results, render_report, write_report

R, C, T = 2, 3, 5


def fake_result(name, final_dice, labeled_fraction=1.0, seed=0):
    rng = np.random.default_rng(seed)
    dice = np.linspace(0, final_dice, T + 1)[None, None].repeat(R, 0).repeat(C, 1)
    assd = rng.uniform(1, 3, (R, C, T))
    assd[0, 0, 0] = np.inf  # one empty prediction
    return MethodResult(
        name=name, cases=[f"case{i}" for i in range(C)], dice=dice, assd=assd,
        misunderstanding=rng.uniform(0, 0.1, (R, C, T)),
        inference_ms=rng.uniform(5, 10, (R, C, T)), interaction_ms=rng.uniform(1, 2, (R, C, T)),
        labeled_fraction=labeled_fraction, training={"env_steps": 100, "updates": 5, "seconds": 9.5},
    )


def section(text, title):
    """The text of the section whose heading contains ``title``, up to the next heading."""
    start = text.index(title)
    rest = text[start + len(title):]
    match = re.search(r"\n#{2,3} ", rest)
    return rest[: match.start()] if match else rest


METHODS = ["P-Net", "DeepIGeoS", "InterCNN", "IteR-MRL", "Focal-IteR-MRL", "Err-IteR-MRL",
           "MECCA", "MECCA (guided)"]


@pytest.fixture(scope="module")
def results():
    return [fake_result(name, 0.5 + 0.05 * i, seed=i) for i, name in enumerate(METHODS)]


def test_tables_have_every_method_and_step_beside_the_paper(results):
    text = render_report(results, {"title": "t", "budget": "90 s", "commit": "abc"})
    assert "- **budget**: 90 s" in text and "- **commit**: abc" in text
    table1 = section(text, "Table 1")
    for name in METHODS:
        assert f"| {name} |" in table1
        for heading in ("Table 2", "ASSD (voxels) per step", "Misunderstanding", "NoC@85",
                        "Table 6"):
            assert f"| {name} |" in section(text, heading), (name, heading)
    # Paper-only rows are listed but marked; paper numbers sit beside ours.
    assert re.search(r"\| BS-IRIS \| not run \| not run \| 90\.47 \|", table1)
    mecca_row = next(line for line in table1.splitlines() if line.startswith("| MECCA |"))
    assert "80.00 ± 0.00" in mecca_row and all(f"{v:.2f}" in mecca_row for v in PAPER_TABLE1["MECCA"])
    table2 = section(text, "Table 2")
    assert all(f"step {t}" in table2 for t in range(1, T + 1))
    assert "| MECCA (paper, BraTS2015) | 86.49 | 88.53 | 89.56 | 89.12 | 90.29 |" in table2
    assert "(1 empty)" in section(text, "ASSD (voxels) per step")


def test_label_efficiency_table_shows_measured_fractions(results):
    partial = fake_result("MECCA", 0.7, labeled_fraction=0.25)
    text = render_report([*results, partial], {})
    row = next(l for l in section(text, "Table 3").splitlines() if l.startswith("| MECCA (ours)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["not run", "70.00 ± 0.00", "not run", "not run", "80.00 ± 0.00"]
    # the partial-label run is not mixed into the full-label tables
    assert section(text, "Table 1").count("| MECCA |") == 1


def test_write_report_writes_files_that_load_back(results, tmp_path):
    path = write_report(results, tmp_path / "out", {"title": "bench"})
    assert path == tmp_path / "out" / "report.md"
    for name in ("dice_per_step.png", "reward_ablation.png", "results.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    text = path.read_text()
    assert "](dice_per_step.png)" in text and "](reward_ablation.png)" in text
    back, meta = load_results(tmp_path / "out" / "results.json")
    assert [r.name for r in back] == METHODS and meta["title"] == "bench"
    np.testing.assert_array_equal(back[0].assd, results[0].assd)
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left behind


def test_no_ablation_plot_without_ablation_methods(results, tmp_path):
    write_report(results[:3], tmp_path, {})
    assert (tmp_path / "dice_per_step.png").exists()
    assert not (tmp_path / "reward_ablation.png").exists()


def test_empty_results_are_an_error():
    with pytest.raises(ValueError, match="results"):
        render_report([], {})
