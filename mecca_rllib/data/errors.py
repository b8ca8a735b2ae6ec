"""The exception types of the data layer: :class:`DataError` and its NaN/Inf case."""
from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data: the message names the file (or argument) and the problem."""

    def __init__(self, where: str | os.PathLike | None, problem: str) -> None:
        self.where = None if where is None else str(where)
        self.problem = problem
        super().__init__(problem if where is None else f"{where}: {problem}")


class NonFiniteError(DataError):
    """NaN/Inf voxels in an image. The message names the option that replaces them, as the
    caller spells it: the Python keyword by default, a CLI flag via :meth:`with_option`."""

    def __init__(self, where: str | os.PathLike | None, count: int,
                 option: str = "nonfinite='clean'") -> None:
        self.count, self.option = int(count), option
        super().__init__(where, f"{self.count} NaN/Inf voxel(s) in the image (pass {option} to "
                                "replace them by the finite min/max)")

    def with_option(self, option: str) -> "NonFiniteError":
        """The same error naming ``option`` (e.g. ``"--nonfinite clean"``)."""
        return NonFiniteError(self.where, self.count, option)
