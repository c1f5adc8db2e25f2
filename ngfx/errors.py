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


class NgfxWarning(UserWarning):
    """Input the program can use but whose result may be wrong (an open mesh's inside/outside, say);
    the CLI prints it as one ``ngfx CMD: warning: ...`` line."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a training run after it saved its checkpoint; the message says where it
    stopped and how to continue. A KeyboardInterrupt, so every caller stops as it would on Ctrl-C."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number
