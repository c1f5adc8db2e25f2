"""Progress bars that stay readable in a log file: the one way ngfx shows a user what they wait for.

On a terminal, :func:`progress_bar` is a live tqdm bar. When stderr is not a terminal (``ngfx demo > log``,
CI), the bar is written as plain lines, one every ``LOG_EVERY_S`` seconds and one at the end, instead of a
carriage-return redraw per step (megabytes of log for a one-minute run).
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings

from tqdm import tqdm

from ngfx.errors import NgfxWarning

LOG_EVERY_S = 10.0
CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # ANSI escapes tqdm writes for nested bars
# Progress inside one frame (ngfx render / trace turn it on with frame_progress): a frame of more rays than
# this on the device type shows a bar per band of rays; on a 2-core CPU 2^18 NSDF rays take seconds.
LARGE_FRAME_RAYS = {"cpu": 2 ** 18, "cuda": 2 ** 24}
CPU_BAND_RAYS = 2 ** 16  # a CPU band stays this small, so the bar moves every few seconds at any size
LONG_CPU_FRAME_RAYS = 2 ** 22  # a marched (NeRF, NSDF, NVR) CPU frame this large takes many minutes: say so first
_frame_progress = {"on": False, "warned": False}


class _LogLines:
    """A file for tqdm that turns each redraw (``\\r`` + bar + padding) into one line."""

    def __init__(self, stream):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = CURSOR_MOVES.sub("", text).replace("\r", "").rstrip()  # a nested bar's moves mean nothing in a log
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


@contextlib.contextmanager
def frame_progress(enabled: bool = True):
    """Within this block, :func:`frame_bands` shows a bar inside each large frame (and warns once of a long CPU
    render). Only the CLI's render and trace turn it on: benchmarks and evaluations keep a bare loop."""
    previous = dict(_frame_progress)
    _frame_progress.update(on=enabled, warned=False)
    try:
        yield
    finally:
        _frame_progress.update(previous)


def frame_bands(width: int, height: int, band_rays: int, device, desc: str, marched: bool = True):
    """Yield ``(row0, n_rows)`` of a ``width`` x ``height`` frame rendered about ``band_rays`` rays at a time
    (at most ``CPU_BAND_RAYS`` on a CPU). Under :func:`frame_progress`, a frame above ``LARGE_FRAME_RAYS``
    advances a bar in rows after each band (a host-side count: no device sync), and a ``marched`` CPU frame
    above ``LONG_CPU_FRAME_RAYS`` is announced first with its size."""
    device_type = getattr(device, "type", str(device))
    if device_type == "cpu":
        band_rays = min(band_rays, CPU_BAND_RAYS)
    rows = max(1, band_rays // width)
    n_rays = width * height
    shown = _frame_progress["on"] and n_rays > LARGE_FRAME_RAYS.get(device_type, LARGE_FRAME_RAYS["cuda"])
    if shown and marched and device_type == "cpu" and n_rays > LONG_CPU_FRAME_RAYS and not _frame_progress["warned"]:
        _frame_progress["warned"] = True
        warnings.warn(f"{desc}: a {width}x{height} frame is {n_rays / 1e6:.1f} M rays marched on the CPU; expect a "
                      "long wait (minutes to hours per frame); a GPU or a smaller --resolution is faster", NgfxWarning)
    bar = progress_bar(total=height, desc=f"{desc} ({width}x{height})", unit="row", disable=not shown,
                       leave=not sys.stderr.isatty())  # a terminal keeps the frame bar only; a log says it ended
    try:
        for row0 in range(0, height, rows):
            n_rows = min(rows, height - row0)
            yield row0, n_rows
            bar.update(n_rows)
    finally:
        bar.close()
