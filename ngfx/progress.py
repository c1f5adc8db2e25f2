"""Progress bars that stay readable in a log file: the one way ngfx shows a user what they wait for.

On a terminal, :func:`progress_bar` is a live tqdm bar. When stderr is not a terminal (``ngfx demo > log``,
CI), the bar is written as plain lines, one every ``LOG_EVERY_S`` seconds and one at the end, instead of a
carriage-return redraw per step (megabytes of log for a one-minute run).
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_EVERY_S = 10.0


class _LogLines:
    """A file for tqdm that turns each redraw (``\\r`` + bar + padding) into one line."""

    def __init__(self, stream):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line and line != self.last:  # closing redraws the final state once more
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable=None, *, disable: bool = False, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, written as log lines every ``LOG_EVERY_S`` s when stderr is not a terminal."""
    stream = sys.stderr
    if not disable and not stream.isatty():
        kwargs.setdefault("file", _LogLines(stream))
        kwargs.setdefault("mininterval", LOG_EVERY_S)
        kwargs.setdefault("ascii", True)
    return tqdm(iterable, disable=disable, **kwargs)
