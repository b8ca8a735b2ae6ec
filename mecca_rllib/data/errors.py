"""The one exception type of the data layer."""
from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data: the message names the file (or argument) and the problem."""

    def __init__(self, where: str | os.PathLike | None, problem: str) -> None:
        self.where = None if where is None else str(where)
        self.problem = problem
        super().__init__(problem if where is None else f"{where}: {problem}")
