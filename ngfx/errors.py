"""The one error type for bad user input: it names the file (or config) and the field."""

from __future__ import annotations


class NgfxInputError(ValueError):
    """Bad input that the user can fix: a malformed file, a bad config value, a corrupt trace.

    The message always starts with where the problem is (``source``) and which field (``field``),
    so the CLI can print it as one line instead of a traceback.
    """

    def __init__(self, source: str, field: str | None, problem: str):
        self.source = str(source)
        self.field = field
        self.problem = problem
        where = f"{self.source}: field '{field}'" if field else self.source
        super().__init__(f"{where}: {problem}")
