"""The one error type an A/B report raises for bad input, so the CLI can print it without a traceback."""
from __future__ import annotations


class ReportInputError(ValueError):
    """Input that cannot be analysed (missing directory, empty or malformed log); the message names
    the file and, where there is one, the line."""
