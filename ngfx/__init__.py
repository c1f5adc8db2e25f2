"""ngfx: neural graphics toolkit.

Subpackages, imported one way only: ``encodings`` (base) <- ``render`` <- ``nelf``;
``ngpc_sim`` reads traces and never imports ``render`` (except its trace capture).
"""

import os
import sys

__version__ = "0.1.0"

# In a log file (stderr not a terminal) every tqdm bar of the process redraws at most every 10 s rather than
# per step (tqdm reads TQDM_* defaults when it is imported; a user's own setting wins). ngfx's own bars
# (ngfx.progress.progress_bar) also write each redraw as a line of its own.
if sys.stderr is not None and not sys.stderr.isatty():
    os.environ.setdefault("TQDM_MININTERVAL", "10")
