"""Training budgets: parsing, stating them, and knowing when one is spent."""
import time

import pytest

from mecca_rllib.budget import Budget, parse_budget


@pytest.mark.parametrize("text, kind, amount", [
    ("90s", "seconds", 90.0), ("2min", "seconds", 120.0), ("1.5h", "seconds", 5400.0),
    (" 5000steps ", "env_steps", 5000.0), ("10 m", "seconds", 600.0),
])
def test_parse_budget(text, kind, amount):
    assert parse_budget(text) == Budget(kind, amount)


@pytest.mark.parametrize("text", ["", "90", "fast", "-5s", "3 parsecs"])
def test_parse_budget_rejects_unclear_text_naming_the_option(text):
    with pytest.raises(ValueError, match="--budget"):
        parse_budget(text)


def test_budget_is_stated_in_words():
    assert parse_budget("90s").describe() == "90 s of training wall time per method"
    assert parse_budget("5000steps").describe() == "5,000 environment steps per method"


def test_step_budget_is_spent_by_env_steps_only():
    tracker = Budget("env_steps", 10).tracker()
    tracker.spend(4)
    tracker.spend(5, updates=3)
    assert not tracker.exhausted and tracker.updates == 4
    tracker.spend(1)
    assert tracker.exhausted
    assert tracker.summary()["env_steps"] == 10


def test_time_budget_is_spent_by_the_clock():
    tracker = Budget("seconds", 0.05).tracker()
    tracker.spend(10**6)
    assert not tracker.exhausted  # steps do not count against a time budget
    time.sleep(0.06)
    assert tracker.exhausted and tracker.summary()["seconds"] >= 0.05


def test_invalid_budgets_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        Budget("episodes", 3)
    with pytest.raises(ValueError, match="positive"):
        Budget("seconds", -1)
