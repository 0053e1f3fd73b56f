"""Data problems that name the file, row and column, so a bad input is fixed in one pass.

Loaders collect every problem they find before raising, instead of stopping at the first one:
someone repairing a 100k-row export wants the whole list.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with one place in one file. `row` is 1-based over data rows (header excluded)."""

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = Path(self.file).name if self.file else "<dataset>"
        if self.row is not None:
            where += f", row {self.row}"
        if self.column:
            where += f", column '{self.column}'"
        return f"{where}: {self.message}"


class DataValidationError(ValueError):
    """Raised with every problem found; `str()` lists them one per line."""

    def __init__(self, problems: list[DataProblem], max_listed: int = 50):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:max_listed]]
        more = len(self.problems) - max_listed
        if more > 0:
            lines.append(f"... and {more} more problem(s)")
        super().__init__(f"{len(self.problems)} data problem(s):\n" + "\n".join(lines))


class ProblemLog:
    """Accumulates problems while a loader works; `raise_if_any` ends the load."""

    def __init__(self) -> None:
        self.problems: list[DataProblem] = []

    def add(self, file: str | Path, row: int | None, column: str | None, message: str) -> None:
        self.problems.append(DataProblem(str(file), row, column, message))

    def extend(self, problems: list[DataProblem]) -> None:
        self.problems.extend(problems)

    def __bool__(self) -> bool:
        return bool(self.problems)

    def raise_if_any(self) -> None:
        if self.problems:
            raise DataValidationError(self.problems)
