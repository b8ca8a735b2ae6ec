"""One training budget for every benchmarked method: wall time or environment steps.

An *environment step* is one interaction step on one volume: one ``env.step`` for the RL
methods (MECCA, IteR-MRL), one forward/backward of one volume at one interaction step for
the supervised baselines (P-Net counts one step per volume it trains on; InterCNN counts
every unrolled interaction step). A budget is checked between updates, so a method may
overshoot it by at most one update (one RLlib training iteration or one volume).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

__all__ = ["Budget", "BudgetTracker", "parse_budget"]

_UNITS = {"s": "seconds", "sec": "seconds", "m": "minutes", "min": "minutes",
          "h": "hours", "steps": "env_steps", "step": "env_steps"}
_SECONDS = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0}


@dataclass(frozen=True)
class Budget:
    """A training budget per method.

    Attributes:
        kind: ``"seconds"`` (training wall time) or ``"env_steps"``.
        amount: seconds or environment steps, > 0.
    """

    kind: str
    amount: float

    def __post_init__(self) -> None:
        if self.kind not in ("seconds", "env_steps"):
            raise ValueError(f"budget kind must be 'seconds' or 'env_steps', got {self.kind!r}")
        if not self.amount > 0:
            raise ValueError(f"budget amount must be positive, got {self.amount!r}")

    def describe(self) -> str:
        """The budget in words, as stated in reports (e.g. ``"90 s of training wall time"``)."""
        if self.kind == "seconds":
            return f"{self.amount:g} s of training wall time per method"
        return f"{int(self.amount):,} environment steps per method"

    def tracker(self) -> "BudgetTracker":
        """A fresh tracker of this budget, its clock started now."""
        return BudgetTracker(self)


def parse_budget(text: str) -> Budget:
    """``"90s"``, ``"2min"``, ``"1.5h"`` (wall time) or ``"5000steps"`` -> :class:`Budget`."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]+)\s*", str(text).lower())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"--budget {text!r}: expected a number with a unit, e.g. 90s, 10min, "
                         "1h or 5000steps")
    value, unit = float(match.group(1)), _UNITS[match.group(2)]
    if unit == "env_steps":
        return Budget("env_steps", value)
    return Budget("seconds", value * _SECONDS[unit])


@dataclass
class BudgetTracker:
    """Counts what one method has spent of its :class:`Budget`."""

    budget: Budget
    env_steps: int = 0
    updates: int = 0
    _start: float = field(default_factory=time.perf_counter)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the tracker was created."""
        return time.perf_counter() - self._start

    def spend(self, env_steps: int, updates: int = 1) -> None:
        """Record ``env_steps`` more environment steps and ``updates`` optimizer updates."""
        self.env_steps += int(env_steps)
        self.updates += int(updates)

    @property
    def exhausted(self) -> bool:
        """Whether the method has used up its budget (checked between updates)."""
        if self.budget.kind == "seconds":
            return self.elapsed_s >= self.budget.amount
        return self.env_steps >= self.budget.amount

    def summary(self) -> dict[str, float]:
        """``{"env_steps", "updates", "seconds"}`` actually spent."""
        return {"env_steps": self.env_steps, "updates": self.updates,
                "seconds": round(self.elapsed_s, 3)}
